"""Synthetic image domains with a known right answer: MNIST digits rotated, mirrored, inverted or thickened.

Each domain is a pure, pixel-exact transform of a digit image (:data:`DOMAIN_TRANSFORMS`). For multi-domain
translation (StarGAN), :class:`MNISTDomainsDataModule` assigns every digit of every split to exactly one domain
(seeded, balanced within each digit class) and yields it in that domain, so the domains are unpaired: no digit is
seen in two domains. The untransformed held-out digits stay available (:meth:`MNISTDomainsDataModule.held_out`), so
a translation of digit ``x`` from domain ``j`` to domain ``k`` can be scored against its exact ground truth::

    dm = MNISTDomainsDataModule(domains=("identity", "rot90", "invert", "thicken"))
    digits, assigned, classes = dm.held_out("test")      # float (N, 1, H, W) in [-1, 1], int64 (N,), int64 (N,)
    source = dm.transform(digits, assigned)               # = the test images as the batches show them
    target = torch.randint(len(dm.domain_names), (len(digits),))
    truth = dm.transform(digits, target)                  # what a perfect model outputs for (source, target)
    error = (model_output - truth).abs().mean()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_gen.checks import value_checks_enabled
from lightning_gen.data.images import MNISTDataModule, _to_unit_range
from lightning_gen.data.resumable import _stable_seed
from lightning_gen.data.toy import _BatchedTensorDataset

__all__ = ["DOMAIN_TRANSFORMS", "domain_transform", "MNISTDomainsDataModule"]


def _identity(images: Tensor) -> Tensor:
    """The images unchanged (a copy)."""
    return images.clone()


def _rot90(images: Tensor) -> Tensor:
    """A quarter turn counter-clockwise (``torch.rot90(x, 1, (-2, -1))``); square images keep their shape."""
    return torch.rot90(images, 1, (-2, -1))


def _flip(images: Tensor) -> Tensor:
    """Mirrored left-right."""
    return images.flip(-1)


def _invert(images: Tensor) -> Tensor:
    """Dark digits on a bright background: ``-x`` for floats in [-1, 1], ``255 - x`` for uint8."""
    if images.dtype == torch.uint8:
        return 255 - images
    if images.is_floating_point():
        return -images
    raise TypeError(f"invert takes float images in [-1, 1] or uint8 images, got {images.dtype}")


def _thicken(images: Tensor) -> Tensor:
    """Thicker strokes: grey dilation by a 3 x 3 square (the maximum over each pixel's neighbourhood; pixels beyond
    the border do not count, so a bright stroke touching the border thickens as it would inside)."""
    if images.is_floating_point():
        return F.max_pool2d(images, 3, stride=1, padding=1)  # pads with -inf
    return F.max_pool2d(images.float(), 3, stride=1, padding=1).to(images.dtype)  # exact for integer values


DOMAIN_TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": _identity,
    "rot90": _rot90,
    "flip": _flip,
    "invert": _invert,
    "thicken": _thicken,
}


def domain_transform(images: Tensor, name: str) -> Tensor:
    """Domain ``name``'s transform of ``(..., C, H, W)`` images: float in [-1, 1] (digits +1 on -1) or uint8."""
    if name not in DOMAIN_TRANSFORMS:
        raise ValueError(f"Unknown domain {name!r}. Choose from {sorted(DOMAIN_TRANSFORMS)}.")
    return DOMAIN_TRANSFORMS[name](images)


def _transform_each(images: Tensor, domains: Tensor, names: Sequence[str]) -> Tensor:
    """Image ``i`` in domain ``names[domains[i]]``: the one place the batches and the ground truth are made. Every
    transform runs on the whole batch and each image picks its own, so nothing waits for the device."""
    every = torch.stack([domain_transform(images, name) for name in names])
    return every[domains, torch.arange(len(images), device=images.device)]


def _assign_domains(labels: Tensor, num_domains: int, seed: int, split: str) -> Tensor:
    """One domain per item, seeded by ``(seed, split)``: a random order grouped by digit class, then ``i % K`` along
    it, so every domain gets the same number of digits of each class (to within one)."""
    generator = torch.Generator().manual_seed(_stable_seed("mnist-domains", int(seed), split))
    order = torch.randperm(len(labels), generator=generator)
    order = order[torch.argsort(labels[order], stable=True)]
    domains = torch.empty(len(labels), dtype=torch.long)
    domains[order] = torch.arange(len(labels)) % num_domains
    return domains


class _DomainDigitsDataset(_BatchedTensorDataset):
    """uint8 digits, their assigned domain and their digit class; a fetch yields ``(digit in its domain, domain)``."""

    def __init__(self, digits: Tensor, domains: Tensor, labels: Tensor, names: Sequence[str]) -> None:
        super().__init__(digits, domains, labels)
        self.names = tuple(names)

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        digits, domains, _ = super().__getitems__(indices)
        return [_transform_each(_to_unit_range(digits), domains, self.names), domains]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, domains = self.__getitems__([index])
        return images[0], domains[0]


class MNISTDomainsDataModule(MNISTDataModule):
    """MNIST digits split into synthetic domains (rotated, inverted, thickened ...) for multi-domain translation.

    Every digit of every split (train, val, test) is assigned exactly one of ``domains`` (seeded by ``seed``,
    balanced within each digit class) and is yielded transformed into it, so the domains are unpaired. Batches are
    ``(images, domains)``: float32 ``(B, 1, H, W)`` in [-1, 1] and the int64 domain index (the digit's class is
    not in the batches; :meth:`held_out` gives it). ``domain_names`` is ``list(domains)``, ``multi_label`` False and
    ``num_classes`` the number of domains. :meth:`held_out` and :meth:`transform` give the exact ground truth of
    any translation; ``predict_dataloader`` yields the first ``predict_size`` held-out ``(images, domains)`` (test,
    else val). The files, download and errors are :class:`MNISTDataModule`'s (``<root>/MNIST/raw/``).

    Args:
        domains: at least two distinct names from :data:`DOMAIN_TRANSFORMS` (``identity``, ``rot90``
            (counter-clockwise), ``flip`` (left-right), ``invert``, ``thicken`` (3 x 3 dilation)); their order
            numbers the domains.
        seed: seed of the train/val split and of the domain assignment.
        Other arguments: as :class:`~lightning_gen.data.images.ImageDataModule` (no ``hflip``: a random flip
            would move digits between domains).
    """

    _hparams_ignore = ("hflip",)  # not an argument here (always off)

    def __init__(
        self,
        root: Optional[str] = None,
        domains: Sequence[str] = ("identity", "rot90", "invert", "thicken"),
        image_size: Optional[int] = None,
        batch_size: int = 64,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        download: bool = False,
        seed: int = 0,
        predict_size: int = 10_000,
    ) -> None:
        names = [domains] if isinstance(domains, str) else [str(d) for d in domains]
        unknown = [d for d in names if d not in DOMAIN_TRANSFORMS]
        if unknown:
            raise ValueError(f"Unknown domain{'s' if len(unknown) > 1 else ''} {unknown}. Choose at least two of "
                             f"{sorted(DOMAIN_TRANSFORMS)}.")
        repeated = sorted({d for d in names if names.count(d) > 1})
        if repeated:
            raise ValueError(f"domains names {repeated} more than once; each domain must be a different transform.")
        if len(names) < 2:
            raise ValueError(f"MNISTDomainsDataModule needs at least two domains to translate between, got {names}. "
                             f"Choose from {sorted(DOMAIN_TRANSFORMS)}.")
        super().__init__(root, image_size, batch_size, val_fraction, num_workers, pin_memory, download, seed,
                         predict_size, False)
        self.domain_names = names
        self.multi_label = False
        self.num_classes = len(names)

    def _build_splits(self) -> dict[str, Dataset]:
        sets = super()._build_splits()  # uint8 digits (resized) with their digit classes
        out: dict[str, Dataset] = {}
        for split, dataset in sets.items():
            digits, labels = dataset.tensors  # type: ignore[attr-defined]
            domains = _assign_domains(labels, len(self.domain_names), self.seed, split)
            out[split] = _DomainDigitsDataset(digits, domains, labels, self.domain_names)
        return out

    def held_out(self, split: str = "test") -> tuple[Tensor, Tensor, Tensor]:
        """The split's digits untransformed, float32 ``(N, 1, H, W)`` in [-1, 1], in the loaders' order; the int64
        domain each was assigned (its batches show ``transform(digits, domains)``); its int64 digit class."""
        self.setup()
        dataset = self._sets.get(split)
        if dataset is None:
            have = sorted(self._sets)
            raise ValueError(f"MNISTDomainsDataModule has no {split!r} split; it has {have}"
                             + (" (val_fraction is 0, so there is no val split)" if split == "val" else "") + ".")
        digits, domains, labels = dataset.tensors  # type: ignore[attr-defined]
        return _to_unit_range(digits), domains.clone(), labels.clone()

    def transform(self, images: Tensor, domain: Union[int, str, Tensor]) -> Tensor:
        """``images`` (float in [-1, 1] or uint8, ``(B, C, H, W)``) in a domain: one index or name for all, or an
        int64 ``(B,)`` tensor of indices, one per image."""
        if isinstance(domain, Tensor) and domain.dim() > 0:
            if domain.shape != images.shape[:1] or domain.is_floating_point():
                raise ValueError(f"domain must be an int64 tensor of shape ({images.shape[0]},), one index per image, "
                                 f"got {tuple(domain.shape)} {domain.dtype}")
            if value_checks_enabled():  # reading the indices waits for the device
                bad = (domain < 0) | (domain >= len(self.domain_names))
                if bad.any():
                    raise ValueError(f"domain indices must be in [0, {len(self.domain_names)}), got "
                                     f"{domain[bad][0].item()}")
            return _transform_each(images, domain.to(images.device), self.domain_names)
        if isinstance(domain, Tensor):
            domain = int(domain.item())
        if isinstance(domain, str):
            if domain not in self.domain_names:
                raise ValueError(f"{domain!r} is not one of this data module's domains {self.domain_names}.")
            return domain_transform(images, domain)
        if not 0 <= domain < len(self.domain_names):
            raise ValueError(f"domain index must be in [0, {len(self.domain_names)}) (domains {self.domain_names}), "
                             f"got {domain}")
        return domain_transform(images, self.domain_names[domain])

    def predict_dataloader(self) -> DataLoader:
        """The first ``predict_size`` held-out ``(images, domains)`` (the test split, else val), in order, to
        translate."""
        return self._held_out_images_loader()
