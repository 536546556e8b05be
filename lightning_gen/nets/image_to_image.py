"""Image-to-image nets: the CycleGAN ResNet generator (Zhu et al. 2017), the pix2pix U-Net generator and the
PatchGAN discriminator (Isola et al. 2017).

All three follow the papers' reference layouts (appendix of each paper) with sizes and channels taken from
arguments; weights are initialised N(0, 0.02) (``init_dcgan_weights_``), as both papers do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_gen.nets.layers import init_dcgan_weights_

__all__ = [
    "NORM_LAYERS",
    "make_norm_2d",
    "ResnetBlock",
    "ResnetGenerator",
    "UNetGenerator",
    "PatchGANDiscriminator",
    "patchgan_receptive_field",
]

NORM_LAYERS: tuple[str, ...] = ("instance", "batch", "none")


def _check_norm(norm: str) -> None:
    if norm not in NORM_LAYERS:
        raise ValueError(f"norm must be one of {list(NORM_LAYERS)}, got {norm!r}")


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")


def make_norm_2d(norm: str, num_features: int) -> nn.Module:
    """Normalization by name: ``"instance"`` (no affine or running stats, as CycleGAN), ``"batch"``, ``"none"``."""
    _check_norm(norm)
    if norm == "instance":
        return nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(num_features)
    return nn.Identity()


def _conv_bias(norm: str) -> bool:
    # BatchNorm's shift makes a conv bias redundant; InstanceNorm without affine and no norm keep it (as the
    # reference code does for instance norm).
    return norm != "batch"


def _check_image(x: Tensor, in_channels: int, multiple: int, minimum: int, net: str, hint: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{net} expects images of shape (B, {in_channels}, H, W) (in_channels={in_channels}), got "
            f"{tuple(x.shape)}"
        )
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or h < minimum or w < minimum:
        raise ValueError(
            f"{net} needs H and W divisible by {multiple} and at least {minimum} ({hint}), got {h}x{w}; resize or "
            f"crop your images (e.g. {max(minimum, (h // multiple) * multiple)}x"
            f"{max(minimum, (w // multiple) * multiple)})"
        )


class ResnetBlock(nn.Module):
    """Residual block ``x + conv-norm-relu-conv-norm(x)`` with 3x3 convs and reflection padding (CycleGAN ``R``)."""

    def __init__(self, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive(channels=channels)
        _check_dropout(dropout)
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm_2d(norm, channels),
            nn.ReLU(),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm_2d(norm, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` plus the residual branch."""
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN generator (Zhu et al. 2017, appendix 7.2; Johnson et al. 2016): images to images in [-1, 1].

    ``c7s1-k, d2k, d4k, R4k x num_blocks, u2k, uk, c7s1-out`` with ``k = base_channels``: a 7x7 conv, two stride-2
    3x3 downsamplings, residual blocks, two stride-2 transposed-conv upsamplings and a 7x7 conv with Tanh;
    reflection padding on the 7x7 and residual convs. The paper uses 9 blocks for 256 px and 6 for 128 px.
    H and W must be multiples of 4 and at least 8 (the bottleneck is H/4 x W/4 and reflection needs > 1 pixel).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        num_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels)
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        _check_norm(norm)
        _check_dropout(dropout)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        bias = _conv_bias(norm)
        k = int(base_channels)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, k, 7, bias=bias),
            make_norm_2d(norm, k),
            nn.ReLU(),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(k * mult, k * mult * 2, 3, 2, 1, bias=bias),
                make_norm_2d(norm, k * mult * 2),
                nn.ReLU(),
            ]
        layers += [ResnetBlock(4 * k, norm, dropout) for _ in range(num_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(k * mult, k * mult // 2, 3, 2, 1, output_padding=1, bias=bias),
                make_norm_2d(norm, k * mult // 2),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(k, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_dcgan_weights_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` in [-1, 1]."""
        _check_image(x, self.in_channels, 4, 8, type(self).__name__, "two stride-2 downsamplings")
        return self.model(x)


class _UNetLevel(nn.Module):
    """One U-Net level: ``down -> inner -> up`` with the input concatenated to the output (skip connection)."""

    def __init__(self, down: nn.Module, inner: nn.Module | None, up: nn.Module, skip: bool) -> None:
        super().__init__()
        self.down = down
        self.inner = inner if inner is not None else nn.Identity()
        self.up = up
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        y = self.up(self.inner(self.down(x)))
        return torch.cat([x, y], dim=1) if self.skip else y  # skip connection: encoder features first


class UNetGenerator(nn.Module):
    """pix2pix U-Net generator (Isola et al. 2017, appendix 6.1.1): images to images in [-1, 1] with skips.

    Encoder ``C64-C128-C256-C512-C512-...`` (4x4 stride-2 convs, LeakyReLU 0.2, no norm on the first and the
    innermost layer), decoder of stride-2 transposed convs (ReLU) whose inputs are concatenated with the mirrored
    encoder features, Tanh output. Channels are ``base_channels * min(2^i, 8)``. Dropout (0.5 in the paper) is
    applied after the first ``num_dropout_layers`` decoder layers (3 in the paper's ``CD512-CD512-CD512``; the
    reference code shifts them one level out). ``num_downs=8`` takes 256 px to a 1x1 bottleneck, 7 suits 128 px;
    H and W must be divisible by ``2**num_downs``. Note: the paper keeps dropout on at test time as the noise
    source; ``eval()`` turns it off here, so call ``train()`` on the dropout layers if you want that behaviour.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: float = 0.5,
        num_dropout_layers: int = 3,
    ) -> None:
        super().__init__()
        _check_positive(
            in_channels=in_channels, out_channels=out_channels, base_channels=base_channels, num_downs=num_downs
        )
        if num_dropout_layers < 0:
            raise ValueError(f"num_dropout_layers must be >= 0, got {num_dropout_layers}")
        _check_norm(norm)
        _check_dropout(dropout)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.num_downs = int(num_downs)
        bias = _conv_bias(norm)
        k = int(base_channels)
        widths = [k * min(2**i, 8) for i in range(num_downs)]  # encoder output channels, outermost first
        # Built innermost-first; decoder layer j (0 = innermost) has dropout if j < num_dropout_layers.
        inner: nn.Module | None = None
        for level in range(num_downs - 1, -1, -1):
            outermost, innermost = level == 0, level == num_downs - 1
            c_in = in_channels if outermost else widths[level - 1]
            c_mid = widths[level]
            down: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
            down.append(nn.Conv2d(c_in, c_mid, 4, 2, 1, bias=bias or outermost or innermost))
            if not (outermost or innermost):
                down.append(make_norm_2d(norm, c_mid))
            up_in = c_mid if innermost else 2 * c_mid
            up: list[nn.Module] = [nn.ReLU()]
            if outermost:
                up += [nn.ConvTranspose2d(up_in, out_channels, 4, 2, 1), nn.Tanh()]
            else:
                up += [nn.ConvTranspose2d(up_in, c_in, 4, 2, 1, bias=bias), make_norm_2d(norm, c_in)]
                decoder_index = num_downs - 1 - level
                if dropout > 0 and decoder_index < num_dropout_layers:
                    up.append(nn.Dropout(dropout))
            inner = _UNetLevel(nn.Sequential(*down), inner, nn.Sequential(*up), skip=not outermost)
        assert inner is not None
        self.model = inner
        init_dcgan_weights_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` in [-1, 1]."""
        m = 2**self.num_downs
        _check_image(x, self.in_channels, m, m, type(self).__name__, f"num_downs={self.num_downs} halvings")
        return self.model(x)


def patchgan_receptive_field(num_layers: int = 3, kernel_size: int = 4) -> int:
    """Receptive field in pixels of one PatchGAN output: ``1 + sum_i (k - 1) * prod_{j<i} s_j`` (70 for 3 layers)."""
    strides = [2] * num_layers + [1, 1]
    field, jump = 1, 1
    for s in strides:
        field += (kernel_size - 1) * jump
        jump *= s
    return field


class PatchGANDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, appendix 6.1.2): a map ``(B, 1, h, w)`` of raw logits per patch.

    ``C64-C128-C256-C512`` then a 1-channel conv: ``num_layers`` 4x4 stride-2 convs, one 4x4 stride-1 conv and a
    4x4 stride-1 output conv, LeakyReLU 0.2, no norm on the first layer; ``num_layers=3`` gives the 70x70
    PatchGAN (``receptive_field``). For pix2pix's conditional D pass ``in_channels = input + output channels``
    and feed ``torch.cat([condition, image], 1)``. Output side ``H / 2**num_layers - 2`` for H divisible by it.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, base_channels=base_channels, num_layers=num_layers)
        _check_norm(norm)
        self.in_channels = int(in_channels)
        self.num_layers = int(num_layers)
        bias = _conv_bias(norm)
        k = int(base_channels)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, k, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = k
        for n in range(1, num_layers + 1):
            nxt = k * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(ch, nxt, 4, stride, 1, bias=bias), make_norm_2d(norm, nxt), nn.LeakyReLU(0.2)]
            ch = nxt
        # with the first conv that makes num_layers stride-2 convs, then one stride-1 conv before the output conv
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        init_dcgan_weights_(self)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the patch that one output logit sees (70 for ``num_layers=3``)."""
        return patchgan_receptive_field(self.num_layers)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size ``(h, w)`` of the logit map for ``height x width`` inputs."""

        def side(n: int) -> int:
            for s in [2] * self.num_layers + [1, 1]:
                n = (n + 2 - 4) // s + 1
            return n

        return side(height), side(width)

    def forward(self, x: Tensor) -> Tensor:
        """Score images ``(B, in_channels, H, W)``; return logits ``(B, 1, h, w)``, one per overlapping patch."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} expects images of shape (B, {self.in_channels}, H, W) (in_channels={self.in_channels}; "
                f"for a conditional pix2pix D that is input + output channels), got {tuple(x.shape)}"
            )
        h, w = self.output_shape(x.shape[-2], x.shape[-1])
        if h < 1 or w < 1:
            need = 3 * 2**self.num_layers
            raise ValueError(
                f"{name} with num_layers={self.num_layers} needs H and W of at least {need}, got "
                f"{x.shape[-2]}x{x.shape[-1]}; use larger images or fewer layers"
            )
        return self.model(x)
