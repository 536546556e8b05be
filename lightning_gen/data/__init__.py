"""LightningDataModules."""

from lightning_gen.data.domains import DOMAIN_TRANSFORMS, MNISTDomainsDataModule, domain_transform
from lightning_gen.data.images import (
    CELEBA_ATTRIBUTES,
    IMAGE_EXTENSIONS,
    CelebADataModule,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from lightning_gen.data.paired import PairedImageDataModule, UnpairedImageDataModule, UnpairedSampler
from lightning_gen.data.resumable import ResumableDataLoader, ResumableRandomSampler, SeededAugmentation
from lightning_gen.data.super_resolution import SuperResolutionDataModule
from lightning_gen.data.tabular import TABLE_EXTENSIONS, TabularDataModule, read_table
from lightning_gen.data.toy import GaussianMixture, ToyGaussiansDataModule, make_mixture

__all__ = [
    "ResumableDataLoader",
    "ResumableRandomSampler",
    "SeededAugmentation",
    "CIFAR10DataModule",
    "CelebADataModule",
    "FashionMNISTDataModule",
    "GaussianMixture",
    "IMAGE_EXTENSIONS",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "PairedImageDataModule",
    "ToyGaussiansDataModule",
    "UnpairedImageDataModule",
    "UnpairedSampler",
    "make_mixture",
    "SuperResolutionDataModule",
    "CELEBA_ATTRIBUTES",
    "DOMAIN_TRANSFORMS",
    "MNISTDomainsDataModule",
    "domain_transform",
    "TABLE_EXTENSIONS",
    "TabularDataModule",
    "read_table",
]
