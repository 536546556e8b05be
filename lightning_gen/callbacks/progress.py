"""Progress and results on screen: a progress bar that counts generator steps, and the end-of-run summary."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lightning_gen.callbacks.image_logging import image_dir, run_dir

__all__ = ["StepProgressBar", "run_summary"]

_HIDDEN_METRICS = ("step", "epoch")


def _counted_steps_name(pl_module: L.LightningModule) -> str:
    """What ``trainer.global_step`` counts for this module: its player's name (``generator``) or ``step``."""
    for name, player in getattr(pl_module, "players", {}).items():
        if getattr(player, "counts_global_step", False):
            return name
    return "step"


def _other_player_steps(pl_module: L.LightningModule) -> dict[str, int]:
    """Steps of the players that ``trainer.global_step`` does not count (the critic of a GAN), by player name."""
    return {name: int(player.steps) for name, player in getattr(pl_module, "players", {}).items()
            if not getattr(player, "counts_global_step", False)}


def _batches_per_step(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """Training batches per ``trainer.global_step``: ``accumulate_grad_batches`` (the trainer's under automatic
    optimization, the module's under manual optimization) times a GAN's ``n_critic``."""
    if pl_module.automatic_optimization:
        return max(1, int(trainer.accumulate_grad_batches))
    return max(1, int(getattr(pl_module, "accumulate_grad_batches", 1)) * int(getattr(pl_module, "n_critic", 1)))


def total_steps(trainer: L.Trainer, pl_module: L.LightningModule) -> Optional[int]:
    """The ``trainer.global_step`` at which fitting will stop: ``max_steps``, or (with ``max_steps: -1``) training
    batches x epochs / batches per step, whichever comes first; ``None`` when neither bounds the run."""
    bounds = [trainer.max_steps] if trainer.max_steps is not None and trainer.max_steps >= 0 else []
    batches, epochs = trainer.num_training_batches, trainer.max_epochs
    if epochs is not None and epochs >= 0 and math.isfinite(batches):
        bounds.append(math.ceil(int(batches) * epochs / _batches_per_step(trainer, pl_module)))
    return min(bounds) if bounds else None


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM progress bar with one training bar for the whole fit that counts ``trainer.global_step``:
    **generator steps** for the adversarial modules (a GAN with ``n_critic: 5`` advances it once per five critic
    steps), optimizer steps for the others, toward ``max_steps`` (or batches x epochs when ``max_steps`` is -1).

    Next to the bar: the metrics logged with ``prog_bar=True`` (``train/`` dropped from their names: the main losses
    of every family, the toy metrics and FID after a validation) and the steps of the players that
    ``global_step`` does not count (``discriminator_steps``). ``lightning-gen`` adds this bar to every run whose
    config names no progress bar and does not set ``enable_progress_bar: false``.

    Args: as :class:`~lightning.pytorch.callbacks.TQDMProgressBar`; ``refresh_rate`` counts steps of the bar.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._shown_step: Optional[int] = None
        self._epochs_started = 0
        self._first_step = 0

    def init_train_tqdm(self) -> Tqdm:
        """The training bar: counts steps (``step/s``)."""
        return Tqdm(desc=self.train_description, position=2 * self.process_position, disable=self.is_disabled,
                    leave=True, dynamic_ncols=True, file=sys.stdout, smoothing=0, unit="step",
                    bar_format=self.BAR_FORMAT)

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, Union[int, str, float, dict[str, float]]]:
        """The ``prog_bar`` metrics without the ``train/`` prefix, then the other players' step counts."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        shown: dict[str, Any] = {k.removeprefix("train/"): v for k, v in items.items() if k not in _HIDDEN_METRICS}
        shown.update({f"{name}_steps": steps for name, steps in _other_player_steps(pl_module).items()})
        return shown

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the one training bar, at the step a resumed run starts from."""
        self.train_progress_bar = self.init_train_tqdm()
        self._first_step = trainer.global_step
        self._epochs_started = 0
        self.train_progress_bar.reset(total=total_steps(trainer, pl_module))
        self.train_progress_bar.initial = trainer.global_step
        self._shown_step = None
        self._show(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Name the epoch in the bar's description (the bar itself runs on across epochs)."""
        self._epochs_started += 1
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Advance to ``trainer.global_step`` every ``refresh_rate`` steps (and at the last one)."""
        step = trainer.global_step
        if step != self._shown_step and self._should_update(step, self.train_progress_bar.total):
            self._show(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Show the epoch's last step and metrics; without ``max_steps``, re-estimate the total from the steps
        the epochs so far took."""
        if trainer.max_steps < 0 and trainer.max_epochs is not None and trainer.max_epochs > 0:
            done = trainer.global_step - self._first_step
            if done > 0 and self._epochs_started > 0:
                remaining = trainer.max_epochs - trainer.current_epoch - 1
                self.train_progress_bar.total = trainer.global_step + round(done / self._epochs_started * remaining)
        self._show(trainer, pl_module)

    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = self.train_progress_bar
        if bar.disable:
            return
        bar.n = trainer.global_step
        self._shown_step = trainer.global_step
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()


# -- the end-of-run summary ------------------------------------------------------------------------------------------
def _format_value(value: Any) -> str:
    value = float(value.item() if hasattr(value, "item") else value)
    if value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def _metric_lines(metrics: dict[str, Any], width: int = 110) -> list[str]:
    """``<group>  name value  name value ...`` lines, one group per prefix (``train``, ``val``, ...)."""
    groups: dict[str, list[str]] = {}
    for key in sorted(metrics):
        value = metrics[key]
        if key in _HIDDEN_METRICS or not (isinstance(value, (int, float)) or getattr(value, "numel", lambda: 0)() == 1):
            continue
        group, _, name = key.rpartition("/") if "/" in key else ("", "", key)
        if name.endswith("_steps"):  # step counters: the summary's first line says them
            continue
        groups.setdefault(group, []).append(f"{name} {_format_value(value)}")
    lines = []
    for group, items in groups.items():
        head = f"  {group or 'metrics':<12} "
        line = head
        for item in items:
            if len(line) + len(item) + 2 > width and line != head:
                lines.append(line.rstrip())
                line = " " * len(head)
            line += item + "  "
        lines.append(line.rstrip())
    return lines


def _relative(path: Union[str, Path]) -> str:
    """``path`` relative to the working directory when it lies below it (what a user types), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _logger_lines(trainer: L.Trainer) -> list[str]:
    lines = []
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            lines.append(f"  {'logs':<12} {_relative(logger.log_dir)}   (view: tensorboard --logdir "
                         f"{_relative(logger.root_dir)})")
        elif isinstance(logger, CSVLogger):
            lines.append(f"  {'logs':<12} {_relative(Path(logger.log_dir) / 'metrics.csv')}")
        elif isinstance(logger, WandbLogger):
            run = logger.experiment
            where = getattr(run, "url", None) or ""
            folder = Path(run.dir).parent if getattr(run, "dir", None) else None
            offline = folder is not None and folder.name.startswith("offline-run")
            if offline:
                lines.append(f"  {'W&B run':<12} {_relative(folder)}   (upload: wandb sync {_relative(folder)})")
            else:
                lines.append(f"  {'W&B run':<12} {where or (folder and _relative(folder))}")
        else:
            lines.append(f"  {'logs':<12} {type(logger).__name__} in {_relative(run_dir(trainer))}")
    return lines


def _checkpoint_lines(trainer: L.Trainer, stage: str) -> list[str]:
    if stage != "fit":
        return [f"  {'weights':<12} {_relative(trainer.ckpt_path) if trainer.ckpt_path else 'none (untrained)'}"]
    lines = []
    seen: set[str] = set()
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath or callback.dirpath in seen:
            continue
        seen.add(callback.dirpath)
        last = callback.last_model_path or callback.best_model_path
        note = f"   (last: {_relative(last)})" if last else ""
        lines.append(f"  {'checkpoints':<12} {_relative(callback.dirpath)}{note}")
    return lines or [f"  {'checkpoints':<12} none (no ModelCheckpoint callback)"]


def run_summary(trainer: L.Trainer, stage: str) -> str:
    """A short report of a finished ``fit`` / ``validate`` / ``test``: the step reached, the last value of every
    logged metric (grouped by ``train/``, ``val/``, ``test/``), and where the logs, checkpoints (or the weights
    evaluated) and PNG pictures are."""
    module = trainer.lightning_module
    counted = _counted_steps_name(module)
    players = getattr(module, "players", {})
    if counted in players:  # the players' counters come back with the weights, for test and validate too
        step = f" at {counted} step {players[counted].steps}"
    else:  # outside fit, Lightning does not restore trainer.global_step
        step = f" at step {trainer.global_step}" if stage == "fit" else ""
    others = ", ".join(f"{name} steps {n}" for name, n in _other_player_steps(module).items())
    head = f"{stage} finished{step}{f' ({others})' if others else ''}"
    lines = [head, *_metric_lines(dict(trainer.callback_metrics)), *_logger_lines(trainer),
             *_checkpoint_lines(trainer, stage)]
    pictures = image_dir(trainer)
    pngs = sorted(pictures.glob("*.png"), key=lambda p: p.stat().st_mtime) if pictures.is_dir() else []
    if pngs:
        lines.append(f"  {'pictures':<12} {_relative(pictures)}   ({len(pngs)} PNG files, latest {pngs[-1].name})"
                     if len(pngs) > 1 else f"  {'pictures':<12} {_relative(pngs[0])}")
    return "\n".join(lines)
