"""The base every generative LightningModule shares: ``sample()``, prediction, exact resume, one-call loading."""

from __future__ import annotations

import importlib
import inspect
import math
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_gen.checks import value_checks
from lightning_gen.modules.compile import CompileOption, compile_nets, compile_options
from lightning_gen.modules.finite import FiniteLossGuard, NonFiniteLoss, reads_for_free
from lightning_gen.modules.sharding import (average_replicated_gradients, clip_mixed_gradients_,
                                            data_parallel_mesh, shard_nets)
from lightning_gen.schedulers import fit_schedule_to_run

__all__ = [
    "GenerativeModule", "SingleObjectiveModule", "NonFiniteLossError", "batch_data", "eval_mode", "evaluation_generator",
    "import_checkpoint_classes", "load_model", "read_checkpoint", "reject_unexpected_arguments", "trainer_settings",
    "TRAINER_SETTINGS_KEY",
]

_RNG_KEY = "lightning_gen_rng_states"
_RANK_BUFFERS_KEY = "lightning_gen_rank_buffers"
TRAINER_SETTINGS_KEY = "lightning_gen_trainer_settings"


def world_size() -> int:
    """The number of processes in the default process group (1 when none is initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_over_ranks(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (collective under DDP: every rank must call it)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _rank_stream_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of ``rank``'s noise stream in a multi-process fit started (or, on another world size, resumed) at
    ``step``: distinct for every rank and step, and the plain rank offset for a fresh run."""
    return (seed + 1_000_003 * rank + 7_919 * step) % 2**63


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def trainer_settings(trainer: L.Trainer) -> dict[str, Any]:
    """The trainer options that change what a training step does, as checkpoints record them (so that resuming with
    other values can say so): gradient accumulation and clipping, and precision."""
    algorithm = trainer.gradient_clip_algorithm
    return {
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": None if algorithm is None else str(getattr(algorithm, "value", algorithm)),
        "precision": str(trainer.precision),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class NonFiniteLossError(FloatingPointError, RuntimeError):
    """Raised on every rank when a training loss became NaN or infinite; no optimizer stepped on it or after it.

    Found without waiting for the device (:mod:`lightning_gen.modules.finite`): raised at once on a batch that logs
    or starts an epoch, else at the next such batch, at the end of the epoch or of training, or before a checkpoint
    is written, whichever comes first; the message names the step whose loss was non-finite.

    A :class:`FloatingPointError` (what the likelihood families raised before) and a :class:`RuntimeError` (what
    the adversarial ones raised), so existing ``except`` clauses of either kind keep working.
    """


def reject_unexpected_arguments(owner: object, condition: dict[str, Any], hint: str = "") -> None:
    """Raise ``TypeError`` naming ``condition``'s keys when a ``sample()`` got arguments it does not take."""
    if condition:
        name = owner if isinstance(owner, str) else type(owner).__name__
        raise TypeError(f"{name}.sample() got unexpected arguments {sorted(condition)}{f'; {hint}' if hint else ''}")


def evaluation_generator(batch_idx: int, seed: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and the batch index: evaluation draws that never touch the global RNG,
    so validating neither changes the training run nor depends on when it happens."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(batch_idx))


class GenerativeModule(L.LightningModule):
    """Base class of every generative model: implement ``sample``; prediction, exact resume and loading come free.

    Checkpoints hold each rank's random-number state, so a run resumed from a checkpoint draws the same noise
    and data order as the uninterrupted run would have. ``translates_inputs``: ``predict_step`` maps the data
    module's inputs (image-to-image models) instead of drawing one sample per index, so ``predict`` needs their
    ``predict_dataloader``.
    """

    translates_inputs: bool = False

    progress_bar_keys: tuple[str, ...] = ()  # logged training values that :meth:`log_training` shows on the bar
    compile_options: Optional[dict[str, Any]] = None  # torch.compile arguments for nets_to_compile() (None: eager)

    def __init__(self) -> None:
        super().__init__()
        self._rng_restored = self._rng_remapped = False
        # set by sharded training (SingleObjectiveModule.configure_model): the parameters left whole on every rank
        self._replicated_params: Optional[list[torch.nn.Parameter]] = None
        self._finite_guard = FiniteLossGuard(self._raise_non_finite)
        self._sync_free_batch = False  # in a training batch that neither starts an epoch nor logs
        self._logging_batch = False
        self._epoch_starting = True

    def nets_to_compile(self) -> list[torch.nn.Module]:
        """The nets the ``compile`` option compiles (each family's base names its trained nets)."""
        return []

    def configure_model(self) -> None:
        """Compile :meth:`nets_to_compile` in place when ``compile`` is on (once; see :mod:`lightning_gen.modules.compile`).

        Subclasses that override this hook must call ``super().configure_model()``.
        """
        compile_nets(self.nets_to_compile(), self.compile_options)

    @property
    def samples_collectively(self) -> bool:
        """Whether :meth:`sample` is collective: under sharded training each net gathers its parameters when it
        is called, so every rank must sample together (a callback that draws pictures on rank 0 draws on all)."""
        return self._replicated_params is not None

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, **condition: Any) -> Tensor:
        """Draw ``num_samples`` samples of the data's shape; a seeded ``generator`` makes them reproducible."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(num_samples, generator=None)")

    def log_training(self, logs: dict[str, Any], batch_size: int) -> None:
        """Log a training batch's values; those named in ``progress_bar_keys`` also go on the progress bar.

        The values are copied to the host in one transfer (the logging batch's one wait for the device): Lightning
        reads the progress-bar values on the host after every batch, which would wait for the device at every batch
        if they stayed there.
        """
        logs = _on_host(logs)
        bar = {k: v for k, v in logs.items() if k in self.progress_bar_keys}
        if bar:
            self.log_dict(bar, prog_bar=True, batch_size=batch_size)
        rest = {k: v for k, v in logs.items() if k not in bar}
        if rest:
            self.log_dict(rest, batch_size=batch_size)

    def should_log(self, batch_idx: int) -> bool:
        """Whether training batch ``batch_idx`` logs its values: the batches on which Lightning writes step values to
        the loggers (every ``trainer.log_every_n_steps`` steps; none when it is 0).

        Lightning's per-call logging costs about 1 ms per key on a CPU, as much as a toy training step, and logging
        copies the values to the host (a wait for the device), so the other batches log nothing.
        """
        return self.trainer.log_every_n_steps > 0 and self.trainer._logger_connector.should_update_logs

    @property
    def synchronous_checks(self) -> bool:
        """Whether checks that wait for the device run now: value checks (label, timestep and data ranges; see
        :mod:`lightning_gen.checks`) and the finite-loss check at once. Always, except in the training batches that
        neither start an epoch nor log (:meth:`should_log`), whose steps never wait for the device."""
        return not self._sync_free_batch

    @contextmanager
    def deferred_value_checks(self) -> Iterator[None]:
        """Around a training step's computation: in a batch that neither starts an epoch nor logs, turn off the
        value checks that wait for the device (elsewhere they stay as they are)."""
        if self._sync_free_batch:
            with value_checks(False):
                yield
        else:
            yield

    def watch_loss(self, loss: Tensor, info: Any) -> None:
        """Record a training loss for the finite-loss check (``info`` names it in the error): checked at once where
        :attr:`synchronous_checks` or on a CPU (where reading it waits for nothing), else on the device, the steps
        after a non-finite loss becoming no-ops and the error raised at the next batch that logs or starts an epoch,
        the epoch's end, the end of training, or before the next checkpoint (see :mod:`lightning_gen.modules.finite`)."""
        if FiniteLossGuard.checks_at_once(loss.device):
            self._finite_guard.check_now(loss, info)
            return
        self._finite_guard.record(loss, info)
        if self.synchronous_checks or reads_for_free(loss.device):
            self._finite_guard.check()

    def check_non_finite(self) -> None:
        """Wait for the device and raise :class:`NonFiniteLossError` if a training loss recorded since the last check
        was NaN or infinite (collective under DDP)."""
        self._finite_guard.check()

    def non_finite_error(self, found: NonFiniteLoss) -> NonFiniteLossError:
        """The error for the first non-finite training loss; families word it with their own advice."""
        return NonFiniteLossError(
            f"{type(self).__name__}: a training loss became {found.value} ({found.info}); no optimizer stepped on it "
            f"or after it.{self._checkpoint_hint()}"
        )

    def _raise_non_finite(self, found: NonFiniteLoss) -> None:
        raise self.non_finite_error(found)

    def save_init_hyperparameters(
        self, objects: Sequence[str] = (), pinned: Sequence[str] = (), frame: Optional[Any] = None
    ) -> None:
        """Save the caller's ``__init__`` arguments as hyperparameters, the one rule for every family.

        ``objects`` (nets, losses, optimizer and scheduler callables) are saved only when the CLI built them from
        config, so :func:`load_model` can rebuild them; from Python they are left out (pass them again to
        ``load_from_checkpoint``). ``pinned`` arguments, fixed by a named subclass, are never saved.
        """
        from_cli = _given_hyperparameters.get() is not None
        ignore = [*pinned, *([] if from_cli else objects)]
        if frame is None:
            current = inspect.currentframe()
            assert current is not None and current.f_back is not None
            frame = current.f_back
        self.save_hyperparameters(ignore=ignore, frame=frame)

    def rank_local_buffers(self) -> dict[str, Tensor]:
        """The state-dict entries each rank fills on its own (none here; GAN image pools, RBM persistent chains):
        DDP leaves them alone, and checkpoints store every rank's copy and give each rank its own back on resume
        (the state dict itself holds rank 0's)."""
        return {}

    def setup(self, stage: str) -> None:
        """Keep :meth:`rank_local_buffers` out of DDP's broadcasts (it would overwrite every rank's with rank 0's when
        it wraps the module and before each forward)."""
        if self._trainer is None:
            return
        local = self.rank_local_buffers()
        if local:
            ignored = set(getattr(self, "_ddp_params_and_buffers_to_ignore", ()))
            self._ddp_params_and_buffers_to_ignore = sorted(ignored | set(local))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Draw one sample per element of the batch (the data module's ``predict_dataloader`` yields indices)."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.sample(len(first))

    # -- exact resume -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every rank's RNG state (collective under DDP: all ranks take part in checkpointing) and the trainer's
        :func:`trainer_settings`; first raise :class:`NonFiniteLossError` for a non-finite training loss not yet
        reported, so no checkpoint is written after one."""
        self.check_non_finite()
        checkpoint[_RNG_KEY] = gather_over_ranks(_rng_state())
        if self._trainer is not None:
            checkpoint[TRAINER_SETTINGS_KEY] = trainer_settings(self.trainer)
        local = self.rank_local_buffers()
        if local and world_size() > 1:  # every rank has the same buffer names, so all take part in the gather
            checkpoint[_RANK_BUFFERS_KEY] = gather_over_ranks({k: v.detach().cpu().clone() for k, v in local.items()})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """When resuming a fit, restore this rank's RNG state (before the data loaders draw their order).

        A checkpoint written at an epoch end that Lightning considers unfinished (a run stopped by ``max_steps``, or a
        periodic ``ModelCheckpoint`` in ``on_train_epoch_end``) makes Lightning replay that epoch's end: it draws a
        new loader iterator and one more batch. :meth:`on_train_batch_start` skips that batch, and the state is
        restored again when the next epoch starts, so its shuffle and noise match the uninterrupted run.
        """
        states = checkpoint.get(_RNG_KEY)
        self._rng_restored = self._rng_remapped = False
        self._rng_pending = None
        self._loaders_resume_exactly = False
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._resumed_after_batch = fit_loop.get("epoch_loop.batch_progress", {}).get("current", {}).get("completed")
        loaders = fit_loop.get("state_dict", {}).get("combined_loader") or []
        # whether the training loaders saved a position they replay exactly (lightning_gen.data.ResumableDataLoader)
        self._loaders_resume_exactly = bool(loaders) and all(state.get("exact", False) for state in loaders)
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"  # no trainer: load_from_checkpoint
        buffers = checkpoint.get(_RANK_BUFFERS_KEY)
        if buffers and fitting and len(buffers) == self.trainer.world_size and "state_dict" in checkpoint:
            # this hook runs before Lightning loads the state dict: each rank gets its own buffers back (and DDP
            # leaves them alone, see setup)
            checkpoint["state_dict"].update(buffers[self.global_rank])
        if not fitting or not states:
            return
        if len(states) == self.trainer.world_size:
            _set_rng_state(states[self.global_rank])
            self._rng_pending = states[self.global_rank]
            self._rng_restored = True
        else:
            self._rng_remapped = True
            rank_zero_warn(
                f"Resuming a checkpoint written by {len(states)} process(es) on {self.trainer.world_size}: its per-rank "
                "random states do not map onto these ranks, so each rank starts a fresh noise stream (from the seed, "
                "the rank and the step reached) and the run will not repeat the uninterrupted one. Weights, "
                "optimizers and counters are restored."
            )

    def on_train_epoch_start(self) -> None:
        """After a replayed epoch end (see :meth:`on_load_checkpoint`), restore the resumed RNG state once more; give
        the training samplers the epoch being trained.

        Lightning sets the samplers' epoch (``set_epoch``: a ``DistributedSampler``'s order, an unpaired pairing) from
        its count of processed epochs, which in a run limited by ``max_steps`` runs one ahead of ``current_epoch`` for
        the rest of the fit after a resume from a checkpoint written in ``on_train_epoch_end`` (an epoch-end save, a
        ``max_steps`` stop). The epoch's loader iterator is created after this hook, so setting ``current_epoch`` here
        gives every epoch the order of the uninterrupted run (in an uninterrupted run the two counts agree).
        Subclasses that override this hook must call ``super().on_train_epoch_start()``.
        """
        pending = getattr(self, "_rng_pending", None)
        if pending is not None and getattr(self, "_replayed_epoch_end", False):
            _set_rng_state(pending)
            self._rng_pending = None
        self._replayed_epoch_end = False
        if self._trainer is not None:
            combined = getattr(self.trainer.fit_loop, "_combined_loader", None)
            for loader in getattr(combined, "flattened", None) or []:
                _set_sampler_epoch(loader, self.trainer.current_epoch)
        self._epoch_starting = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        """Skip the batch Lightning runs past an epoch's end when resuming from a checkpoint written at that end.

        Lightning 2.x restarts such an epoch, finds validation "not yet run" and trains one more batch (from a fresh
        iterator) before ending it; returning -1 ends the epoch instead, as the uninterrupted run did. Subclasses that
        override this hook must return ``super().on_train_batch_start(batch, batch_idx)`` when it is -1.

        Also decides whether the batch logs (:meth:`should_log`) and whether its step may wait for the device
        (:attr:`synchronous_checks`: only when it logs or starts the epoch).
        """
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.ready > self.trainer.num_training_batches:
            self._replayed_epoch_end = True
            return -1
        # batches of the epoch completed before the one in progress at the save: 0 for a save after its first batch
        done = getattr(self, "_resumed_after_batch", None)
        pending = getattr(self, "_rng_pending", None)
        mid_epoch = pending is not None and done is not None and done < self.trainer.num_training_batches
        if mid_epoch and self._loaders_resume_exactly:
            # mid-epoch resume with loaders that continue the epoch: this batch is the one the uninterrupted run would
            # have drawn next, so it gets the saved random state (the new loader iterator drew from it meanwhile)
            _set_rng_state(pending)
        elif mid_epoch:
            # the first batch after resuming from a checkpoint written in the middle of an epoch
            rank_zero_warn(
                f"Resumed from a checkpoint written in the middle of an epoch (after batch {done} of "
                f"{self.trainer.num_training_batches}): the data loaders are not resumable, so the rest of that epoch "
                "is not replayed as it would have been and the run will not repeat the uninterrupted one exactly "
                "(training itself is unaffected). Checkpoints written at epoch ends resume exactly."
            )
        self._rng_pending = None  # training has started from the restored state; nothing to redo
        self._logging_batch = self.should_log(batch_idx)
        self._sync_free_batch = not (self._epoch_starting or self._logging_batch)
        self._epoch_starting = False
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """End the batch's exemption from the checks that wait for the device."""
        self._sync_free_batch = self._logging_batch = False

    def on_train_epoch_end(self) -> None:
        """Raise :class:`NonFiniteLossError` for a non-finite training loss of the epoch not yet reported (before the
        epoch-end checkpoint). Subclasses that override this hook must call ``super().on_train_epoch_end()``."""
        self._sync_free_batch = False
        self.check_non_finite()

    def on_train_end(self) -> None:
        """Raise :class:`NonFiniteLossError` for a non-finite training loss not yet reported."""
        self._sync_free_batch = False
        self.check_non_finite()

    def on_train_start(self) -> None:
        """On a fresh multi-process fit, give each rank its own noise stream; start the finite-loss check afresh."""
        self._finite_guard.reset()
        self._sync_free_batch = self._logging_batch = False
        self._epoch_starting = True
        if (self.trainer.world_size > 1 and not self._rng_restored) or self._rng_remapped:
            # Lightning seeds every rank alike; without an offset all ranks would draw the same noise. After a resume
            # on another number of processes the step reached is mixed in too, so no rank replays the noise that
            # the run drew from its start.
            torch.manual_seed(_rank_stream_seed(torch.initial_seed(), self.global_rank,
                                               self.trainer.global_step if self._rng_remapped else 0))
        self._rng_restored = self._rng_remapped = False

    def _checkpoint_hint(self) -> str:
        """A sentence for error messages naming where the last good checkpoint is ("" before the first one)."""
        # name the checkpoint folder only when it holds a checkpoint: before the first save there is nothing to resume
        callback = self.trainer.checkpoint_callback if self._trainer is not None else None
        dirpath = getattr(callback, "dirpath", None)
        if not dirpath or not Path(dirpath).is_dir() or not any(Path(dirpath).glob("*.ckpt")):
            return ""
        return (f" The last good checkpoint is in {str(dirpath)!r}: resume from it with `ckpt_path` after changing "
                "the settings.")

    # -- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint_path: Union[str, Path], map_location: Any = "cpu", **kwargs: Any) -> "GenerativeModule":
        """Load a trained model of any family from its checkpoint in one call (see :func:`load_model`)."""
        return load_model(checkpoint_path, map_location=map_location, expected=cls, **kwargs)


@contextmanager
def eval_mode(*nets: torch.nn.Module) -> Iterator[None]:
    """Put ``nets`` in eval mode for the block, then restore each one's previous mode."""
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)


def _on_host(logs: dict[str, Any]) -> dict[str, Any]:
    """``logs`` with every number and one-element tensor as a host (CPU) tensor of its dtype (floats as the default
    dtype), moved in one transfer."""
    tensors = {k: v for k, v in logs.items() if isinstance(v, Tensor) and v.numel() == 1}
    out = dict(logs)
    if tensors:
        host = torch.cat([v.detach().reshape(1).to(torch.float64) for v in tensors.values()]).cpu()
        for (key, value), number in zip(tensors.items(), host):
            out[key] = number.to(value.dtype)
    for key, value in logs.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = torch.tensor(float(value), dtype=torch.get_default_dtype())
    return out


def batch_data(batch: Any) -> Tensor:
    """The data tensor of a batch: the batch itself, or the first item of a ``(data, labels)`` batch."""
    data = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not isinstance(data, Tensor):
        raise TypeError(f"expected a batch of tensors or (tensor, labels), got {type(data).__name__}")
    return data


class SingleObjectiveModule(GenerativeModule):
    """Base of the families trained by one loss and one optimizer with Lightning's automatic optimization
    (autoencoders, VAE, RealNVP, DDPM): it saves hyperparameters, builds the optimizer and an optional
    per-step learning-rate scheduler, and stops with a clear error on a non-finite loss.

    Subclasses call :meth:`_init_objective` from ``__init__`` and implement ``training_loss(data) -> (loss, logs)``.
    The finite-loss check never makes a step wait for the device (see :meth:`watch_loss`); ``detect_non_finite=False``
    (a constructor argument of every family, so settable from YAML; or set on the class or instance) turns it off. The
    terms are logged on the batches :meth:`should_log` names; those named in ``progress_bar_keys`` (``train/loss``)
    also go on the progress bar.

    Mixed precision (``Trainer(precision="bf16-mixed" | "16-mixed")``): Lightning runs ``training_step`` under
    ``torch.autocast``; subclasses cast their nets' outputs to float32 (:func:`lightning_gen.precision.full_precision`)
    before any loss, log-likelihood or log-determinant, so the loss is float32 and ``sample()`` returns float32.
    """

    detect_non_finite: bool = True
    progress_bar_keys: tuple[str, ...] = ("train/loss",)
    # whether ``ModelParallelStrategy`` may shard the module's ``sharding_units`` (lightning_gen.modules.sharding:
    # submodules used only through ``forward``); families that may not are refused with ``sharding_refusal``
    supports_sharding: bool = False
    sharding_refusal: str = "its nets are not known to run only through their forward"

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``, shard each net over the data-parallel ranks (FSDP2 ``fully_shard``; see
        :mod:`lightning_gen.modules.sharding`) once; then compile (see :meth:`GenerativeModule.configure_model`)."""
        mesh = self.device_mesh
        if mesh is not None and self._replicated_params is None:
            if not self.supports_sharding:
                raise NotImplementedError(
                    f"{type(self).__name__} cannot be sharded (ModelParallelStrategy / FSDP): {self.sharding_refusal}. "
                    "Use `strategy: ddp` for several devices or nodes; see docs/scaling.md."
                )
            self._replicated_params = shard_nets(self, data_parallel_mesh(mesh, type(self).__name__),
                                                 self.sharding_units())
        super().configure_model()

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Optional[Union[int, float]] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        """Clip as Lightning does; with sharded nets, over the sharded and the whole gradients together (see
        :func:`~lightning_gen.modules.sharding.clip_mixed_gradients_`)."""
        if self._replicated_params is None or not gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        clip_mixed_gradients_([p for group in optimizer.param_groups for p in group["params"]],
                              float(gradient_clip_val), gradient_clip_algorithm or "norm")

    def sharding_units(self) -> Optional[list[torch.nn.Module]]:
        """The submodules that sharded training shards, each used only through its ``forward`` (``None``: every
        net of the module, see :func:`~lightning_gen.modules.sharding.shard_nets`); the rest stays whole."""
        return None

    def _init_objective(
        self,
        nets: Sequence[str],
        optimizer: Optional[OptimizerCallable],
        scheduler: Optional[LRSchedulerCallable],
        default_lr: float,
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        """Save the caller's ``__init__`` arguments as hyperparameters (the nets only when the CLI built them, as
        config), store the optimizer/scheduler factories (``Adam(default_lr)`` when no optimizer is given),
        whether to check every training loss for NaN/inf, and whether to compile the ``nets`` (attribute names)."""
        frame = inspect.currentframe()
        assert frame is not None and frame.f_back is not None
        self.save_init_hyperparameters([*nets, "optimizer", "scheduler"], frame=frame.f_back)
        self.detect_non_finite = bool(detect_non_finite)
        self.compile_options = compile_options(compile)
        self._net_names = tuple(nets)
        self._optimizer_factory: Callable[[Iterable[Any]], torch.optim.Optimizer] = (
            optimizer if optimizer is not None else partial(torch.optim.Adam, lr=default_lr)
        )
        self._scheduler_factory = scheduler

    def nets_to_compile(self) -> list[torch.nn.Module]:
        """The nets named in :meth:`_init_objective` (encoder and decoder, flow, or denoiser)."""
        return [getattr(self, name) for name in getattr(self, "_net_names", ())]

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The scalar loss to minimize on a batch of data, and the terms to log (without the ``train/`` prefix)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss(data)")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Minimize :meth:`training_loss`; its terms are logged as ``train/<name>`` on logging batches."""
        data = batch_data(batch)
        with self.deferred_value_checks():
            loss, logs = self.training_loss(data)
        if self.detect_non_finite:
            self.watch_loss(loss, (self.global_step, batch_idx))
        if self._logging_batch:
            self.log_training({f"train/{k}": v for k, v in logs.items()}, data.shape[0])
        return loss

    def non_finite_error(self, found: NonFiniteLoss) -> NonFiniteLossError:
        """The error naming the step and batch of the first non-finite training loss, with advice."""
        step, batch_idx = found.info
        later = "" if self._trainer is None or step == self.global_step else (
            f" or on any later loss (found at step {self.global_step}: the losses are checked on the device and read "
            "at logging batches, epoch ends and checkpoints)")
        return NonFiniteLossError(
            f"{type(self).__name__}: the training loss became {found.value} at step {step} (batch {batch_idx}); no "
            f"optimizer stepped on it{later}; lower the learning rate or enable gradient clipping "
            f"(`--trainer.gradient_clip_val 1.0`, i.e. `gradient_clip_val` under `trainer:`), and check the data "
            f"for NaN/inf.{self._checkpoint_hint()} (`detect_non_finite=False` turns this check off.)"
        )

    def _loss_scaled(self) -> bool:
        """Whether a ``GradScaler`` (``16-mixed``) steps the optimizer."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler is not None and scaler.is_enabled()

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step the optimizer (the closure runs the training step and the backward inside); after a non-finite
        training loss the step leaves the parameters and the optimizer's state exactly as they were, without
        waiting for the device (:mod:`lightning_gen.modules.finite`). Subclasses that override this hook must call
        ``super().optimizer_step(...)``."""
        if not self.detect_non_finite:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return
        with self._finite_guard.step(getattr(optimizer, "optimizer", optimizer), scaled=self._loss_scaled()):
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def on_after_backward(self) -> None:
        """Under a ``GradScaler``, make it skip the step after a non-finite loss (it checks the gradients before
        unscaling them, so the flag is folded into one gradient here)."""
        super().on_after_backward()
        if self.detect_non_finite and self._loss_scaled():
            self._finite_guard.poison(self.parameters())

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Bring the finite-loss flag up to date before the update (a fused optimizer reads it in its kernel).
        Subclasses that override this hook must call ``super().on_before_optimizer_step(optimizer)``."""
        super().on_before_optimizer_step(optimizer)
        if self._replicated_params:  # sharded nets: the module's own parameters are whole copies
            average_replicated_gradients(self._replicated_params)
        if self.detect_non_finite and not self._loss_scaled():
            self._finite_guard.update_skip()

    def steps_in_run(self) -> int:
        """Optimizer steps over the whole fit: Lightning's ``estimated_stepping_batches`` (``max_steps``, or
        ``max_epochs`` x batches per epoch / ``accumulate_grad_batches``, whichever ends the run first)."""
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__}.steps_in_run needs the trainer: call it while fitting")
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ValueError(
                f"the run has no set length (max_steps={self.trainer.max_steps}, max_epochs={self.trainer.max_epochs}): "
                "set `--trainer.max_steps` or `--trainer.max_epochs`, or give the schedule its length"
            )
        return int(total)

    def on_train_start(self) -> None:
        """Also give a schedule that follows the run (:mod:`lightning_gen.schedulers`) its length,
        :meth:`steps_in_run`, once the data is set up and any checkpoint restored."""
        super().on_train_start()
        if self._scheduler_factory is not None:
            fit_schedule_to_run(self.lr_schedulers(), self.steps_in_run, f"{type(self).__name__}'s scheduler")

    def configure_optimizers(self) -> Any:
        """One optimizer over all trainable parameters; the scheduler (if any) steps after every optimizer step."""
        optimizer = self._optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self._scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self._scheduler_factory(optimizer), "interval": "step"}}


def is_sharded_checkpoint(path: Union[str, Path]) -> bool:
    """Whether ``path`` is the folder of per-rank shards that sharded training (``ModelParallelStrategy``, FSDP)
    writes by default (``torch.distributed.checkpoint`` files and Lightning's ``meta.pt``)."""
    path = Path(path)
    return path.is_dir() and (path / "meta.pt").is_file() and any(path.glob("*.distcp"))


def _read_sharded_checkpoint(path: Path) -> dict[str, Any]:
    """A sharded checkpoint folder's contents with the model's full state dict gathered from the shards (in this
    process, no process group); the optimizer shards are left out, so it loads weights, not a resumable run."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(path, Path(tmp) / "full.pt")
        full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = full["state_dict"]
    return checkpoint


def read_checkpoint(checkpoint_path: Union[str, Path]) -> dict[str, Any]:
    """The checkpoint's contents (tensors on the CPU); a missing, truncated or foreign file raises an error naming it.
    A sharded checkpoint folder (:func:`is_sharded_checkpoint`) is read with its model weights gathered."""
    path = Path(checkpoint_path)
    if is_sharded_checkpoint(path):
        return _read_sharded_checkpoint(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder without a sharded checkpoint in it (no meta.pt and "
                                "*.distcp files): pass the path of a .ckpt file or of a sharded checkpoint's folder.")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... depending on the damage
        text = str(err).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
        raise RuntimeError(
            f"Cannot read the checkpoint {str(path)!r} ({reason}). The file is truncated (e.g. a run killed while "
            "saving it) or not a Lightning checkpoint: use another one, e.g. an earlier checkpoint in the same folder."
        ) from err
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f"{str(path)!r} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__}).")
    return checkpoint


def import_checkpoint_classes(hparams: dict[str, Any], checkpoint_path: Union[str, Path]) -> Optional[type]:
    """Import every class a checkpoint's hyperparameters name (``_class_path`` and nested ``class_path``) and return
    the model class (``None`` when none is recorded); a class that cannot be imported raises an ``ImportError``
    naming the file, the setting, the class and what to do."""

    def load(class_path: str, where: str) -> Any:
        module_name, _, class_name = class_path.rpartition(".")
        top = module_name.split(".")[0]
        fix = (f"install the package that provides it, or run from the folder that holds {top}.py or {top}/ (or add "
               "that folder to PYTHONPATH)" if module_name != "__main__" else
               "it was defined in a script: move it into a module you can import, or define it before loading")
        start = f"The checkpoint {str(checkpoint_path)!r} names the class {class_path!r} (for {where}), but"
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ModuleNotFoundError(f"{start} its module cannot be imported ({err}): {fix}.", name=err.name) from None
        if not hasattr(module, class_name):
            raise ImportError(f"{start} module {module_name!r} has no {class_name!r}: {fix}.", name=module_name)
        return getattr(module, class_name)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("class_path"), str):
                load(node["class_path"], where)
            for key, value in node.items():
                walk(value, f"{where}.{key}" if key not in ("init_args", "dict_kwargs") else where)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item, where)

    for key, value in hparams.items():
        walk(value, f"model.{key}")
    class_path = hparams.get("_class_path")
    return load(class_path, "model") if isinstance(class_path, str) else None


def load_model(
    checkpoint_path: Union[str, Path],
    map_location: Any = "cpu",
    expected: type[GenerativeModule] = GenerativeModule,
    **kwargs: Any,
) -> GenerativeModule:
    """Rebuild a trained generative module (nets included) from a checkpoint written by ``lightning-gen fit``.

    Checkpoints of modules built in Python (not by the CLI) do not record how to build their nets: load those with
    ``TheClass.load_from_checkpoint(path, generator=..., discriminator=...)``. Errors name the file, and a class that
    cannot be imported is named with its module.
    """
    path = Path(checkpoint_path)
    hparams = read_checkpoint(path).get("hyper_parameters", {})
    model_cls = import_checkpoint_classes(hparams, path)
    if model_cls is None:
        if expected is GenerativeModule:
            raise ValueError(
                f"{str(path)!r} does not record its model class (it was not written by `lightning-gen fit`). Load it "
                "with `TheModuleClass.load_from_checkpoint(path, generator=..., discriminator=...)`, passing the nets."
            )
        model_cls = expected
    elif not (isinstance(model_cls, type) and issubclass(model_cls, expected)):
        raise TypeError(f"{str(path)!r} holds a {hparams['_class_path']}, which is not a {expected.__name__}.")
    try:
        if is_sharded_checkpoint(path):  # Lightning reads single files: hand it the gathered weights as one
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                torch.save(read_checkpoint(path), Path(tmp) / "gathered.ckpt")
                return model_cls.load_from_checkpoint(Path(tmp) / "gathered.ckpt", map_location=map_location,
                                                      **kwargs)
        return model_cls.load_from_checkpoint(path, map_location=map_location, **kwargs)
    except Exception as err:
        message = f"Loading {model_cls.__name__} from {str(path)!r} failed: {err}"
        try:  # keep the error's type (callers may catch TypeError, RuntimeError, ...), now naming the file
            named = type(err)(message)
        except Exception:
            named = RuntimeError(message)
        raise named from err
