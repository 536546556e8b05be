"""What the two-process DDP test scripts share: the CPU trainer, the initial and final states they save, the entry.

A script imports it as ``from ddp_common import ...`` (its own folder is on ``sys.path`` when it runs as a script, and
the tests that import a script put that folder there).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import lightning as L
import torch

__all__ = ["SaveFinalState", "ddp_trainer", "run", "save_initial_state", "state_copy"]


def ddp_trainer(out: Path, callbacks: Iterable[L.Callback] = (), **overrides: Any) -> L.Trainer:
    """A quiet 2-process CPU DDP trainer: no logger, checkpoints, progress bar, summary, validation or sanity check;
    ``overrides`` replace or add Trainer arguments (``max_steps``, ``limit_val_batches``, ``precision``, ...)."""
    settings: dict[str, Any] = dict(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=list(callbacks), default_root_dir=str(out),
    )
    settings.update(overrides)
    return L.Trainer(**settings)


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_initial_state(model: torch.nn.Module, out: Path) -> None:
    """Rank 0 (the launching process, before DDP starts rank 1) saves the model's initial state as ``init.pt``."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        torch.save(state_copy(model), out / "init.pt")


class SaveFinalState(L.Callback):
    """At the end of training each rank saves ``rank<r>.pt``: the ``state_dict``, ``global_step``, ``world_size``,
    the module attributes named in ``attributes`` (e.g. ``player_steps``) and what :meth:`extra` adds."""

    def __init__(self, out: Path, *attributes: str) -> None:
        self.out = out
        self.attributes = attributes

    def extra(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """More entries for the saved dict (none here; subclasses add theirs)."""
        return {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save this rank's final state."""
        info = {"state_dict": state_copy(pl_module), "global_step": trainer.global_step,
                "world_size": trainer.world_size}
        info.update({name: getattr(pl_module, name) for name in self.attributes})
        info.update(self.extra(trainer, pl_module))
        torch.save(info, self.out / f"rank{trainer.global_rank}.pt")


def run(main: Callable[..., None]) -> None:
    """The scripts' entry: ``main(Path(OUT_DIR), *more arguments)``, then destroy the process group, since gloo's
    worker threads can otherwise abort the interpreter's exit (SIGABRT)."""
    main(Path(sys.argv[1]), *sys.argv[2:])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
