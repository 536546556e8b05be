"""Tests for lightning_gen/callbacks/toy.py and image_logging.py: metrics logged, pictures reach every logger."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image

from lightning_gen import GenerativeModule
from lightning_gen.callbacks import ToyMetricsCallback, ToyScatterCallback, log_image
from lightning_gen.data import ToyGaussiansDataModule


class PerfectSampler(GenerativeModule):
    """Samples straight from the data module's mixture: the toy metrics must come out as theory says."""

    def __init__(self, mixture) -> None:
        super().__init__()
        self.mixture = mixture
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def sample(self, num_samples, generator=None, **condition):
        return self.mixture.sample(num_samples, generator=generator)[0].to(self.device)

    def discriminate(self, x):
        return -torch.cdist(x, self.mixture.modes.to(x)).min(1).values

    def validation_step(self, batch, batch_idx):
        return None

    test_step = validation_step  # the callback does the work; the step only has to exist


def test_metrics_callback_logs_theory_values_for_a_perfect_sampler(tmp_path):
    L.seed_everything(0)
    data = ToyGaussiansDataModule(mixture="grid", val_size=64, batch_size=64)
    cb = ToyMetricsCallback(num_samples=2500)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[cb], enable_progress_bar=False,
                        default_root_dir=tmp_path)
    (result,) = trainer.test(PerfectSampler(data.mixture), data)
    assert result["test/modes_covered"] == 25
    # 2-D Gaussian: P(|x - mu| <= 3 sigma) = 1 - exp(-9/2) = 98.89 %
    assert 97.9 < result["test/hq_percent"] < 99.8
    assert 0.0 <= result["test/reverse_kl"] < 0.02
    assert cb.last["modes_covered"] == 25


def test_metrics_callback_needs_a_mixture(tmp_path):
    class NoMixture(L.LightningDataModule):
        def _loader(self):
            return torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2)

        test_dataloader = _loader

    data = ToyGaussiansDataModule(mixture="ring")
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[ToyMetricsCallback()], enable_progress_bar=False,
                        default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="need the true mixture"):
        trainer.test(PerfectSampler(data.mixture), NoMixture())


def test_scatter_picture_is_saved_without_a_logger_and_shows_the_samples(tmp_path):
    data = ToyGaussiansDataModule(mixture="ring")
    model = PerfectSampler(data.mixture)
    cb = ToyScatterCallback(num_samples=500, resolution=20)
    image = cb.render(model, data.mixture.modes)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 300 and image.shape[1] >= 300
    assert image.std() > 20  # not a blank canvas: heat map, samples and modes are drawn
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    path = log_image(trainer, "toy/samples", image, step=3)
    assert path == tmp_path / "images" / "toy_samples_step3.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)


def test_scatter_without_a_discriminator_draws_the_samples_in_a_visible_colour():
    # flows, diffusion and VAEs have no heat map behind the samples: white dots on the white figure were invisible
    data = ToyGaussiansDataModule(mixture="grid")

    class NoCritic(GenerativeModule):
        def __init__(self, mixture) -> None:
            super().__init__()
            self.mixture = mixture

        sample = PerfectSampler.sample

    model = NoCritic(data.mixture)
    assert not hasattr(model, "discriminate")
    image = ToyScatterCallback(num_samples=2000).render(model, data.mixture.modes).astype(int)
    blue = (np.abs(image - np.array([31, 119, 180])).sum(-1) < 120).sum()  # matplotlib's tab:blue, alpha-blended
    assert blue > 500, blue


def test_log_image_goes_to_csv_log_dir_and_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[2:5, 3:6] = 255
    csv = CSVLogger(save_dir=tmp_path / "csv")
    trainer = L.Trainer(accelerator="cpu", logger=csv, default_root_dir=tmp_path)
    path = log_image(trainer, "k", image, step=1)
    assert path is not None and path.parent == tmp_path / "csv" / "lightning_logs" / "version_0" / "images"

    wandb_logger = WandbLogger(save_dir=str(tmp_path / "wb"), offline=True, project="lightning-gen-tests")
    trainer = L.Trainer(accelerator="cpu", logger=wandb_logger, default_root_dir=tmp_path)
    path = log_image(trainer, "toy/samples", image, step=1)
    # the PNG copy sits where Lightning puts the run's checkpoints: <save_dir>/<project>/<run id>/
    assert path == tmp_path / "wb" / "lightning-gen-tests" / wandb_logger.version / "images" / "toy_samples_step1.png"
    run_dir = wandb_logger.experiment.dir
    wandb_logger.experiment.finish()
    pngs = [p for p in (tmp_path / "wb" / "wandb").rglob("*.png")]
    assert pngs, f"no image in the offline W&B run {run_dir}"
    for png in (pngs[0], path):
        np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), image)


def test_log_image_rejects_wrong_arrays(tmp_path):
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        log_image(trainer, "k", np.zeros((8, 8), dtype=np.float32))
