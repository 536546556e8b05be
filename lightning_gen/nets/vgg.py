"""VGG-19 feature maps for SRGAN's content loss (Ledig et al. 2017, eq. 5: ``phi_{i,j}``, the j-th convolution's
activation before the i-th max-pooling), with the same offline rules as the metric extractors
(:mod:`lightning_gen.metrics.features`): weights are looked up at ``weights_path``, ``$LIGHTNING_GEN_VGG19_WEIGHTS``
and the torch hub cache, and only ``download=True`` fetches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from lightning_gen.nets.weights import find_weights

__all__ = ["VGG19_LAYERS", "VGG19_WEIGHTS_ENV", "VGG19Features", "VGGWeightsNotFoundError"]

VGG19_WEIGHTS_ENV = "LIGHTNING_GEN_VGG19_WEIGHTS"
VGG19_WEIGHTS_FILE = "vgg19-dcbbb0b9.pth"  # torchvision's ImageNet weights (VGG19_Weights.IMAGENET1K_V1)
VGG19_WEIGHTS_URL = "https://download.pytorch.org/models/" + VGG19_WEIGHTS_FILE
_CONVS_PER_BLOCK = (2, 2, 4, 4, 4)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` in order: ``conv1_1, relu1_1, ..., pool5``."""
    names = []
    for block, convs in enumerate(_CONVS_PER_BLOCK, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


VGG19_LAYERS: tuple[str, ...] = tuple(_layer_names())


class VGGWeightsNotFoundError(FileNotFoundError):
    """The VGG-19 weights are not on this machine and may not be downloaded."""


def _vgg19_weights(weights_path: Optional[Union[str, Path]], download: bool) -> Optional[Path]:
    """Where the VGG-19 weights are: argument, environment variable, torch hub cache; ``None`` means download."""
    return find_weights("VGG-19", weights_path, VGG19_WEIGHTS_ENV, VGG19_WEIGHTS_FILE, download, VGGWeightsNotFoundError,
                        lambda cached: (
        f"The VGG-19 weights of the content loss ({VGG19_WEIGHTS_FILE}, torchvision's ImageNet weights) are not on "
        f"this machine and download=False. Either download {VGG19_WEIGHTS_URL} on a machine with internet and point "
        f"${VGG19_WEIGHTS_ENV} (or weights_path) at it, or copy it to {cached}; or set download=True here; or leave "
        "content_network out (null) to use the pixel MSE content loss (SRGAN-MSE)."
    ))


class VGG19Features(nn.Module):
    """Frozen ImageNet VGG-19 feature maps up to ``layer`` (``"relu5_4"`` = the paper's VGG54, ``"relu2_2"`` =
    VGG22), for :func:`lightning_gen.losses.content_loss`.

    Takes images in [-1, 1] (1 or 3 channels; grayscale is repeated to RGB), maps them to [0, 1] and normalizes with
    the ImageNet mean and std. ``pretrained=False`` builds random weights (tests, or a net you load yourself) and
    never looks for the file. Always in eval mode; its parameters never require gradients.
    """

    def __init__(
        self, layer: str = "relu5_4", weights_path: Optional[str] = None, download: bool = False,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if layer not in VGG19_LAYERS:
            raise ValueError(f"layer must be one of the VGG-19 layers {list(VGG19_LAYERS)}, got {layer!r}")
        from torchvision.models.vgg import cfgs, make_layers

        path = _vgg19_weights(weights_path, download) if pretrained else None  # fail before building anything
        features = make_layers(cfgs["E"], batch_norm=False)  # vgg19().features, without the 120M-weight classifier
        if pretrained:
            if path is None:
                try:
                    state = torch.hub.load_state_dict_from_url(VGG19_WEIGHTS_URL, progress=False)
                except OSError as err:  # the download failed (URLError is an OSError)
                    raise VGGWeightsNotFoundError(
                        f"Downloading the VGG-19 weights from {VGG19_WEIGHTS_URL} failed ({err!r}). Download the file "
                        f"elsewhere and set ${VGG19_WEIGHTS_ENV} to its path, or leave content_network out."
                    ) from err
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        self.layer = layer
        self.features = features[: VGG19_LAYERS.index(layer) + 1]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        """Stay in evaluation mode: the content network is never trained."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Feature maps ``(B, C_layer, H', W')`` of images in [-1, 1]."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"VGG19Features takes (B, 1 or 3, H, W) images in [-1, 1], got {tuple(images.shape)}")
        x = (images + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.features((x - self.mean) / self.std)
