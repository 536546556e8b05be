"""Callbacks for toy mixtures: mode-coverage metrics and a scatter of samples over the true modes."""

from __future__ import annotations

from typing import Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lightning_gen.callbacks.image_logging import log_image, samples_collectively
from lightning_gen.metrics.toy import ToyModeMetrics

__all__ = ["ToyMetricsCallback", "ToyScatterCallback"]


def _mixture_of(trainer: L.Trainer, modes: Optional[Tensor], std: Optional[float]) -> tuple[Tensor, float]:
    if modes is not None and std is not None:
        return torch.as_tensor(modes, dtype=torch.float32), float(std)
    mixture = getattr(trainer.datamodule, "mixture", None) if trainer.datamodule is not None else None
    if mixture is None:
        raise ValueError(
            "The toy callbacks need the true mixture: use ToyGaussiansDataModule, or pass `modes` and `std`."
        )
    return mixture.modes, mixture.std


def _sample_in_chunks(pl_module: L.LightningModule, n: int, chunk: int = 4096) -> Tensor:
    return torch.cat([pl_module.sample(min(chunk, n - i)) for i in range(0, n, chunk)])


class ToyMetricsCallback(L.Callback):
    """After each validation and test epoch, draws ``num_samples`` with ``sample()`` and logs modes covered, % HQ
    samples and reverse KL (keys ``<stage>/modes_covered``, ``<stage>/hq_percent``, ``<stage>/reverse_kl``).

    Under DDP each rank draws its share and the counts are summed, so every rank logs the same numbers.
    """

    def __init__(
        self,
        num_samples: int = 2500,
        num_std: float = 3.0,
        min_count: int = 20,
        modes: Optional[Tensor] = None,
        std: Optional[float] = None,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = num_samples
        self.num_std = num_std
        self.min_count = min_count
        self._modes, self._std = modes, std
        self.last: dict[str, float] = {}

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        modes, std = _mixture_of(trainer, self._modes, self._std)
        metric = ToyModeMetrics(modes, std, self.num_std, self.min_count).to(pl_module.device)
        world, rank = trainer.world_size, trainer.global_rank
        share = self.num_samples // world + (1 if rank < self.num_samples % world else 0)
        if share:
            metric.update(_sample_in_chunks(pl_module, share))
        values = metric.compute()
        self.last = {k: float(v) for k, v in values.items()}
        logs = {f"{stage}/{k}": v for k, v in values.items()}
        shown = {k: logs.pop(k) for k in (f"{stage}/modes_covered", f"{stage}/hq_percent") if k in logs}
        pl_module.log_dict(shown, sync_dist=False, rank_zero_only=False, prog_bar=True)
        pl_module.log_dict(logs, sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate after validation."""
        self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate after testing."""
        self._run(trainer, pl_module, "test")


class ToyScatterCallback(L.Callback):
    """Every ``every_n_epochs`` training epochs, and (``on_train_end``) at the end of training unless that step was
    just drawn, logs a scatter of samples over the true modes, drawn on a heat map of the discriminator's score when
    the module has ``discriminate(x)``; key ``toy/samples``, also saved as ``<run dir>/images/toy_samples_step<N>.png``
    (see :func:`~lightning_gen.callbacks.log_image`)."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 2500,
        resolution: int = 100,
        modes: Optional[Tensor] = None,
        std: Optional[float] = None,
        seed: int = 0,
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.resolution = resolution
        self._modes, self._std = modes, std
        self.seed = seed
        self.log_on_train_end = on_train_end
        self._last_logged_step: Optional[int] = None

    def render(self, pl_module: L.LightningModule, modes: Tensor, step: Optional[int] = None) -> np.ndarray:
        """Draw the picture and return it as an ``(H, W, 3)`` uint8 array."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        samples = pl_module.sample(self.num_samples, generator=torch.Generator().manual_seed(self.seed)).cpu()
        samples = samples.reshape(samples.shape[0], -1)
        modes = modes.cpu()
        fig = Figure(figsize=(5, 5), dpi=100)
        ax = fig.add_subplot()
        if modes.shape[1] == 1:
            ax.hist(samples[:, 0].numpy(), bins=100, density=True, alpha=0.6, label="samples")
            ax.vlines(modes[:, 0].numpy(), 0, ax.get_ylim()[1], colors="k", linestyles="dashed", label="modes")
        else:
            pts = torch.cat([samples[:, :2], modes[:, :2]])
            lo, hi = pts.min(0).values, pts.max(0).values
            pad = 0.1 * (hi - lo).clamp_min(1e-3)
            lo, hi = lo - pad, hi + pad
            heat_map = hasattr(pl_module, "discriminate") and modes.shape[1] == 2
            if heat_map:
                xs = torch.linspace(lo[0], hi[0], self.resolution)
                ys = torch.linspace(lo[1], hi[1], self.resolution)
                gx, gy = torch.meshgrid(xs, ys, indexing="xy")
                grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
                score = pl_module.discriminate(grid).float().cpu().reshape(self.resolution, self.resolution)
                mesh = ax.pcolormesh(gx.numpy(), gy.numpy(), score.numpy(), shading="auto", cmap="viridis")
                fig.colorbar(mesh, ax=ax, label="discriminator score")
            # white dots show on the heat map; without one (flows, diffusion, VAEs) they need a dark colour
            ax.scatter(samples[:, 0], samples[:, 1], s=2, c="white" if heat_map else "tab:blue", edgecolors="none",
                       alpha=0.7, label="samples")
            ax.scatter(modes[:, 0], modes[:, 1], s=60, facecolors="none", edgecolors="red", linewidths=1.0, label="modes")
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_aspect("equal")
        ax.set_title("samples" if step is None else f"samples at step {step}")
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (trainer.is_global_zero or samples_collectively(pl_module)):
            return
        modes, _ = _mixture_of(trainer, self._modes, self._std)
        picture = self.render(pl_module, modes, trainer.global_step)  # every rank renders when sampling is collective
        if trainer.is_global_zero:
            log_image(trainer, "toy/samples", picture)
        self._last_logged_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Forget the step drawn by an earlier fit with this callback."""
        self._last_logged_step = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the picture on rank zero every ``every_n_epochs`` epochs."""
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the final picture, unless it was drawn at this very step already."""
        if self.log_on_train_end and self._last_logged_step != trainer.global_step:
            self._log(trainer, pl_module)
