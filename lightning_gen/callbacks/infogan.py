"""Callbacks for latent-code models (InfoGAN): a picture of what each code controls, and how well the categorical
code matches the data's labels (best-permutation accuracy) or a toy mixture's modes (purity)."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lightning_gen.callbacks.images import PeriodicImageCallback, grid_to_uint8, images_to_grid
from lightning_gen.metrics.clustering import BestPermutationAccuracy, CodePurity

__all__ = ["CodeGridCallback", "CodeMetricsCallback"]

_NEEDS = ("num_categories", "num_continuous", "noise_dim", "sample_codes", "generator_input", "generate")


def _check_module(pl_module: L.LightningModule, who: str) -> None:
    missing = [name for name in _NEEDS if not hasattr(pl_module, name)]
    if missing:
        raise TypeError(f"{who} needs a latent-code module such as lightning_gen.InfoGAN; {type(pl_module).__name__} "
                        f"has no {', '.join(missing)}")


class CodeGridCallback(PeriodicImageCallback):
    """Logs what the codes control, drawn from the same noise each time so pictures over training compare.

    Images: a grid with one row per categorical value (one row when there is no categorical code) and ``steps``
    columns sweeping continuous code ``continuous_index`` over ``sweep`` (the other continuous codes at 0), all from
    one fixed noise vector (the paper's figure 2; columns are fresh noise draws when there is no continuous code).
    Vector data (toy mixtures): a scatter of ``num_samples`` samples coloured by their categorical code. Key
    ``key`` (``codes``), also saved as ``<run dir>/images/<key>_step<N>.png`` (see
    :func:`~lightning_gen.callbacks.log_image`); the last picture is kept in ``last_image`` (``(H, W, 3)`` uint8).
    Fires at the end of every ``every_n_epochs``-th epoch (``None``: never), every ``every_n_steps`` generator steps,
    and at the end of training unless that step was just logged; only global rank zero draws.
    """

    def __init__(
        self,
        every_n_epochs: Optional[int] = 1,
        every_n_steps: Optional[int] = None,
        continuous_index: int = 0,
        steps: int = 10,
        sweep: tuple[float, float] = (-1.0, 1.0),
        num_samples: int = 2000,
        seed: int = 0,
        key: str = "codes",
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        self.set_schedule(key, every_n_epochs, every_n_steps, on_train_end)
        if steps < 2:
            raise ValueError(f"steps must be >= 2 (the sweep's two ends are included), got {steps}")
        if continuous_index < 0:
            raise ValueError(f"continuous_index must be >= 0, got {continuous_index}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.continuous_index, self.steps, self.sweep = int(continuous_index), int(steps), tuple(float(v) for v in sweep)
        self.num_samples, self.seed = int(num_samples), int(seed)
        self.last_image: Optional[np.ndarray] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the module and the code index before training starts."""
        _check_module(pl_module, type(self).__name__)
        m = int(pl_module.num_continuous)
        if m and self.continuous_index >= m:
            raise ValueError(f"continuous_index {self.continuous_index} is out of range for {m} continuous code(s)")

    def grid_inputs(self, pl_module: L.LightningModule) -> Tensor:
        """The generator inputs of the image grid, row by row: ``(rows * steps, latent_dim)``."""
        k, m = int(pl_module.num_categories), int(pl_module.num_continuous)
        rows, cols = max(k, 1), self.steps
        n = rows * cols
        parts = pl_module.sample_codes(n, generator=torch.Generator().manual_seed(self.seed))
        if m:
            parts["noise"] = parts["noise"][:1].expand(n, -1)  # one noise vector for the whole grid
            continuous = torch.zeros(n, m, device=parts["noise"].device)
            values = torch.linspace(*self.sweep, cols, device=continuous.device)
            continuous[:, self.continuous_index] = values.repeat(rows)
            parts["continuous"] = continuous
        else:  # no sweep: each column its own noise, the same down the column
            parts["noise"] = parts["noise"][:cols].repeat(rows, 1)
        if k:
            parts["categorical"] = torch.arange(k, device=parts["noise"].device).repeat_interleave(cols)
        return pl_module.generator_input(**parts)

    def image(self, pl_module: L.LightningModule) -> np.ndarray:
        """Draw the picture (image grid or coloured scatter) as an ``(H, W, 3)`` uint8 array."""
        _check_module(pl_module, type(self).__name__)
        with torch.no_grad():
            grid = pl_module.generate(self.grid_inputs(pl_module))
            image = grid_to_uint8(images_to_grid(grid, self.steps)) if grid.dim() == 4 else self._scatter(pl_module)
        self.last_image = image
        return image

    def _scatter(self, pl_module: L.LightningModule) -> np.ndarray:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        k = int(pl_module.num_categories)
        codes = torch.arange(self.num_samples) % max(k, 1)
        fixed = {"categorical": codes} if k else None
        x = pl_module.sample(self.num_samples, generator=torch.Generator().manual_seed(self.seed), codes=fixed)
        x = x.reshape(x.shape[0], -1).float().cpu()
        if x.shape[1] < 2:
            x = torch.cat([x, torch.zeros_like(x)], dim=1)
        fig = Figure(figsize=(5, 5), dpi=100)
        ax = fig.add_subplot()
        cmap = colormaps["tab10" if k <= 10 else "tab20"]
        for c in range(max(k, 1)):
            pts = x[codes == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=3, color=cmap(c % cmap.N), label=f"c={c}" if k else "samples")
        ax.set_aspect("equal")
        ax.set_title("samples by categorical code")
        ax.legend(loc="upper right", fontsize=6, markerscale=3)
        fig.tight_layout()
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Forget the steps logged by an earlier fit with this callback."""
        self.forget_logged_steps()


class CodeMetricsCallback(L.Callback):
    """After validation and test, logs how well the categorical code matches labels.

    ``<stage>/code_accuracy``: best-permutation accuracy of Q's code (:meth:`~lightning_gen.InfoGAN.infer_codes`) on
    the real ``(x, labels)`` batches of the stage against their labels (digits; a toy mixture's mode labels). For toy
    mixtures (a data module with ``mixture``) also, on ``num_samples`` generated samples with codes ``i % k``:
    ``<stage>/sample_code_purity`` (share of samples in their code's majority mode, nearest mode) and
    ``<stage>/sample_code_accuracy`` (best-permutation accuracy of the codes against the nearest modes). Counts
    are summed across ranks, so every rank logs the same numbers; ``last`` keeps them.
    """

    def __init__(self, num_samples: int = 2500, num_labels: Optional[int] = None) -> None:
        super().__init__()
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.num_labels = num_labels
        self._accuracy: Optional[BestPermutationAccuracy] = None
        self.last: dict[str, float] = {}

    def _labels_count(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        if self.num_labels is not None:
            return int(self.num_labels)
        data = trainer.datamodule
        mixture = getattr(data, "mixture", None)
        if mixture is not None:
            return int(mixture.num_modes)
        return int(getattr(data, "num_classes", 0) or 0) or int(pl_module.num_categories)

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _check_module(pl_module, type(self).__name__)
        k = int(pl_module.num_categories)
        self._accuracy = BestPermutationAccuracy(k, self._labels_count(trainer, pl_module)).to(pl_module.device) if k else None

    def _update(self, pl_module: L.LightningModule, batch: Any) -> None:
        if self._accuracy is None or not (isinstance(batch, (list, tuple)) and len(batch) > 1):
            return
        codes = pl_module.infer_codes(batch[0])["categorical"]
        self._accuracy.update(codes, batch[1].to(codes.device))

    def _end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._accuracy is None:
            return
        logs: dict[str, Tensor] = {}
        if int(self._accuracy.counts.sum()) or trainer.world_size > 1:
            logs[f"{stage}/code_accuracy"] = self._accuracy.compute()
        mixture = getattr(trainer.datamodule, "mixture", None)
        if mixture is not None and self.num_samples:
            logs.update(self._sample_metrics(trainer, pl_module, mixture.modes, stage))
        self.last = {k: float(v) for k, v in logs.items()}
        pl_module.log_dict({k: v.float() for k, v in logs.items()}, sync_dist=False, rank_zero_only=False)

    def _sample_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, modes: Tensor, stage: str) -> dict[str, Tensor]:
        k = int(pl_module.num_categories)
        world, rank = trainer.world_size, trainer.global_rank
        share = self.num_samples // world + (1 if rank < self.num_samples % world else 0)
        start = rank * (self.num_samples // world) + min(rank, self.num_samples % world)
        codes = (torch.arange(start, start + share) % k).to(pl_module.device)
        purity = CodePurity(k, modes.shape[0]).to(pl_module.device)
        accuracy = BestPermutationAccuracy(k, modes.shape[0]).to(pl_module.device)
        if share:
            x = pl_module.sample(share, generator=torch.Generator().manual_seed(1000 + rank), codes={"categorical": codes})
            nearest = torch.cdist(x.reshape(share, -1).float(), modes.to(x.device).float()).argmin(dim=1)
            purity.update(codes, nearest)
            accuracy.update(codes, nearest)
        return {f"{stage}/sample_code_purity": purity.compute(), f"{stage}/sample_code_accuracy": accuracy.compute()}

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start counting."""
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start counting."""
        self._start(trainer, pl_module)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Count Q's codes against the batch's labels."""
        self._update(pl_module, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        """Count Q's codes against the batch's labels."""
        self._update(pl_module, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the validation numbers (not during the sanity check)."""
        if not trainer.sanity_checking:
            self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the test numbers."""
        self._end(trainer, pl_module, "test")
