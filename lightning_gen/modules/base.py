"""The base every generative LightningModule shares: ``sample()``, prediction, exact resume, one-call loading."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["GenerativeModule", "load_model"]

_RNG_KEY = "lightning_gen_rng_states"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class GenerativeModule(L.LightningModule):
    """Base class of every generative model: implement ``sample``; prediction, exact resume and loading come free.

    Checkpoints hold each rank's random-number state, so a run resumed from a checkpoint draws the same noise
    and data order as the uninterrupted run would have.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rng_restored = False

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, **condition: Any) -> Tensor:
        """Draw ``num_samples`` samples of the data's shape; a seeded ``generator`` makes them reproducible."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(num_samples, generator=None)")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Draw one sample per element of the batch (the data module's ``predict_dataloader`` yields indices)."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.sample(len(first))

    # -- exact resume -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every rank's RNG state (collective under DDP: all ranks take part in checkpointing)."""
        state = _rng_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint[_RNG_KEY] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """When resuming a fit, restore this rank's RNG state (before the data loaders draw their order)."""
        states = checkpoint.get(_RNG_KEY)
        self._rng_restored = False
        if self._trainer is None or self.trainer.state.fn != "fit" or not states:
            return
        if len(states) == self.trainer.world_size:
            _set_rng_state(states[self.global_rank])
            self._rng_restored = True

    def on_train_start(self) -> None:
        """On a fresh multi-process fit, give each rank its own noise stream."""
        if self.trainer.world_size > 1 and not self._rng_restored:
            # Lightning seeds every rank alike; without an offset all ranks would draw the same noise.
            torch.manual_seed((torch.initial_seed() + 1_000_003 * self.global_rank) % 2**63)
        self._rng_restored = False

    # -- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint_path: Union[str, Path], map_location: Any = "cpu", **kwargs: Any) -> "GenerativeModule":
        """Load a trained model of any family from its checkpoint in one call (see :func:`load_model`)."""
        return load_model(checkpoint_path, map_location=map_location, expected=cls, **kwargs)


def load_model(
    checkpoint_path: Union[str, Path],
    map_location: Any = "cpu",
    expected: type[GenerativeModule] = GenerativeModule,
    **kwargs: Any,
) -> GenerativeModule:
    """Rebuild a trained generative module (nets included) from a checkpoint written by ``lightning-gen fit``.

    Checkpoints of modules built in Python (not by the CLI) do not record how to build their nets: load those with
    ``TheClass.load_from_checkpoint(path, generator=..., discriminator=...)``.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    class_path = hparams.get("_class_path")
    if class_path is None:
        if expected is GenerativeModule:
            raise ValueError(
                f"{str(path)!r} does not record its model class (it was not written by `lightning-gen fit`). Load it "
                "with `TheModuleClass.load_from_checkpoint(path, generator=..., discriminator=...)`, passing the nets."
            )
        return expected.load_from_checkpoint(path, map_location=map_location, **kwargs)
    module_name, _, class_name = class_path.rpartition(".")
    model_cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(model_cls, type) and issubclass(model_cls, expected)):
        raise TypeError(f"{str(path)!r} holds a {class_path}, which is not a {expected.__name__}.")
    return model_cls.load_from_checkpoint(path, map_location=map_location, **kwargs)
