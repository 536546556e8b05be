"""RealNVP building blocks (Dinh et al. 2017): binary masks, affine coupling layers, and vector and image flows.

Every flow maps data to latent with ``forward(x) -> (z, log_det)``, where ``z`` has the data's shape and
``log_det`` is ``log |det dz/dx|`` per sample, shape ``(B,)``; ``inverse(z) -> x`` undoes it exactly (up to float
rounding). Each flow has a ``data_shape`` attribute, the shape of one sample without the batch dimension.

Under ``torch.autocast`` the coupling nets run in bfloat16/float16 but every log-determinant is summed and
accumulated in float32 (float64 for a float64 flow): a sum over thousands of dimensions would lose several nats
in bfloat16.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_gen.nets.mlp import make_activation, mlp
from lightning_gen.precision import full_precision

__all__ = [
    "checkerboard_mask",
    "channel_mask",
    "half_mask",
    "squeeze2d",
    "unsqueeze2d",
    "AffineCoupling",
    "CouplingResNet",
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


# -- flows ------------------------------------------------------------------------------------------------------------
class VectorRealNVP(nn.Module):
    """RealNVP for vectors ``(B, D)``: ``num_couplings`` MLP affine couplings with alternating half-split masks."""

    def __init__(
        self,
        dim: int = 2,
        num_couplings: int = 8,
        hidden_dims: Sequence[int] = (128, 128),
        activation: str = "relu",
        scale_init: float = 1.0,
    ) -> None:
        super().__init__()
        if num_couplings < 2:
            raise ValueError(f"num_couplings must be >= 2 so that every coordinate is transformed, got {num_couplings}")
        self.dim = int(dim)
        self.data_shape: tuple[int, ...] = (self.dim,)
        couplings = []
        for i in range(num_couplings):
            net = mlp(self.dim, hidden_dims, 2 * self.dim, activation)
            _zero_last(net)
            couplings.append(AffineCoupling(half_mask(self.dim, parity=i), net, scale_init=scale_init))
        self.couplings = nn.ModuleList(couplings)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent: ``(z, log|det dz/dx|)``, shapes ``(B, D)`` and ``(B,)``."""
        log_det = _log_det_accumulator(x)
        for coupling in self.couplings:
            x, ld = coupling(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        """Latent to data."""
        for coupling in reversed(self.couplings):
            z = coupling.inverse(z)
        return z


class ImageRealNVP(nn.Module):
    """Multi-scale RealNVP for images ``(B, C, H, W)`` (Dinh et al. 2017, section 3.6).

    Each of the first ``num_scales - 1`` scales applies 3 checkerboard couplings, a squeeze to ``(4C, H/2, W/2)``,
    3 channel couplings, and factors out half of the channels (they go straight to the latent); the last scale
    applies 4 checkerboard couplings. ``num_scales=1`` is the single-scale variant (4 checkerboard couplings on
    the full image). H and W must be divisible by ``2 ** (num_scales - 1)``. The latent ``z`` has the image's
    shape: the factored-out pieces and the last scale's output, flattened and concatenated in that order.
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | Sequence[int] = 28,
        num_scales: int = 2,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        factor = 2 ** (num_scales - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"ImageRealNVP with num_scales={num_scales} halves the image {num_scales - 1} times, so its height and "
                f"width must be divisible by {factor}; got {height}x{width}. Use fewer scales or another image size."
            )
        self.data_shape: tuple[int, ...] = (int(channels), int(height), int(width))
        self.num_scales = int(num_scales)

        def coupling(mask: Tensor, c: int) -> AffineCoupling:
            spatial = mask.shape[0] == 1  # checkerboard: the net also sees the mask, to know which pixels it has
            net = CouplingResNet(c + int(spatial), 2 * c, hidden_channels, num_blocks, activation)
            return AffineCoupling(mask, net, mask_as_input=spatial, channels=c)

        c, h, w = self.data_shape
        self.scales = nn.ModuleList()
        self._piece_shapes: list[tuple[int, int, int]] = []  # shapes of the latent pieces, in output order
        for s in range(self.num_scales):
            last = s == self.num_scales - 1
            n_checker = 4 if last else 3
            checker = nn.ModuleList(coupling(checkerboard_mask(h, w, parity=i), c) for i in range(n_checker))
            chan = nn.ModuleList()
            if not last:
                c, h, w = 4 * c, h // 2, w // 2
                chan = nn.ModuleList(coupling(channel_mask(c, parity=i), c) for i in range(3))
                self._piece_shapes.append((c - c // 2, h, w))  # ceil half factored out
                c = c // 2
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
            if s < self.num_scales - 1:
                h = squeeze2d(h)
                for coupling in scale["channel"]:
                    h, ld = coupling(h)
                    log_det = log_det + ld
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
                h = unsqueeze2d(h)
            for coupling in reversed(scale["checkerboard"]):
                h = coupling.inverse(h)
        return h
