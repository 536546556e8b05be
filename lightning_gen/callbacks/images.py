"""Image callbacks: a grid of samples from fixed noise, and latent-space interpolations (linear or spherical)."""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lightning_gen.callbacks.image_logging import log_image, samples_collectively

__all__ = [
    "InterpolationCallback",
    "SampleGridCallback",
    "grid_to_uint8",
    "images_to_grid",
    "lerp",
    "slerp",
]


# -- interpolation math ---------------------------------------------------------------------------------------------
def _check_pair(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if z0.ndim < 1:
        raise ValueError("z0 and z1 must have at least one dimension (the vectors lie along the last one)")
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor of interpolation weights, got shape {tuple(t.shape)}")
    return t.unsqueeze(-1)  # (T, 1): broadcasts against (..., 1, D)


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1`` of vectors along the last dim: ``(..., D)`` -> ``(..., len(t), D)``.

    ``t = 0`` and ``t = 1`` give the endpoints exactly, ``t = 0.5`` the exact midpoint.
    """
    t = _check_pair(z0, z1, t)
    return (1 - t) * z0.unsqueeze(-2) + t * z1.unsqueeze(-2)


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation (White 2016) along the last dim: ``(..., D)`` -> ``(..., len(t), D)``.

    ``slerp = sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1`` with ``w`` the angle between ``z0`` and ``z1``:
    for unit vectors it follows the great circle at constant angular speed, and for Gaussian latents it keeps the
    interpolants at the typical norm, where linear interpolation passes through unlikely low-norm codes. Pairs
    that are (anti)parallel or zero, where ``sin(w)`` vanishes and the great circle is undefined, fall back to
    :func:`lerp`, so the result never holds NaN.
    """
    tt = _check_pair(z0, z1, t)
    a, b = z0.unsqueeze(-2), z1.unsqueeze(-2)  # (..., 1, D)
    norms = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)
    eps = 10 * torch.finfo(z0.dtype).eps
    cos = ((a * b).sum(-1, keepdim=True) / norms.clamp_min(torch.finfo(z0.dtype).tiny)).clamp(-1, 1)
    omega = torch.arccos(cos)  # (..., 1, 1)
    sin = torch.sin(omega)
    degenerate = (sin.abs() <= eps) | (norms <= torch.finfo(z0.dtype).tiny)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    w0 = torch.where(degenerate, 1 - tt, torch.sin((1 - tt) * omega) / safe_sin)  # (..., T, 1)
    w1 = torch.where(degenerate, tt, torch.sin(tt * omega) / safe_sin)
    return w0 * a + w1 * b


# -- grids ----------------------------------------------------------------------------------------------------------
def images_to_grid(images: Tensor, nrow: int) -> Tensor:
    """Map images ``(N, C, H, W)`` with ``C`` in {1, 3} from [-1, 1] to [0, 1] (clamped) and tile them with
    ``torchvision.utils.make_grid`` (``nrow`` images per row, 2-pixel black padding): a ``(3, H', W')`` CPU tensor."""
    from torchvision.utils import make_grid

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected images shaped (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}; the image callbacks "
            "need a module whose sample()/generate() return images (use ToyScatterCallback for toy 2-D data)"
        )
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    images = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=0.0)  # 1 channel is repeated to 3 by make_grid


def grid_to_uint8(grid: Tensor) -> np.ndarray:
    """Convert a ``(3, H, W)`` float grid in [0, 1] to the ``(H, W, 3)`` uint8 array ``log_image`` takes."""
    if grid.ndim != 3 or grid.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) grid, got {tuple(grid.shape)}")
    # Same rounding as torchvision.utils.save_image: floor(255 x + 0.5).
    return grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def first_images(loader: Any, num_images: int, who: str) -> Optional[tuple[Tensor, Optional[Tensor]]]:
    """The first ``num_images`` images of a loader of ``x`` or ``(x, labels)`` batches, on the CPU, with their labels
    (``None`` for unlabelled batches); ``None`` when the loader is empty or missing. ``who`` names the caller in errors."""
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if loader is None:
        return None
    images: list[Tensor] = []
    labels: list[Tensor] = []
    count = 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, Tensor):
            raise TypeError(f"{who} needs batches of images or (images, labels), got {type(x).__name__}")
        images.append(x.detach().cpu())
        if isinstance(batch, (list, tuple)) and len(batch) > 1 and isinstance(batch[1], Tensor):
            labels.append(batch[1].detach().cpu())
        count += x.shape[0]
        if count >= num_images:
            break
    if not images:
        return None
    found = torch.cat(images)[:num_images]
    return found, (torch.cat(labels)[:num_images] if len(labels) == len(images) else None)


def _num_classes(pl_module: L.LightningModule) -> int:
    return int(getattr(pl_module, "num_classes", 0) or 0)


def _check_label(label: int, num_classes: int, what: str) -> None:
    if not 0 <= label < num_classes:
        raise ValueError(f"{what} {label} is out of range for a module with num_classes={num_classes}")


def _generator_steps(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    # The module's own count of generator steps when it has one; trainer.global_step otherwise.
    steps = getattr(pl_module, "generator_steps", None)
    return int(trainer.global_step if steps is None else steps)


# -- callbacks ------------------------------------------------------------------------------------------------------
class PeriodicImageCallback(L.Callback):
    """Base of the picture callbacks: logs :meth:`image` as ``self.key`` (any logger; a PNG in any case) every
    ``every_n_steps`` generator steps (once per step, however many batches a step takes), at the end of every
    ``every_n_epochs``-th epoch and at the end of training (``log_on_train_end``; not twice at one step).

    Subclasses set ``key``, ``every_n_steps``, ``every_n_epochs`` and ``log_on_train_end`` and implement
    :meth:`render` (a ``(3, H, W)`` grid in [0, 1]) or :meth:`image` (an ``(H, W, 3)`` uint8 array).
    """

    key: str
    every_n_steps: Optional[int] = None
    every_n_epochs: Optional[int] = None
    log_on_train_end: bool = True
    _last_logged_step: Optional[int] = None
    _last_step_seen: Optional[int] = None

    def set_schedule(
        self, key: str, every_n_epochs: Optional[int], every_n_steps: Optional[int], on_train_end: bool
    ) -> None:
        """Check and set the logging key and schedule (``None``: never by epochs / by steps); forget logged steps."""
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None (never), got {value}")
        if not key:
            raise ValueError("key must be a non-empty string")
        self.key = key
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.log_on_train_end = bool(on_train_end)
        self.forget_logged_steps()

    def render(self, pl_module: L.LightningModule) -> Tensor:
        """The picture as a ``(3, H, W)`` grid in [0, 1]."""
        raise NotImplementedError

    def image(self, pl_module: L.LightningModule) -> np.ndarray:
        """The picture as the ``(H, W, 3)`` uint8 array that is logged (default: :meth:`render`'s grid)."""
        return grid_to_uint8(self.render(pl_module))

    def forget_logged_steps(self) -> None:
        """Forget the steps logged by an earlier fit with this callback."""
        self._last_logged_step = self._last_step_seen = None

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (trainer.is_global_zero or samples_collectively(pl_module)):
            return
        image = self.image(pl_module)  # on every rank when sampling is collective (sharded nets)
        if trainer.is_global_zero:
            log_image(trainer, self.key, image, step=trainer.global_step)
        self._last_logged_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Log every ``every_n_steps`` generator steps (once per step, however many batches a step takes)."""
        if self.every_n_steps is None:
            return
        steps = _generator_steps(trainer, pl_module)
        if steps > 0 and steps % self.every_n_steps == 0 and steps != self._last_step_seen:
            self._last_step_seen = steps
            self._log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log at the end of every ``every_n_epochs``-th epoch."""
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the final picture, unless it was logged at this very step already."""
        if self.log_on_train_end and self._last_logged_step != trainer.global_step:
            self._log(trainer, pl_module)


class SampleGridCallback(PeriodicImageCallback):
    """Logs a grid of ``sample()`` outputs drawn from the same noise each time, so grids over training compare.

    The noise comes from a CPU ``torch.Generator`` seeded with ``seed`` on every call. For a conditional module
    (``num_classes > 0``) sample ``i`` gets label ``labels[i % len(labels)]``, where ``labels`` defaults to
    ``[0, ..., num_classes - 1]``, and ``nrow`` defaults to ``len(labels)``: each column of the grid is one class.
    Unconditional modules get ``nrow = ceil(sqrt(num_samples))`` by default. Images in [-1, 1] are mapped to [0, 1]
    (clamped); grayscale is shown as RGB. The last grid is kept in ``last_grid`` (``(3, H, W)`` float in [0, 1]).

    Fires at the end of every ``every_n_epochs``-th training epoch (``None`` turns this off), every
    ``every_n_steps`` generator steps (the module's ``generator_steps``, else ``trainer.global_step``), and at the
    end of training unless that step was just logged. Images go to ``log_image`` under ``key`` at
    ``trainer.global_step``. Only global rank zero samples and logs: ``sample()`` is no collective operation, so
    the other ranks need not take part.
    """

    def __init__(
        self,
        num_samples: int = 64,
        nrow: Optional[int] = None,
        every_n_epochs: Optional[int] = 1,
        every_n_steps: Optional[int] = None,
        seed: int = 0,
        labels: Optional[list[int]] = None,
        key: str = "samples",
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if nrow is not None and nrow < 1:
            raise ValueError(f"nrow must be >= 1 or None, got {nrow}")
        if labels is not None:
            labels = [int(y) for y in labels]
            if not labels or min(labels) < 0:
                raise ValueError(f"labels must be a non-empty list of class indices >= 0, got {labels}")
        self.set_schedule(key, every_n_epochs, every_n_steps, on_train_end)
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed
        self.labels = labels
        self.last_grid: Optional[Tensor] = None

    def _class_cycle(self, pl_module: L.LightningModule) -> Optional[list[int]]:
        num_classes = _num_classes(pl_module)
        if num_classes == 0:
            if self.labels is not None:
                raise ValueError(
                    f"SampleGridCallback got labels={self.labels}, but {type(pl_module).__name__} is unconditional "
                    "(num_classes is 0 or missing): drop `labels`"
                )
            return None
        cycle = self.labels if self.labels is not None else list(range(num_classes))
        for y in cycle:
            _check_label(y, num_classes, "SampleGridCallback label")
        return cycle

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the labels against the module before training starts."""
        self._class_cycle(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Forget the steps logged by an earlier fit with this callback."""
        self.forget_logged_steps()

    def render(self, pl_module: L.LightningModule) -> Tensor:
        """Draw the grid from the fixed noise (and labels), store it in ``last_grid`` and return it."""
        cycle = self._class_cycle(pl_module)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            if cycle is None:
                images = pl_module.sample(self.num_samples, generator=generator)
                nrow = self.nrow or math.ceil(math.sqrt(self.num_samples))
            else:
                labels = torch.tensor(
                    [cycle[i % len(cycle)] for i in range(self.num_samples)], dtype=torch.long, device=pl_module.device
                )
                images = pl_module.sample(self.num_samples, generator=generator, labels=labels)
                nrow = self.nrow or len(cycle)
        self.last_grid = images_to_grid(images, nrow)
        return self.last_grid

class InterpolationCallback(L.Callback):
    """Logs latent-space interpolations: one row per fixed random pair ``(z0, z1)``, ``steps`` columns from ``z0``
    to ``z1`` (both included), generated with ``pl_module.generate(z, labels)``.

    ``mode`` is ``"slerp"`` (spherical, the usual choice for Gaussian latents, White 2016) or ``"linear"``. The
    pairs come from ``pl_module.noise(2 * num_rows, generator)`` with a CPU generator seeded with ``seed`` (the
    first ``num_rows`` draws are the ``z0``s), so the rows are the same at every call. For a conditional module
    each row keeps one label: ``label`` if given, else the row index modulo ``num_classes``. The module must provide
    ``latent_dim``, ``noise(n, generator=None)`` and ``generate(z, labels=None)``. Fires at the end of every
    ``every_n_epochs``-th training epoch on global rank zero (no collective calls); the last grid is kept in
    ``last_grid`` (``(3, H, W)`` float in [0, 1]).
    """

    def __init__(
        self,
        num_rows: int = 8,
        steps: int = 10,
        every_n_epochs: int = 1,
        seed: int = 0,
        mode: str = "slerp",
        key: str = "interpolation",
        label: Optional[int] = None,
    ) -> None:
        super().__init__()
        if num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {num_rows}")
        if steps < 2:
            raise ValueError(f"steps must be >= 2 (the two endpoints are included), got {steps}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if mode not in ("linear", "slerp"):
            raise ValueError(f"mode must be 'linear' or 'slerp', got {mode!r}")
        if label is not None and label < 0:
            raise ValueError(f"label must be a class index >= 0, got {label}")
        if not key:
            raise ValueError("key must be a non-empty string")
        self.num_rows = num_rows
        self.steps = steps
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.mode = mode
        self.key = key
        self.label = label
        self.last_grid: Optional[Tensor] = None

    def _check_module(self, pl_module: L.LightningModule) -> None:
        missing = [
            name
            for name, ok in (
                ("latent_dim", hasattr(pl_module, "latent_dim")),
                ("noise(n, generator=None)", callable(getattr(pl_module, "noise", None))),
                ("generate(z, labels=None)", callable(getattr(pl_module, "generate", None))),
            )
            if not ok
        ]
        if missing:
            raise TypeError(
                f"InterpolationCallback needs a module with a latent space: {type(pl_module).__name__} must "
                f"implement {', '.join(missing)} (generate runs the generator on given noise in eval mode)"
            )
        num_classes = _num_classes(pl_module)
        if self.label is not None:
            if num_classes == 0:
                raise ValueError(
                    f"InterpolationCallback got label={self.label}, but {type(pl_module).__name__} is unconditional "
                    "(num_classes is 0 or missing): drop `label`"
                )
            _check_label(self.label, num_classes, "InterpolationCallback label")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check that the module exposes a latent space before training starts."""
        self._check_module(pl_module)

    def render(self, pl_module: L.LightningModule) -> Tensor:
        """Generate the interpolation grid, store it in ``last_grid`` and return it."""
        self._check_module(pl_module)
        z = pl_module.noise(2 * self.num_rows, generator=torch.Generator().manual_seed(self.seed))
        z0, z1 = z[: self.num_rows], z[self.num_rows :]
        t = torch.linspace(0, 1, self.steps, dtype=torch.float64)
        interpolate = slerp if self.mode == "slerp" else lerp
        # The angle is computed in float64 on the CPU (exact endpoints, no NaN near parallel pairs), then moved back.
        flat0, flat1 = (v.detach().cpu().double().flatten(1) for v in (z0, z1))
        path = interpolate(flat0, flat1, t)  # (rows, steps, latent size)
        path = path.reshape(self.num_rows * self.steps, *z.shape[1:]).to(device=z.device, dtype=z.dtype)
        num_classes = _num_classes(pl_module)
        with torch.no_grad():
            if num_classes == 0:
                images = pl_module.generate(path)
            else:
                rows = torch.arange(self.num_rows, device=z.device)
                row_labels = torch.full_like(rows, self.label) if self.label is not None else rows % num_classes
                images = pl_module.generate(path, labels=row_labels.repeat_interleave(self.steps))
        self.last_grid = images_to_grid(images, self.steps)
        return self.last_grid

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the grid on rank zero at the end of every ``every_n_epochs``-th epoch."""
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        if not (trainer.is_global_zero or samples_collectively(pl_module)):
            return
        grid = self.render(pl_module)  # on every rank when sampling is collective (sharded nets)
        if trainer.is_global_zero:
            log_image(trainer, self.key, grid_to_uint8(grid), step=trainer.global_step)
