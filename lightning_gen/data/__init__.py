"""LightningDataModules."""

from lightning_gen.data.toy import GaussianMixture, ToyGaussiansDataModule, make_mixture

__all__ = ["GaussianMixture", "ToyGaussiansDataModule", "make_mixture"]
