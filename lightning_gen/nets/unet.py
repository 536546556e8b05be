"""Noise-prediction nets for diffusion models: a small DDPM U-Net for images and a time-conditioned MLP for vectors.

Both map ``(x_t, t)`` to a prediction of the noise with the shape of ``x_t``, take ``t`` as integer step indices
``(B,)`` and expose ``data_shape`` (the shape of one sample). With ``num_classes`` set they are class-conditional,
``(x_t, t, labels)``, for classifier-free guidance (Ho & Salimans 2022): a learned embedding of the label (``0 ..
num_classes - 1``, or ``num_classes``, the null label, for "no class") is added to the time embedding.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.checks import value_checks_enabled
from lightning_gen.nets.mlp import make_activation

__all__ = ["timestep_embedding", "UNet", "MLPDenoiser"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``(B,)`` -> ``(B, dim)`` (Vaswani et al. 2017, sec. 3.5).

    The first half holds ``cos(t * f_k)``, the second ``sin(t * f_k)`` with frequencies ``f_k = max_period^(-k/half)``,
    ``k = 0 .. half-1``; an odd ``dim`` gets a trailing zero column.
    """
    if dim < 1:
        raise ValueError(f"the embedding dimension must be >= 1, got {dim}")
    if t.dim() != 1:
        raise ValueError(f"timesteps must have shape (batch,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(t.shape[0], 1)], dim=1)
    return emb


def _check_num_classes(num_classes: Optional[int]) -> int:
    """``num_classes`` as an int (0 when ``None``); raise unless it is ``None`` or a positive int."""
    if num_classes is None:
        return 0
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (e.g. 10 for MNIST) or None (unconditional), "
                         f"got {num_classes!r}")
    return num_classes


class _LabelEmbedding(nn.Embedding):
    """One learned vector per class plus a last one for the null label (``num_classes``): added to the time
    embedding of a class-conditional denoiser (Ho & Salimans 2022)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__(num_classes + 1, dim)
        self.num_classes = num_classes

    def embed(self, labels: Optional[Tensor], batch: int, who: str) -> Tensor:
        """The embeddings ``(batch, dim)`` of ``labels`` (one label is repeated), checked against the range."""
        if labels is None:
            raise ValueError(
                f"{who} is class-conditional (num_classes={self.num_classes}): call it as net(x_t, t, labels) with "
                f"labels in 0..{self.num_classes} ({self.num_classes}: the null label, no class)"
            )
        labels = labels.reshape(-1)
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ValueError(f"{who} labels must be integer class indices, got dtype {labels.dtype}")
        if labels.numel() == 1:
            labels = labels.expand(batch)
        if labels.numel() != batch:
            raise ValueError(f"{who} got {labels.numel()} labels for a batch of {batch}")
        if value_checks_enabled() and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
            raise ValueError(
                f"{who} labels must lie in 0..{self.num_classes} ({self.num_classes}: the null label), got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return super().forward(labels.long())


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each (the largest power of two that allows it).

    One channel per group would normalize away the per-channel time-embedding shift added before it.
    """
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and (channels // g >= 4 or g == 1))
    return nn.GroupNorm(groups, channels)


def _zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters (residual branches and the output start as the identity / zero)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResidualBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice with the time embedding added in between, plus a (1x1 when needed) skip."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(time_dim, out_ch)
        self.norm2 = _group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _AttentionBlock(nn.Module):
    """Single-head self-attention over all pixels with a residual connection (used at the lowest resolution)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """A small DDPM U-Net (Ho et al. 2020, app. B): residual blocks with GroupNorm, SiLU and a sinusoidal time
    embedding, strided-conv downsampling, nearest-neighbour upsampling, optional attention at the lowest resolution
    and a zero-initialized output layer.

    ``num_classes`` makes it class-conditional: ``forward(x_t, t, labels)`` adds a learned embedding of each label
    (``num_classes + 1`` entries, the last the null label ``num_classes``) to the time embedding; ``None`` leaves the
    net (and its state-dict keys) unconditional.

    ``len(channel_mults)`` resolution levels with ``len(channel_mults) - 1`` downsamplings, so ``image_size`` must be
    divisible by ``2 ** (len(channel_mults) - 1)`` (28 with ``(1, 2, 2)``: 28 -> 14 -> 7).
    ``forward(x_t, t)`` returns the predicted noise, shaped like ``x_t``.
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        attention: bool = True,
        num_classes: Optional[int] = None,
    ) -> None:
        """Build the net for ``channels`` x ``image_size`` x ``image_size`` inputs (``num_classes`` classes + the null
        label when given)."""
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        mults = [int(m) for m in channel_mults]
        if channels < 1 or base_channels < 1 or num_res_blocks < 0 or not mults or min(mults) < 1:
            raise ValueError(
                "UNet needs channels >= 1, base_channels >= 1, num_res_blocks >= 0 and a non-empty channel_mults of "
                f"positive ints, got channels={channels}, base_channels={base_channels}, "
                f"num_res_blocks={num_res_blocks}, channel_mults={list(channel_mults)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        factor = 2 ** (len(mults) - 1)
        if image_size < 1 or image_size % factor:
            raise ValueError(
                f"UNet with {len(mults)} levels halves the image {len(mults) - 1} times, so image_size must be "
                f"divisible by {factor}; got {image_size}. Use fewer channel_mults (e.g. (1, 2, 2) for 28 px) or "
                "resize/pad the images."
            )
        self.channels, self.image_size = int(channels), int(image_size)
        self.data_shape: tuple[int, ...] = (self.channels, self.image_size, self.image_size)
        self._factor = factor
        time_dim = 4 * base_channels
        self._embed_dim = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        if self.num_classes:
            self.label_embedding = _LabelEmbedding(self.num_classes, time_dim)
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                self.down.append(_ResidualBlock(ch, base_channels * mult, time_dim, dropout))
                ch = base_channels * mult
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = _ResidualBlock(ch, ch, time_dim, dropout)
        self.mid_attn = _AttentionBlock(ch) if attention else nn.Identity()
        self.mid2 = _ResidualBlock(ch, ch, time_dim, dropout)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(_ResidualBlock(ch + skips.pop(), base_channels * mult, time_dim, dropout))
                ch = base_channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
        self.norm_out = _group_norm(ch)
        self.conv_out = _zero_(nn.Conv2d(ch, channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Predict the noise in ``x`` ``(B, C, H, W)`` at integer steps ``t`` ``(B,)`` (given ``labels`` ``(B,)`` when
        class-conditional)."""
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[-2] % self._factor or x.shape[-1] % self._factor:
            raise ValueError(
                f"UNet expects images (B, {self.channels}, H, W) with H and W divisible by {self._factor}, "
                f"got {tuple(x.shape)}"
            )
        emb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(x.shape[0]), self._embed_dim))
        emb = _add_label(self, emb, labels, x.shape[0])
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ResidualBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, _ResidualBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MLPDenoiser(nn.Module):
    """Time-conditioned MLP noise predictor for vector data ``(B, data_dim)``: each hidden layer adds a learned
    projection of the sinusoidal time embedding before its activation; the output layer is zero-initialized.

    ``num_classes`` makes it class-conditional, ``forward(x_t, t, labels)``, as :class:`UNet`."""

    def __init__(
        self,
        data_dim: int = 2,
        hidden_dims: Sequence[int] = (256, 256, 256),
        time_embed_dim: int = 64,
        activation: str = "silu",
        num_classes: Optional[int] = None,
    ) -> None:
        """Build the MLP for ``data_dim``-dimensional data (``num_classes`` classes + the null label when given)."""
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        if data_dim < 1 or time_embed_dim < 1 or not hidden_dims:
            raise ValueError(
                f"MLPDenoiser needs data_dim >= 1, time_embed_dim >= 1 and at least one hidden layer, got "
                f"data_dim={data_dim}, time_embed_dim={time_embed_dim}, hidden_dims={list(hidden_dims)}"
            )
        self.data_dim = int(data_dim)
        self.data_shape: tuple[int, ...] = (self.data_dim,)
        self.time_embed_dim = int(time_embed_dim)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, time_embed_dim), make_activation(activation), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if self.num_classes:
            self.label_embedding = _LabelEmbedding(self.num_classes, time_embed_dim)
        dims = [self.data_dim, *[int(d) for d in hidden_dims]]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.time_proj = nn.ModuleList(nn.Linear(time_embed_dim, b) for b in dims[1:])
        self.act = make_activation(activation)
        self.out = _zero_(nn.Linear(dims[-1], self.data_dim))

    def forward(self, x: Tensor, t: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Predict the noise in ``x`` ``(B, data_dim)`` at integer steps ``t`` ``(B,)`` (given ``labels`` ``(B,)``
        when class-conditional)."""
        shape = x.shape
        h = x.reshape(shape[0], -1)
        if h.shape[1] != self.data_dim:
            raise ValueError(f"MLPDenoiser expects {self.data_dim} values per sample, got input of shape {tuple(shape)}")
        emb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(shape[0]), self.time_embed_dim))
        emb = _add_label(self, emb, labels, shape[0])
        for layer, proj in zip(self.layers, self.time_proj):
            h = self.act(layer(h) + proj(emb))
        return self.out(h).reshape(shape)


def _add_label(net: nn.Module, emb: Tensor, labels: Optional[Tensor], batch: int) -> Tensor:
    """The time embedding plus the label embedding of a class-conditional net; an unconditional one refuses labels."""
    if not net.num_classes:
        if labels is not None:
            raise ValueError(f"{type(net).__name__} is unconditional (num_classes None) but got labels: build it with "
                             "num_classes to condition on classes")
        return emb
    return emb + net.label_embedding.embed(labels, batch, type(net).__name__)
