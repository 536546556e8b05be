"""DCGAN generator and discriminator for 28, 32 and 64 px images (Radford et al. 2016), optionally conditional."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_gen.nets.layers import (
    ConditionalBatchNorm2d,
    MinibatchStdDev,
    check_images,
    check_labels,
    init_dcgan_weights_,
    maybe_spectral_norm,
    one_hot,
)

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "DCGAN_IMAGE_SIZES", "DCGAN_CONDITIONINGS"]

# image_size -> (side of the first/last feature map, number of stride-2 layers): 28 = 7*2^2, 32 = 4*2^3, 64 = 4*2^4
_PLANS: dict[int, tuple[int, int]] = {28: (7, 2), 32: (4, 3), 64: (4, 4)}
DCGAN_IMAGE_SIZES: tuple[int, ...] = tuple(sorted(_PLANS))
DCGAN_CONDITIONINGS: tuple[str, ...] = ("concat", "batchnorm")  # how a conditional generator takes its labels


def _plan(image_size: int, net: str) -> tuple[int, int]:
    if image_size not in _PLANS:
        raise ValueError(
            f"{net} supports image_size in {list(DCGAN_IMAGE_SIZES)}, got {image_size}; resize your data "
            "(e.g. a Resize transform) or pick one of these sizes"
        )
    return _PLANS[image_size]


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


class DCGANGenerator(nn.Module):
    """DCGAN generator: noise ``(B, latent_dim)`` (plus optional labels) to images ``(B, C, H, W)`` in [-1, 1].

    A bias-free linear projection to ``base_channels * 2^(n-1)`` maps of 4x4 (7x7 for 28 px), then stride-2
    transposed convs halving the channels (BatchNorm + ReLU after each but the last), Tanh output; weights
    N(0, 0.02). Conditional (``num_classes > 0``): with ``conditioning="concat"`` (default; Mirza & Osindero 2014) a
    one-hot label is concatenated to ``z``; with ``conditioning="batchnorm"`` every BatchNorm becomes a class-conditional
    BatchNorm (per-class gain and bias, de Vries et al. 2017, as in SNGAN's and BigGAN's generators) and ``z`` alone is
    projected. Pair either with ``DCGANDiscriminator(projection=True)`` for the projection discriminator.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        image_size: int = 64,
        channels: int = 3,
        base_channels: int = 64,
        num_classes: int = 0,
        conditioning: str = "concat",
    ) -> None:
        super().__init__()
        _check_positive(latent_dim=latent_dim, channels=channels, base_channels=base_channels)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        if conditioning not in DCGAN_CONDITIONINGS:
            raise ValueError(
                f"conditioning must be one of {list(DCGAN_CONDITIONINGS)} (one-hot label concatenated to z, or "
                f"class-conditional BatchNorm), got {conditioning!r}"
            )
        start, n_up = _plan(image_size, type(self).__name__)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.conditioning = conditioning
        # class-conditional BatchNorm only where there are classes; an unconditional net is the same either way
        self._cbn = self.num_classes > 0 and conditioning == "batchnorm"
        concat = self.num_classes if self.num_classes > 0 and not self._cbn else 0

        def norm(ch: int) -> nn.Module:
            return ConditionalBatchNorm2d(ch, self.num_classes) if self._cbn else nn.BatchNorm2d(ch)

        self.image_shape: tuple[int, int, int] = (int(channels), int(image_size), int(image_size))
        self._start = start
        ch = base_channels * 2 ** (n_up - 1)
        self._start_channels = ch
        # Bias-free where BatchNorm follows: BN removes a bias, so it would only be an unused parameter.
        self.project = nn.Linear(self.latent_dim + concat, ch * start * start, bias=False)
        layers: list[nn.Module] = [norm(ch), nn.ReLU()]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), norm(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*layers)
        init_dcgan_weights_(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Generate images ``(B, *image_shape)`` in [-1, 1] from noise ``(B, latent_dim)`` and labels if conditional."""
        name = type(self).__name__
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{name} expects noise of shape (B, {self.latent_dim}) (latent_dim), got {tuple(z.shape)}")
        labels = check_labels(labels, self.num_classes, z.shape[0], name)
        if labels is not None and not self._cbn:
            z = torch.cat([z, one_hot(labels, self.num_classes, z.dtype)], dim=1)
        h = self.project(z).view(z.shape[0], self._start_channels, self._start, self._start)
        if not self._cbn:
            return self.blocks(h)
        for layer in self.blocks:
            h = layer(h, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: images ``(B, C, H, W)`` to one raw score per sample ``(B,)`` (no sigmoid).

    Stride-2 4x4 convs doubling the channels from ``base_channels`` down to 4x4 (7x7 for 28 px), LeakyReLU(0.2),
    BatchNorm after every conv but the first, then a linear score on the flattened maps (the paper's "flattened
    and fed into a single output"); weights N(0, 0.02).

    Options: ``batch_norm=None`` means BatchNorm unless ``spectral_norm`` (WGAN-GP and SNGAN critics use none);
    ``spectral_norm`` wraps every conv/linear/embedding (Miyato et al. 2018); ``minibatch_std`` appends a
    MinibatchStdDev map before the score layer (Karras et al. 2018). Conditional (``num_classes > 0``): one-hot
    label maps are concatenated to the image channels (Mirza & Osindero 2014), or with ``projection=True``
    ``<embed(y), features(x)>`` is added to the score (Miyato & Koyama 2018).
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        base_channels: int = 64,
        num_classes: int = 0,
        projection: bool = False,
        spectral_norm: bool = False,
        minibatch_std: bool = False,
        batch_norm: bool | None = None,
    ) -> None:
        super().__init__()
        _check_positive(channels=channels, base_channels=base_channels)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        if projection and num_classes == 0:
            raise ValueError("projection=True needs a conditional discriminator: set num_classes > 0")
        end, n_down = _plan(image_size, type(self).__name__)
        self.num_classes = int(num_classes)
        self.image_shape: tuple[int, int, int] = (int(channels), int(image_size), int(image_size))
        self.projection = bool(projection)
        self.spectral_norm = bool(spectral_norm)
        self.batch_norm = (not spectral_norm) if batch_norm is None else bool(batch_norm)
        self.minibatch_std = bool(minibatch_std)

        def sn(module: nn.Module) -> nn.Module:
            # DCGAN init first, then spectral norm, so the power-iteration vectors match the initial weight.
            return maybe_spectral_norm(init_dcgan_weights_(module), self.spectral_norm)

        concat_labels = self.num_classes > 0 and not self.projection
        in_ch = channels + (self.num_classes if concat_labels else 0)
        layers: list[nn.Module] = [sn(nn.Conv2d(in_ch, base_channels, 4, 2, 1)), nn.LeakyReLU(0.2)]
        ch = base_channels
        for _ in range(n_down - 1):
            layers.append(sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not self.batch_norm)))
            if self.batch_norm:
                layers.append(init_dcgan_weights_(nn.BatchNorm2d(ch * 2)))
            layers.append(nn.LeakyReLU(0.2))
            ch *= 2
        if self.minibatch_std:
            layers.append(MinibatchStdDev())
            ch += 1
        self.blocks = nn.Sequential(*layers)
        self.feature_dim = ch * end * end
        self.linear = sn(nn.Linear(self.feature_dim, 1))
        self.embed = sn(nn.Embedding(self.num_classes, self.feature_dim)) if self.projection else None

    def _features(self, x: Tensor, labels: Tensor | None) -> Tensor:
        if labels is not None and not self.projection:
            maps = one_hot(labels, self.num_classes, x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], dim=1)
        return self.blocks(x).flatten(1)

    def features(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The flattened input of the score layer, ``(B, feature_dim)`` (for feature matching, Salimans et al. 2016).

        With one-hot conditioning the features depend on the label, so conditional nets need ``labels``; a
        projection net's features do not, and there ``labels`` may be omitted (it is validated when given).
        """
        name = type(self).__name__
        check_images(x, self.image_shape, name)
        if labels is not None or not self.projection:
            labels = check_labels(labels, self.num_classes, x.shape[0], name)
        return self._features(x, labels)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Score a batch of images; returns raw scores of shape ``(B,)``."""
        name = type(self).__name__
        check_images(x, self.image_shape, name)
        labels = check_labels(labels, self.num_classes, x.shape[0], name)
        h = self._features(x, labels)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out
