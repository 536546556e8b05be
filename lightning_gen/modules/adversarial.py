"""The adversarial base: named players and the manual-optimization plumbing every game shares.

A game (:class:`~lightning_gen.modules.gan.GAN`, :class:`~lightning_gen.modules.image_to_image.Pix2Pix`,
:class:`~lightning_gen.modules.image_to_image.CycleGAN`, or your own) registers its players in ``__init__`` and
writes only its losses and the order of its steps::

    class MyGame(AdversarialModule):
        def __init__(self, generator, discriminator, **plumbing):
            super().__init__(**plumbing)
            self.generator, self.discriminator = generator, discriminator
            self.add_player("discriminator", [discriminator], partial(torch.optim.Adam, lr=2e-4))
            self.add_player("generator", [generator], partial(torch.optim.Adam, lr=2e-4), counts_global_step=True)

        def training_step(self, batch, batch_idx):
            ...
            self.player_backward("discriminator", loss_d)
            self.player_step("discriminator")
            with self.frozen("discriminator"):
                self.player_backward("generator", loss_g)
            self.player_step("generator")

Everything else lives here, once: backward outside DDP's reducer with per-player gradient averaging across ranks;
per-player gradient accumulation; one step routine per player (average -> unscale -> clip -> step -> zero_grad ->
scheduler -> EMA); freezing the other players; step counters that checkpoints keep; the finite-loss check; the log
cadence; and mixed precision done right for several optimizers.

Mixed precision. Under ``precision: bf16-mixed`` nothing needs scaling. Under ``16-mixed`` Lightning owns one
``GradScaler`` shared by all optimizers, updated after every step, and in manual optimization its
``clip_gradients`` clips the *scaled* gradients (Lightning issue #18089). Here each player gets its own
``GradScaler`` (configured like Lightning's), so one player's overflow skips only that player's step and backs off
only its scale. Its gradients are averaged across ranks first (an overflow on any rank is seen by all, so ranks
never diverge), unscaled, then clipped, then stepped. Skipped steps are counted and logged as
``train/skipped_steps/<player>``, and the scalers' states are saved in checkpoints.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy, ParallelStrategy, SingleDeviceStrategy
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from lightning_gen.modules.base import GenerativeModule, NonFiniteLossError, gather_over_ranks
from lightning_gen.modules.finite import NonFiniteLoss
from lightning_gen.modules.compile import CompileOption, compile_options
from lightning_gen.nets.ema import ExponentialMovingAverage
from lightning_gen.nets.image_pool import ImagePool
from lightning_gen.schedulers import fit_schedule_to_run, steps_in_run

__all__ = ["AdversarialModule", "Player", "frozen"]

_COUNTERS_KEY = "lightning_gen_counters"
_SCALERS_KEY = "lightning_gen_grad_scalers"
_GRADS_KEY = "lightning_gen_pending_grads"


@contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` for the nets' parameters (no wasted weight gradients), then restore each flag."""
    params = [p for net in nets for p in net.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@dataclass
class Player:
    """One optimizing party of a game: its nets, optimizer and scheduler factories, and an optional EMA.

    ``ema`` averages ``nets[0]`` after each of the player's steps. ``counts_global_step``: this player's steps are
    what ``trainer.global_step`` (so ``max_steps`` and checkpoint names) counts -- the generator, in every game here.
    """

    name: str
    nets: tuple[nn.Module, ...]
    optimizer: OptimizerCallable
    scheduler: Optional[LRSchedulerCallable] = None
    ema: Optional[ExponentialMovingAverage] = None
    counts_global_step: bool = False
    steps: int = field(default=0, init=False)
    micro_batches: int = field(default=0, init=False)  # backpropagated since the player's last step

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of all the player's nets, in a fixed order."""
        return [p for net in self.nets for p in net.parameters() if p.requires_grad]


class AdversarialModule(GenerativeModule):
    """Base of every adversarial game: named players trained with Lightning's manual optimization.

    Subclasses call ``super().__init__(...)`` with the plumbing arguments below, register their nets as attributes
    and their players with :meth:`add_player`, and write ``training_step`` as the game's order of
    :meth:`player_backward` / :meth:`player_step` calls (see the module docstring).

    Args:
        accumulate_grad_batches: micro-batches (calls of :meth:`player_backward`) accumulated into each step of
            each player; each loss is divided by it.
        gradient_clip_val: clip each player's gradients to this norm (or value) before its step, after unscaling
            under ``16-mixed`` (``None``: off).
        gradient_clip_algorithm: ``norm`` or ``value``.
        detect_non_finite: stop with :class:`NonFiniteLossError` on a NaN/inf loss; no optimizer steps on it or
            after it, and no training step waits for the device to find it (see :meth:`check_finite`).
        compile: compile the players' nets with ``torch.compile`` (``True``, or a dict of its arguments), once, in
            :meth:`configure_model` (see :mod:`lightning_gen.modules.compile`).

    ``progress_bar_keys``: the logged values :meth:`log_training` also shows on the progress bar.
    """

    progress_bar_keys: tuple[str, ...] = ("train/loss_gen", "train/loss_dis")

    def __init__(
        self,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: str = "norm",
        detect_non_finite: bool = True,
        compile: CompileOption = False,
    ) -> None:
        super().__init__()
        self.compile_options = compile_options(compile)
        if accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise ValueError(f"gradient_clip_val must be positive or null, got {gradient_clip_val}")
        self.automatic_optimization = False
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.detect_non_finite = bool(detect_non_finite)
        self.players: dict[str, Player] = {}
        self._scalers: dict[str, torch.amp.GradScaler] = {}
        self._scaler_states: dict[str, Any] = {}  # loaded before the scalers exist; applied when they do
        self._skipped: dict[str, Tensor] = {}
        self._stepping: Optional[Player] = None
        self._pending_grads: Optional[dict[str, list[Optional[Tensor]]]] = None  # restored at the next epoch start

    # -- players ------------------------------------------------------------------------------------------------
    def add_player(
        self,
        name: str,
        nets: Sequence[nn.Module],
        optimizer: OptimizerCallable,
        scheduler: Optional[LRSchedulerCallable] = None,
        ema: Optional[ExponentialMovingAverage] = None,
        counts_global_step: bool = False,
    ) -> Player:
        """Register a player; optimizers are built in registration order (the order of :meth:`optimizers`)."""
        if name in self.players:
            raise ValueError(f"{type(self).__name__} already has a player named {name!r}")
        if counts_global_step and any(p.counts_global_step for p in self.players.values()):
            raise ValueError("only one player's steps can count as trainer.global_step")
        if not nets:
            raise ValueError(f"player {name!r} needs at least one net")
        player = Player(name, tuple(nets), optimizer, scheduler, ema, counts_global_step)
        self.players[name] = player
        return player

    def nets_to_compile(self) -> list[nn.Module]:
        """Every player's nets (the ``compile`` option compiles them)."""
        return [net for player in self.players.values() for net in player.nets]

    @property
    def player_steps(self) -> dict[str, int]:
        """Optimizer steps taken so far by each player (skipped overflow steps included, as Lightning counts them)."""
        return {name: p.steps for name, p in self.players.items()}

    @property
    def generator_steps(self) -> int:
        """Steps of the player that counts ``trainer.global_step`` (equals ``trainer.global_step`` while fitting)."""
        return self.trainer.global_step if self._trainer is not None else 0

    def configure_optimizers(self) -> Any:
        """One optimizer per player (registration order); schedulers are stepped by :meth:`player_step`."""
        optimizers = [p.optimizer(p.parameters()) for p in self.players.values()]
        schedulers = [p.scheduler(o) for p, o in zip(self.players.values(), optimizers) if p.scheduler is not None]
        return optimizers, schedulers

    def optimizer_of(self, name: str) -> Any:
        """The (Lightning-wrapped) optimizer of player ``name``."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[list(self.players).index(name)]

    def scheduler_of(self, name: str) -> Optional[Any]:
        """The learning-rate scheduler of player ``name``, or ``None``."""
        if self.players[name].scheduler is None:
            return None
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        index = [n for n, p in self.players.items() if p.scheduler is not None].index(name)
        return schedulers[index]

    def steps_per_generator_step(self, name: str) -> int:
        """Steps player ``name`` takes per generator step: 1 here (GAN's discriminator: ``n_critic``).

        Games whose players step at other rates override it; schedules that follow the run
        (:mod:`lightning_gen.schedulers`) give the player ``max_steps`` times this many steps.
        """
        return 1

    def steps_in_run(self, name: str) -> int:
        """Steps player ``name`` takes over the whole fit: from the trainer's ``max_steps`` (generator steps) and
        ``max_epochs`` (each training batch being one micro-batch of the player that steps most often)."""
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__}.steps_in_run needs the trainer: call it while fitting")
        per_generator_step = {n: self.steps_per_generator_step(n) for n in self.players}
        return steps_in_run(
            self.trainer.max_steps, self.trainer.max_epochs, self.trainer.num_training_batches,
            batches_per_generator_step=self.accumulate_grad_batches * max(per_generator_step.values()),
            steps_per_generator_step=per_generator_step[name],
        )

    def on_train_start(self) -> None:
        """Also give each player's schedule that follows the run its length, :meth:`steps_in_run` (after the data
        is set up and any checkpoint restored, so an extended ``max_steps`` stretches a resumed schedule)."""
        super().on_train_start()
        for name, player in self.players.items():
            if player.scheduler is not None:
                fit_schedule_to_run(self.scheduler_of(name), partial(self.steps_in_run, name),
                                    f"{type(self).__name__}'s {name} scheduler")

    @contextmanager
    def frozen(self, *names: str) -> Iterator[None]:
        """Freeze the nets of the named players for the block (e.g. the discriminator during the generator's step)."""
        with frozen(*(net for name in names for net in self.players[name].nets)):
            yield

    # -- setup --------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Reject sharded strategies; under a loss-scaling precision give each player its own ``GradScaler``; keep
        each rank's image pools its own under DDP."""
        super().setup(stage)  # the image pools hold each rank's own fakes: DDP leaves them alone
        if self._trainer is None:
            return
        strategy = self.trainer.strategy
        if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)) and self.trainer.world_size > 1:
            raise NotImplementedError(
                f"{type(self).__name__} supports single-device and DDP training (`strategy: ddp`); got "
                f"{type(strategy).__name__}. The games average each player's gradients themselves (one step per "
                "player, under manual optimization), which sharded strategies (FSDP, ModelParallelStrategy, "
                "DeepSpeed) would have to do instead. Use `strategy: ddp` for several devices or nodes; see "
                "docs/scaling.md."
            )
        if stage == "fit":
            self._make_scalers()

    def _make_scalers(self) -> None:
        plugin = self.trainer.precision_plugin
        shared = getattr(plugin, "scaler", None) if isinstance(plugin, MixedPrecision) else None
        if shared is None or not shared.is_enabled():
            self._scalers, self._skipped = {}, {}
            return
        self._scalers = {
            name: torch.amp.GradScaler(
                device=plugin.device, init_scale=shared.get_scale(), growth_factor=shared.get_growth_factor(),
                backoff_factor=shared.get_backoff_factor(), growth_interval=shared.get_growth_interval(),
            )
            for name in self.players
        }
        self._skipped = {name: torch.zeros((), device=self.device) for name in self.players}
        self._apply_scaler_states()

    def _apply_scaler_states(self) -> None:
        for name, state in list(self._scaler_states.items()):
            if name in self._scalers:
                self._scalers[name].load_state_dict(state["scaler"])
                self._skipped[name] = torch.as_tensor(state["skipped"], device=self.device, dtype=torch.float32)
                del self._scaler_states[name]

    def gradient_scale(self, name: str) -> Optional[Tensor]:
        """Player ``name``'s current loss scale as a device tensor (no host sync), or ``None`` when not scaling.

        Pass it as ``grad_scale`` to input-gradient penalties (:func:`~lightning_gen.losses.gradient_penalty` and
        friends), which differentiate the scaled critic output and unscale, as the PyTorch AMP recipe prescribes.
        """
        scaler = self._scalers.get(name)
        if scaler is None:
            return None
        return scaler.scale(torch.ones((), device=self.device))

    def skipped_steps(self, name: str) -> int:
        """Steps of player ``name`` skipped because its scaled gradients overflowed (``16-mixed`` only)."""
        skipped = self._skipped.get(name)
        return int(skipped.item()) if skipped is not None else 0

    # -- backward and step --------------------------------------------------------------------------------------
    def check_finite(self, loss: Tensor, name: str) -> None:
        """Watch player ``name``'s ``loss``: :class:`NonFiniteLossError` on every rank when it is NaN or infinite on
        any rank -- at once on a batch that logs or starts an epoch, else (without waiting for the device) at the next
        such batch, the epoch's end or before the next checkpoint, every step after it being a no-op (see
        :meth:`~lightning_gen.modules.base.GenerativeModule.watch_loss`)."""
        if not self.detect_non_finite:
            return
        self.watch_loss(loss, (name, self.generator_steps, dict(self.player_steps)))

    def non_finite_error(self, found: NonFiniteLoss) -> NonFiniteLossError:
        """The error naming the player, the generator step and every player's steps of the first non-finite loss."""
        name, step, steps = found.info
        later = "" if self._trainer is None or step == self.generator_steps else (
            f" or on any later loss (found at generator step {self.generator_steps}: the losses are checked on the "
            "device and read at logging batches, epoch ends and checkpoints)")
        return NonFiniteLossError(
            f"The {name} loss of {type(self).__name__} became {found.value} at generator step {step} "
            f"({', '.join(f'{n} steps {s}' for n, s in steps.items())}). Training stopped; no optimizer stepped on "
            f"it{later}.{self._checkpoint_hint()} Try a lower learning rate, gradient clipping "
            "(`--model.gradient_clip_val 1.0`, i.e. `gradient_clip_val` in the model's `init_args`), or a critic "
            "regularizer."
        )

    @contextmanager
    def _scaling_with(self, name: str) -> Iterator[None]:
        """Let Lightning's precision plugin scale, unscale and step with player ``name``'s own scaler."""
        scaler = self._scalers.get(name)
        if scaler is None:
            yield
            return
        plugin = self.trainer.precision_plugin
        shared = plugin.scaler
        plugin.scaler = scaler
        try:
            yield
        finally:
            plugin.scaler = shared

    def player_backward(self, name: str, loss: Tensor, check_finite: bool = True) -> None:
        """Backpropagate one micro-batch of player ``name``'s loss (divided by ``accumulate_grad_batches``).

        The backward runs outside DDP's reducer (gradients are averaged per player in :meth:`player_step`) and, under
        ``16-mixed``, is scaled by the player's own scaler. ``check_finite=False`` leaves the finite-loss check to the
        caller (e.g. when only a loss-scaling artefact such as an overflowed penalty may be non-finite).
        """
        if check_finite:
            self.check_finite(loss, name)
        strategy = self.trainer.strategy
        no_sync = strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()
        acc = self.accumulate_grad_batches
        with no_sync, self._scaling_with(name):
            self.manual_backward(loss / acc if acc > 1 else loss)
        self.players[name].micro_batches += 1

    def player_step(self, name: str) -> bool:
        """Step player ``name`` once ``accumulate_grad_batches`` micro-batches are in; returns whether it stepped.

        The step: average the gradients across ranks, unscale (under a scaler), clip, optimizer step (skipped by the
        scaler on overflow), scaler update, rank 0's buffers (e.g. BatchNorm statistics) to every rank (as DDP does
        at each forward), zero the gradients, scheduler step, EMA update. After a non-finite loss (any player's) the
        optimizer step leaves the parameters and the optimizer's state exactly as they were, without waiting for the
        device (:mod:`lightning_gen.modules.finite`); the counters, scheduler and EMA still advance, as on a step a
        scaler skips.
        """
        player = self.players[name]
        if player.micro_batches < self.accumulate_grad_batches:
            return False
        self._average_gradients(player.parameters())
        optimizer = self.optimizer_of(name)
        scaler = self._scalers.get(name)
        scale_before = self.gradient_scale(name) if scaler is not None else None
        if self.detect_non_finite and scaler is not None:
            self._finite_guard.poison(player.parameters())  # the scaler's own check then skips the step
        guarded = (self._finite_guard.step(optimizer.optimizer, scaled=scaler is not None) if self.detect_non_finite
                   else nullcontext())
        self._stepping = player
        try:
            with self._scaling_with(name), guarded:
                if player.counts_global_step:
                    optimizer.step()  # a LightningOptimizer step: advances trainer.global_step
                else:
                    self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)
        finally:
            self._stepping = None
        if scaler is not None and scale_before is not None:
            # the scale backs off exactly when the scaler found inf/NaN gradients and skipped the step
            self._skipped[name] += (self.gradient_scale(name) < scale_before).float()
        self._broadcast_buffers(player)
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.scheduler_of(name)
        if scheduler is not None:
            scheduler.step()
        if player.ema is not None:
            player.ema.update(player.nets[0])
        player.steps += 1
        player.micro_batches = 0
        return True

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip the stepping player's gradients: called by Lightning after unscaling, before the optimizer step.

        Also brings the finite-loss flag up to date (a fused optimizer reads it in its kernel). Subclasses that override
        this hook must call ``super().on_before_optimizer_step(optimizer)``.
        """
        if self.detect_non_finite and self._stepping is not None and self._stepping.name not in self._scalers:
            self._finite_guard.update_skip()
        if self._stepping is not None and self.gradient_clip_val:
            if self._stepping.name in self._scalers and getattr(optimizer, "_step_supports_amp_scaling", False):
                raise RuntimeError(
                    f"{type(optimizer).__name__} unscales inside its step (a fused optimizer), so gradients cannot be "
                    "clipped under 16-mixed: drop `fused`/`gradient_clip_val` or use bf16-mixed."
                )
            params = self._stepping.parameters()
            if self.gradient_clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(params, self.gradient_clip_val)

    def _broadcast_buffers(self, player: Player) -> None:
        """Send rank 0's buffers of the player's nets to every rank, so evaluation and sampling agree across ranks."""
        if self.trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for net in player.nets:
            for buffer in net.buffers():
                by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = _flatten_dense_tensors(buffers)
            dist.broadcast(flat, src=0)
            for b, synced in zip(buffers, _unflatten_dense_tensors(flat, buffers)):
                b.copy_(synced)

    def _average_gradients(self, params: list[nn.Parameter]) -> None:
        """All-reduce the mean of the parameters' gradients over ranks (missing gradients count as zero)."""
        world = self.trainer.world_size
        if world <= 1 or not (dist.is_available() and dist.is_initialized()) or not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(world)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    # -- logging (which batches log: GenerativeModule.should_log) ----------------------------------------------
    def plumbing_logs(self) -> dict[str, Tensor]:
        """Counters every game logs: each player's steps and, under a scaler, its skipped steps and loss scale; and
        ``step``, the generator steps, which Lightning takes as the loggers' x-axis (not the batches), with
        ``epoch`` (which Lightning adds only when no ``step`` is logged)."""
        logs: dict[str, Any] = {f"train/{name}_steps": float(p.steps) for name, p in self.players.items()}
        for name in self._scalers:
            logs[f"train/skipped_steps/{name}"] = self._skipped[name]
            logs[f"train/loss_scale/{name}"] = self.gradient_scale(name)
        logs["step"], logs["epoch"] = float(self.generator_steps), float(self.current_epoch)
        return logs

    def log_training(self, logs: dict[str, Any], batch_size: int) -> None:
        """Log a training batch's values with :meth:`plumbing_logs`; ``progress_bar_keys`` also go on the bar."""
        super().log_training({**logs, **self.plumbing_logs()}, batch_size)

    def on_validation_epoch_end(self) -> None:
        """While fitting, log ``step`` (generator steps) so the validation values share the training x-axis."""
        super().on_validation_epoch_end()
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.log_dict({"step": float(self.generator_steps), "epoch": float(self.current_epoch)})

    # -- checkpoints --------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the players' step and micro-batch counters and their scalers' states next to the RNG states."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[_COUNTERS_KEY] = {
            "player_steps": {n: p.steps for n, p in self.players.items()},
            "player_micro_batches": {n: p.micro_batches for n, p in self.players.items()},
        }
        if self._scalers:
            checkpoint[_SCALERS_KEY] = {
                name: {"scaler": scaler.state_dict(), "skipped": float(self._skipped[name])}
                for name, scaler in self._scalers.items()
            }
        # gradients accumulated towards a step not yet taken (an epoch that ends inside an accumulation window)
        grads = {name: [None if p.grad is None else p.grad.detach().cpu().clone() for p in player.parameters()]
                 for name, player in self.players.items() if player.micro_batches}
        if grads:  # every rank has the same counters, so all take part in the gather or none does
            checkpoint[_GRADS_KEY] = gather_over_ranks(grads)

    def rank_local_buffers(self) -> dict[str, Tensor]:
        """The state-dict entries each rank fills on its own: the image pools' histories of that rank's fakes (the
        state dict a checkpoint holds is rank 0's)."""
        return {f"{prefix}.{name}": buffer for prefix, module in self.named_modules() if isinstance(module, ImagePool)
                for name, buffer in module.named_buffers(recurse=False)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what :meth:`on_save_checkpoint` wrote (and the counters of checkpoints from before the players)."""
        super().on_load_checkpoint(checkpoint)
        counters = checkpoint.get(_COUNTERS_KEY, {})
        if "player_steps" in counters:
            steps, micro = counters["player_steps"], counters["player_micro_batches"]
        else:  # written before players existed: one step per player per global step, GAN's critic counters
            steps = {name: int(checkpoint.get("global_step", 0)) for name in self.players}
            micro = {}
            if "critic_steps" in counters:
                steps["discriminator"] = counters["critic_steps"]
                micro["discriminator"] = counters.get("micro_batches", 0) % self.accumulate_grad_batches
        for name, player in self.players.items():
            player.steps = int(steps.get(name, 0))
            player.micro_batches = int(micro.get(name, 0))
        self._scaler_states = dict(checkpoint.get(_SCALERS_KEY, {}))
        self._apply_scaler_states()
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"  # no trainer: load_from_checkpoint
        per_rank = checkpoint.get(_GRADS_KEY)
        self._pending_grads = None
        if per_rank and fitting and len(per_rank) == self.trainer.world_size:
            self._pending_grads = per_rank[self.global_rank] or None

    def on_train_epoch_start(self) -> None:
        """Also put back the gradients a resumed checkpoint had accumulated towards a step not yet taken."""
        super().on_train_epoch_start()
        if self._pending_grads:
            for name, grads in self._pending_grads.items():
                for p, g in zip(self.players[name].parameters(), grads):
                    p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype)
        self._pending_grads = None
