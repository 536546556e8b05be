"""RealNVP building blocks (Dinh et al. 2017): binary masks, affine coupling layers, and vector and image flows; the
Glow layers (Kingma & Dhariwal 2018) ActNorm and the invertible 1x1 convolution.

Every flow maps data to latent with ``forward(x) -> (z, log_det)``, where ``z`` has the data's shape and
``log_det`` is ``log |det dz/dx|`` per sample, shape ``(B,)``; ``inverse(z) -> x`` undoes it exactly (up to float
rounding). Each flow has a ``data_shape`` attribute, the shape of one sample without the batch dimension.

Under ``torch.autocast`` the coupling nets run in bfloat16/float16 but every log-determinant is summed and
accumulated in float32 (float64 for a float64 flow): a sum over thousands of dimensions would lose several nats
in bfloat16.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_gen.nets.mlp import make_activation, mlp
from lightning_gen.nets.splines import rational_quadratic_spline, spline_parameter_count
from lightning_gen.precision import full_precision

__all__ = [
    "checkerboard_mask",
    "channel_mask",
    "half_mask",
    "squeeze2d",
    "unsqueeze2d",
    "AffineCoupling",
    "SplineCoupling",
    "COUPLINGS",
    "CouplingResNet",
    "ActNorm",
    "InvertibleConv1x1",
    "FlowSequence",
    "VectorRealNVP",
    "ImageRealNVP",
]


# -- masks: 1 marks the entries a coupling keeps (and conditions on), 0 the entries it transforms --------------------
def checkerboard_mask(height: int, width: int, parity: int = 0) -> Tensor:
    """A ``(1, H, W)`` checkerboard of ones where ``(row + col) % 2 == parity`` (broadcasts over channels)."""
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    return ((rows + cols) % 2 == parity % 2).float().unsqueeze(0)


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """A ``(C, 1, 1)`` mask of ones on the first half of the channels (``parity=0``) or on the second half."""
    if channels < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got {channels}")
    first = torch.zeros(channels)
    first[: channels // 2] = 1.0
    return (first if parity % 2 == 0 else 1.0 - first).view(channels, 1, 1)


def half_mask(dim: int, parity: int = 0) -> Tensor:
    """A ``(D,)`` mask of ones on the first ``ceil(D/2)`` coordinates (``parity=0``) or on the others."""
    if dim < 2:
        raise ValueError(f"a half-split mask needs at least 2 dimensions, got {dim}")
    first = torch.zeros(dim)
    first[: (dim + 1) // 2] = 1.0
    return first if parity % 2 == 0 else 1.0 - first


def squeeze2d(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 spatial block becomes 4 channels (volume preserving)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze2d(x: Tensor) -> Tensor:
    """The inverse of :func:`squeeze2d`: ``(B, 4C, H, W) -> (B, C, 2H, 2W)``."""
    b, c4, h, w = x.shape
    x = x.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c4 // 4, 2 * h, 2 * w)


# -- coupling layer ---------------------------------------------------------------------------------------------------
class AffineCoupling(nn.Module):
    """Affine coupling ``y = m * x + (1 - m) * (x * exp(s(m x)) + t(m x))`` (Dinh et al. 2017, eq. 9).

    ``mask`` (shape of one sample, or broadcastable to it) marks the kept entries with 1. ``net`` maps the masked
    input ``m * x`` (with the mask appended as one more channel when ``mask_as_input``) to ``2 * C`` channels (or
    ``2 * D`` features): the raw log-scale and the shift. The log-scale is bounded as ``scale * tanh(raw)`` with a
    learned per-channel ``scale`` (``channels`` of them, default ``mask.shape[0]``; starting at ``scale_init``),
    which keeps early training stable. Zero-initialize the net's last layer to start at the identity.
    """

    def __init__(
        self,
        mask: Tensor,
        net: nn.Module,
        mask_as_input: bool = False,
        channels: Optional[int] = None,
        scale_init: float = 1.0,
    ) -> None:
        super().__init__()
        if mask_as_input and (mask.dim() != 3 or mask.shape[0] != 1):
            raise ValueError(f"mask_as_input needs a (1, H, W) spatial mask, got shape {tuple(mask.shape)}")
        self.register_buffer("mask", mask.float().clone())
        self.net = net
        self.mask_as_input = bool(mask_as_input)
        channels = int(mask.shape[0]) if channels is None else int(channels)
        self.scale = nn.Parameter(torch.full((channels,) + (1,) * (mask.dim() - 1), float(scale_init)))

    def _scale_shift(self, x_kept: Tensor) -> tuple[Tensor, Tensor]:
        inputs = x_kept
        if self.mask_as_input:
            inputs = torch.cat([x_kept, self.mask.expand(x_kept.shape[0], 1, *x_kept.shape[2:])], dim=1)
        raw_s, t = self.net(inputs).chunk(2, dim=1)
        free = 1.0 - self.mask
        return free * self.scale * torch.tanh(raw_s), free * t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x``; returns ``(y, log|det dy/dx|)`` with the log-determinant per sample, ``(B,)``, summed in
        float32 at least."""
        s, t = self._scale_shift(x * self.mask)
        return x * torch.exp(s) + t, full_precision(s).flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`forward`: the kept entries are unchanged, so ``s`` and ``t`` are recomputed from them."""
        s, t = self._scale_shift(y * self.mask)
        return (y - t) * torch.exp(-s)


class SplineCoupling(nn.Module):
    """Rational-quadratic spline coupling (Durkan et al. 2019): ``y = m * x + (1 - m) * RQS(x; theta(m x))``.

    ``mask`` marks the kept entries with 1, as in :class:`AffineCoupling`. ``net`` maps the masked input (with the
    mask appended as one more channel when ``mask_as_input``) to ``C * (3 * num_bins - 1)`` channels (or
    ``D * (3 * num_bins - 1)`` features): for every entry, ``num_bins`` widths, ``num_bins`` heights and
    ``num_bins - 1`` interior derivatives of a monotonic spline on ``[-bound, bound]``, the identity outside (see
    :func:`~lightning_gen.nets.splines.rational_quadratic_spline`). Each entry's parameters are the
    ``3 * num_bins - 1`` consecutive channels of its channel. Zero-initialize the net's last layer to start at the
    identity.
    """

    def __init__(
        self,
        mask: Tensor,
        net: nn.Module,
        num_bins: int = 8,
        bound: float = 5.0,
        mask_as_input: bool = False,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        super().__init__()
        if mask_as_input and (mask.dim() != 3 or mask.shape[0] != 1):
            raise ValueError(f"mask_as_input needs a (1, H, W) spatial mask, got shape {tuple(mask.shape)}")
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.register_buffer("mask", mask.float().clone())
        self.net = net
        self.mask_as_input = bool(mask_as_input)
        self.num_bins = int(num_bins)
        self.bound = float(bound)
        self.limits = {"min_bin_width": float(min_bin_width), "min_bin_height": float(min_bin_height),
                       "min_derivative": float(min_derivative)}

    def _spline(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        kept = self.mask.bool()
        inputs = x * self.mask
        if self.mask_as_input:
            inputs = torch.cat([inputs, self.mask.expand(x.shape[0], 1, *x.shape[2:])], dim=1)
        raw = self.net(inputs)
        per_entry = spline_parameter_count(self.num_bins)
        if raw.shape[1] != x.shape[1] * per_entry or raw.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"SplineCoupling's net must output {x.shape[1]} x {per_entry} = {x.shape[1] * per_entry} channels "
                f"({self.num_bins} bins) of the input's size, got shape {tuple(raw.shape)} for input {tuple(x.shape)}"
            )
        params = raw.unflatten(1, (x.shape[1], per_entry)).movedim(2, -1)
        widths, heights, derivatives = params.split([self.num_bins, self.num_bins, self.num_bins - 1], dim=-1)
        y, log_slope = rational_quadratic_spline(x, widths, heights, derivatives, inverse=inverse, bound=self.bound,
                                                 **self.limits)
        y = torch.where(kept, x.to(y.dtype), y)
        return y, torch.where(kept, torch.zeros_like(log_slope), log_slope).flatten(1).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x``; returns ``(y, log|det dy/dx|)`` with the log-determinant per sample, ``(B,)``, in float32
        at least (the spline's arithmetic too)."""
        return self._spline(x, inverse=False)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`forward`: the kept entries are unchanged, so the spline is recomputed from them and inverted."""
        return self._spline(y, inverse=True)[0]


#: The coupling layers a flow is built from: each conditions its ``net`` on the kept entries of its input.
COUPLINGS = (AffineCoupling, SplineCoupling)


def _check_coupling(coupling: str) -> None:
    if coupling not in ("affine", "spline"):
        raise ValueError(f"coupling must be 'affine' or 'spline', got {coupling!r}")


def _log_det_accumulator(x: Tensor) -> Tensor:
    """Zeros ``(B,)`` to sum the couplings' log-determinants into: float32 at least, whatever ``x``'s dtype."""
    return torch.zeros(x.shape[0], dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)


def _zero_last(module: nn.Module) -> None:
    last = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


class CouplingResNet(nn.Module):
    """The s/t net of an image coupling: 3x3 conv, ``num_blocks`` residual blocks (conv-act-conv), act, 3x3 conv.

    No batch statistics are used, so a sample's output never depends on the rest of its batch (exact densities
    in training mode too). The last conv is zero-initialized (the coupling starts as the identity).
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int = 64, num_blocks: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                make_activation(activation),
                nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
                make_activation(activation),
                nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            )
            for _ in range(num_blocks)
        )
        self.head = nn.Sequential(make_activation(activation), nn.Conv2d(hidden_channels, out_channels, 3, padding=1))
        _zero_last(self.head)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


# -- Glow layers (Kingma & Dhariwal 2018) -----------------------------------------------------------------------------
def _wide_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact statistics and inverses, except on MPS, which has no float64 (float32 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _per_sample_positions(x: Tensor) -> int:
    """The number of positions each channel has in one sample: ``H * W`` for images, 1 for vectors."""
    return math.prod(x.shape[2:])


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + bias) * exp(log_scale)`` (Glow, section 3.1), for ``(B, C)`` or ``(B, C, H, W)``.

    Data-dependent initialization: the first forward in training mode sets ``bias`` and ``log_scale`` so that its batch
    has zero mean and unit variance per channel, then sets the ``initialized`` buffer (saved in checkpoints, so a
    resumed or loaded model is never re-initialized). Under ``torch.distributed`` the statistics are those of the
    union of every rank's batch (an all-reduce), so all ranks start from the same parameters. Before that (eval mode,
    or a flow that never trained) the layer is the identity.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.eps = float(eps)
        self.register_buffer("initialized", torch.tensor(False))
        # a host-side copy of `initialized` once known true, so training forwards never read the buffer back from
        # the device (a sync per layer per step on a GPU); loading a state dict forgets it
        self._known_initialized = False

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``bias`` and ``log_scale`` from ``x`` (all ranks' ``x`` under ``torch.distributed``); mark initialized."""
        dims = [d for d in range(x.dim()) if d != 1]
        xf = x.detach().to(_wide_dtype(x.device))
        stats = torch.stack([xf.new_full((x.shape[1],), float(x.numel() // x.shape[1])), xf.sum(dims),
                             (xf**2).sum(dims)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        count, total, squares = stats
        mean = total / count
        std = (squares / count - mean**2).clamp_min(0).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._known_initialized = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log|det dy/dx|)``, the log-determinant ``positions * sum(log_scale)`` per sample, ``(B,)``."""
        if self.training and not self._known_initialized:
            if bool(self.initialized):  # read once (after construction or loading)
                self._known_initialized = True
            else:
                self.initialize(x)
        y = (x + self._view(self.bias, x)) * torch.exp(self._view(self.log_scale, x))
        log_det = full_precision(self.log_scale).sum() * _per_sample_positions(x)
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """``x = y * exp(-log_scale) - bias``."""
        return y * torch.exp(-self._view(self.log_scale, y)) - self._view(self.bias, y)


class InvertibleConv1x1(nn.Module):
    """An invertible 1x1 convolution ``y = W x`` over channels (Glow, section 3.2) in the LU parametrization
    ``W = P L (U + diag(sign * exp(log_s)))``: ``log|det W| = sum(log_s)``, exact and cheap.

    ``P`` and ``sign`` are fixed buffers; ``W`` starts as a random rotation (from ``generator``, or the global RNG).
    Works on ``(B, C)`` and ``(B, C, H, W)``; the log-determinant per sample is ``H * W * sum(log_s)``.
    """

    def __init__(self, channels: int, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"InvertibleConv1x1 needs at least 1 channel, got {channels}")
        q = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("permutation", p.float())
        self.register_buffer("sign", torch.sign(diag).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(diag.abs()).float())

    def weight(self) -> Tensor:
        """The ``(C, C)`` matrix ``W``."""
        eye = torch.eye(self.log_s.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    @staticmethod
    def _mix(w: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return nn.functional.linear(x, w.to(x.dtype))
        return nn.functional.conv2d(x, w.to(x.dtype).view(*w.shape, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(W x, log|det|)``, the log-determinant ``positions * sum(log_s)`` per sample, ``(B,)``."""
        log_det = full_precision(self.log_s).sum() * _per_sample_positions(x)
        return self._mix(self.weight(), x), log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """``W^-1 y`` (the inverse computed in float64 from ``W``, float32 on MPS)."""
        w_inv = torch.linalg.inv(self.weight().to(_wide_dtype(y.device)))
        return self._mix(w_inv, y)


class FlowSequence(nn.Module):
    """Invertible layers applied in order: ``forward`` sums their log-determinants, ``inverse`` undoes them in reverse."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log|det dy/dx|)`` with the log-determinant per sample, ``(B,)``, summed in float32 at least."""
        return _chain_forward(self.layers, x)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`forward`."""
        return _chain_inverse(self.layers, y)


def _chain_forward(layers: Sequence[nn.Module], x: Tensor) -> tuple[Tensor, Tensor]:
    """Apply invertible ``layers`` in order: ``(y, summed log|det|)``, the sum per sample in float32 at least."""
    log_det = _log_det_accumulator(x)
    for layer in layers:
        x, ld = layer(x)
        log_det = log_det + ld
    return x, log_det


def _chain_inverse(layers: Sequence[nn.Module], y: Tensor) -> Tensor:
    """Undo :func:`_chain_forward`: each layer's ``inverse`` in reverse order."""
    for layer in reversed(layers):
        y = layer.inverse(y)
    return y


# -- flows ------------------------------------------------------------------------------------------------------------
class VectorRealNVP(nn.Module):
    """A coupling flow for vectors ``(B, D)``: ``num_couplings`` MLP couplings with alternating half-split masks.

    ``coupling="affine"`` builds RealNVP (Dinh et al. 2017) from :class:`AffineCoupling`; ``coupling="spline"`` a
    neural spline flow (Durkan et al. 2019) from :class:`SplineCoupling`, each with ``num_bins`` rational-quadratic
    bins on ``[-tail_bound, tail_bound]`` (the identity outside: standardize the data or widen the bound).
    """

    def __init__(
        self,
        dim: int = 2,
        num_couplings: int = 8,
        hidden_dims: Sequence[int] = (128, 128),
        activation: str = "relu",
        scale_init: float = 1.0,
        coupling: str = "affine",
        num_bins: int = 8,
        tail_bound: float = 5.0,
    ) -> None:
        super().__init__()
        if num_couplings < 2:
            raise ValueError(f"num_couplings must be >= 2 so that every coordinate is transformed, got {num_couplings}")
        _check_coupling(coupling)
        self.dim = int(dim)
        self.data_shape: tuple[int, ...] = (self.dim,)
        self.coupling = coupling
        couplings = []
        for i in range(num_couplings):
            mask = half_mask(self.dim, parity=i)
            if coupling == "spline":
                net = mlp(self.dim, hidden_dims, self.dim * spline_parameter_count(num_bins), activation)
                layer: nn.Module = SplineCoupling(mask, net, num_bins=num_bins, bound=tail_bound)
            else:
                net = mlp(self.dim, hidden_dims, 2 * self.dim, activation)
                layer = AffineCoupling(mask, net, scale_init=scale_init)
            _zero_last(net)
            couplings.append(layer)
        self.couplings = nn.ModuleList(couplings)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent: ``(z, log|det dz/dx|)``, shapes ``(B, D)`` and ``(B,)``."""
        return _chain_forward(self.couplings, x)

    def inverse(self, z: Tensor) -> Tensor:
        """Latent to data."""
        return _chain_inverse(self.couplings, z)


class ImageRealNVP(nn.Module):
    """Multi-scale RealNVP for images ``(B, C, H, W)`` (Dinh et al. 2017, section 3.6), optionally with Glow's layers.

    ``layout="realnvp"`` (the paper's): each of the first ``num_scales - 1`` scales applies 3 checkerboard couplings,
    a squeeze to ``(4C, H/2, W/2)``, 3 channel couplings, and factors out half of the channels (they go straight to
    the latent); the last scale applies 4 checkerboard couplings. ``num_scales=1`` is the single-scale variant (4
    checkerboard couplings on the full image). H and W must be divisible by ``2 ** (num_scales - 1)``.

    ``layout="glow"`` (Kingma & Dhariwal 2018, figure 2): every scale squeezes first, then applies
    ``steps_per_scale`` channel couplings, and every scale but the last factors out half of the channels; H and W
    must be divisible by ``2 ** num_scales``. It has no full-resolution couplings, so it is about 4 times cheaper
    per coupling on the first scale.

    ``actnorm=True`` puts an :class:`ActNorm` (data-dependent init on the first training batch) before every coupling;
    ``permutation="conv1x1"`` an :class:`InvertibleConv1x1` before every channel coupling (after the ActNorm), which
    mixes the channels so each coupling can condition on any of them. ``coupling="spline"`` uses
    :class:`SplineCoupling` (``num_bins`` rational-quadratic bins on ``[-tail_bound, tail_bound]``, Durkan et al.
    2019) instead of :class:`AffineCoupling`. The defaults build the flow of earlier versions (same parameters, so
    their checkpoints load). The latent ``z`` has the image's shape: the factored-out pieces and
    the last scale's output, flattened and concatenated in that order.
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | Sequence[int] = 28,
        num_scales: int = 2,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        activation: str = "relu",
        actnorm: bool = False,
        permutation: str = "none",
        layout: str = "realnvp",
        steps_per_scale: int = 4,
        coupling: str = "affine",
        num_bins: int = 8,
        tail_bound: float = 5.0,
    ) -> None:
        super().__init__()
        _check_coupling(coupling)
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        if permutation not in ("none", "conv1x1"):
            raise ValueError(f"permutation must be 'none' or 'conv1x1', got {permutation!r}")
        if layout not in ("realnvp", "glow"):
            raise ValueError(f"layout must be 'realnvp' or 'glow', got {layout!r}")
        if layout == "glow" and steps_per_scale < 2:
            raise ValueError(f"steps_per_scale must be >= 2 so that every channel is transformed, got {steps_per_scale}")
        glow = layout == "glow"
        halvings = num_scales if glow else num_scales - 1
        factor = 2**halvings
        if height % factor or width % factor:
            raise ValueError(
                f"ImageRealNVP with layout={layout!r} and num_scales={num_scales} halves the image {halvings} times, so "
                f"its height and width must be divisible by {factor}; got {height}x{width}. Use fewer scales or "
                f"another image size."
            )
        self.data_shape: tuple[int, ...] = (int(channels), int(height), int(width))
        self.num_scales = int(num_scales)
        self.layout = layout
        self.coupling = coupling

        def step(mask: Tensor, c: int) -> nn.Module:
            spatial = mask.shape[0] == 1  # checkerboard: the net also sees the mask, to know which pixels it has
            if coupling == "spline":
                net = CouplingResNet(c + int(spatial), c * spline_parameter_count(num_bins), hidden_channels,
                                     num_blocks, activation)
                layer: nn.Module = SplineCoupling(mask, net, num_bins=num_bins, bound=tail_bound, mask_as_input=spatial)
            else:
                net = CouplingResNet(c + int(spatial), 2 * c, hidden_channels, num_blocks, activation)
                layer = AffineCoupling(mask, net, mask_as_input=spatial, channels=c)
            layers = ([ActNorm(c)] if actnorm else []) + (
                [InvertibleConv1x1(c)] if permutation == "conv1x1" and not spatial else [])
            return FlowSequence(*layers, layer) if layers else layer

        c, h, w = self.data_shape
        self.scales = nn.ModuleList()
        self._squeezes: list[bool] = []
        self._piece_shapes: list[tuple[int, int, int]] = []  # shapes of the latent pieces, in output order
        for s in range(self.num_scales):
            last = s == self.num_scales - 1
            n_checker = 0 if glow else (4 if last else 3)
            checker = nn.ModuleList(step(checkerboard_mask(h, w, parity=i), c) for i in range(n_checker))
            chan = nn.ModuleList()
            squeeze = glow or not last
            if squeeze:
                c, h, w = 4 * c, h // 2, w // 2
                chan = nn.ModuleList(step(channel_mask(c, parity=i), c) for i in range(steps_per_scale if glow else 3))
            if not last:
                self._piece_shapes.append((c - c // 2, h, w))  # ceil half factored out
                c = c // 2
            self._squeezes.append(squeeze)
            self.scales.append(nn.ModuleDict({"checkerboard": checker, "channel": chan}))
        self._piece_shapes.append((c, h, w))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image to latent: ``(z, log|det dz/dx|)``, shapes ``(B, C, H, W)`` and ``(B,)``."""
        log_det = _log_det_accumulator(x)
        pieces = []
        h = x
        for s, scale in enumerate(self.scales):
            for coupling in scale["checkerboard"]:
                h, ld = coupling(h)
                log_det = log_det + ld
            if self._squeezes[s]:
                h = squeeze2d(h)
            for coupling in scale["channel"]:
                h, ld = coupling(h)
                log_det = log_det + ld
            if s < self.num_scales - 1:
                out = h.shape[1] - h.shape[1] // 2
                pieces.append(h[:, :out])
                h = h[:, out:]
        pieces.append(h)
        z = torch.cat([p.flatten(1) for p in pieces], dim=1).view(x.shape[0], *self.data_shape)
        return z, log_det

    def inverse(self, z: Tensor) -> Tensor:
        """Latent to image."""
        flat = z.flatten(1)
        sizes = [math.prod(shape) for shape in self._piece_shapes]
        pieces = [p.reshape(z.shape[0], *shape) for p, shape in zip(flat.split(sizes, dim=1), self._piece_shapes)]
        h = pieces[-1]
        for s in reversed(range(self.num_scales)):
            scale = self.scales[s]
            if s < self.num_scales - 1:
                h = torch.cat([pieces[s], h], dim=1)
            for coupling in reversed(scale["channel"]):
                h = coupling.inverse(h)
            if self._squeezes[s]:
                h = unsqueeze2d(h)
            for coupling in reversed(scale["checkerboard"]):
                h = coupling.inverse(h)
        return h
