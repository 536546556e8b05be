"""Tests for lightning_gen/callbacks/images.py: interpolation math, sample grids and interpolation grids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import nn

import lightning_gen.callbacks.images as images_module
from lightning_gen import GenerativeModule
from lightning_gen.callbacks import (
    InterpolationCallback,
    SampleGridCallback,
    grid_to_uint8,
    image_dir,
    images_to_grid,
    lerp,
    slerp,
)


# -- fakes ------------------------------------------------------------------------------------------------------------
class LinearGenerator(GenerativeModule):
    """A module with a linear "generator" ``z -> W z (+ label offset)`` and the image-callback API."""

    def __init__(self, latent_dim: int = 3, channels: int = 1, size: int = 4, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.shape = (channels, size, size)
        self.net = nn.Linear(latent_dim, channels * size * size, bias=False)
        with torch.no_grad():
            self.net.weight.mul_(0.3)
        self.generated: list[tuple[torch.Tensor, object]] = []
        self.sampled_labels: list[object] = []

    def noise(self, n, generator=None):
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def generate(self, z, labels=None):
        self.generated.append((z.clone(), None if labels is None else labels.clone()))
        x = self.net(z).view(len(z), *self.shape)
        if labels is not None:
            x = x + 0.1 * labels.view(-1, 1, 1, 1).float()
        return x

    def sample(self, num_samples, generator=None, labels=None):
        self.sampled_labels.append(None if labels is None else labels.clone())
        return self.generate(self.noise(num_samples, generator), labels)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(64, self.latent_dim))
        return torch.utils.data.DataLoader(data, batch_size=8)


class ConstantImages(LinearGenerator):
    """``sample`` returns constant images whose values cycle through ``values``."""

    def __init__(self, values, channels: int = 1, height: int = 5, width: int = 7) -> None:
        super().__init__(channels=channels)
        self.values = values
        self.image_shape = (channels, height, width)

    def sample(self, num_samples, generator=None, labels=None):
        v = torch.tensor([self.values[i % len(self.values)] for i in range(num_samples)], dtype=torch.float32)
        return v.view(-1, 1, 1, 1).expand(num_samples, *self.image_shape).clone()


def _fit(tmp_path, model, callbacks, logger=False, max_epochs=1, limit_train_batches=2):
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        limit_train_batches=limit_train_batches,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model)
    return trainer


# -- interpolation math -----------------------------------------------------------------------------------------------
def test_lerp_endpoints_and_midpoint_are_exact():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    out = lerp(z0, z1, torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert out.shape == (5, 4, 7)
    torch.testing.assert_close(out[:, 0], z0, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3], z1, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 2], (z0 + z1) / 2, rtol=0, atol=1e-7)
    torch.testing.assert_close(out[:, 1], 0.75 * z0 + 0.25 * z1, rtol=0, atol=1e-6)


def test_slerp_on_unit_vectors_keeps_norm_and_moves_at_constant_angle():
    g = torch.Generator().manual_seed(1)
    z0, z1 = torch.randn(4, 16, generator=g, dtype=torch.float64), torch.randn(4, 16, generator=g, dtype=torch.float64)
    z0, z1 = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    steps = 11
    out = slerp(z0, z1, torch.linspace(0, 1, steps, dtype=torch.float64))
    assert out.shape == (4, steps, 16)
    torch.testing.assert_close(out[:, 0], z0, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, -1], z1, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4, steps, dtype=torch.float64), rtol=0, atol=1e-10)
    omega = torch.arccos((z0 * z1).sum(-1))  # (4,)
    consecutive = torch.arccos(((out[:, 1:] * out[:, :-1]).sum(-1)).clamp(-1, 1))  # (4, steps - 1)
    expected = (omega / (steps - 1)).unsqueeze(1).expand_as(consecutive)
    torch.testing.assert_close(consecutive, expected, rtol=0, atol=1e-6)
    # and it differs from lerp in the middle (lerp's midpoint has norm cos(omega / 2) < 1)
    mid_lerp = lerp(z0, z1, torch.tensor([0.5], dtype=torch.float64))[:, 0]
    torch.testing.assert_close(mid_lerp.norm(dim=-1), torch.cos(omega / 2), rtol=0, atol=1e-10)


def test_slerp_endpoints_exact_in_float32_for_gaussian_latents():
    g = torch.Generator().manual_seed(2)
    z0, z1 = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    out = slerp(z0, z1, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[:, 0], z0, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, 1], z1, rtol=0, atol=1e-6)
    # a single unbatched pair gives (len(t), D)
    assert slerp(z0[0], z1[0], torch.linspace(0, 1, 5)).shape == (5, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slerp_parallel_antiparallel_and_zero_fall_back_to_lerp(dtype):
    z = torch.tensor([[0.6, -0.8, 0.0]], dtype=dtype)
    t = torch.linspace(0, 1, 5, dtype=dtype)
    for other in (z, 2 * z, -z, torch.zeros_like(z)):
        out = slerp(z, other, t)
        assert torch.isfinite(out).all(), f"NaN/inf for pair {z} / {other}"
        torch.testing.assert_close(out, lerp(z, other, t), rtol=0, atol=1e-6)
    # antiparallel in float32: cos is exactly -1 and sin(arccos(-1)) is ~ -8.7e-8, not 0
    out = slerp(torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]]), torch.tensor([0.5]))
    torch.testing.assert_close(out, torch.zeros(1, 1, 2), rtol=0, atol=1e-7)


def test_interpolation_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        slerp(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="1-D tensor"):
        lerp(torch.zeros(3), torch.ones(3), torch.zeros(2, 2))


# -- sample grids -----------------------------------------------------------------------------------------------------
def test_grid_maps_minus_one_to_black_and_one_to_white_with_make_grid_layout():
    model = ConstantImages(values=[-1.0, 1.0])  # even samples -1, odd samples +1; 1 channel, 5 x 7
    cb = SampleGridCallback(num_samples=6, nrow=4)
    grid = cb.render(model)
    assert cb.last_grid is grid
    # make_grid: rows = ceil(6 / 4) = 2, cols = 4, each tile (5 + 2) x (7 + 2) plus a final 2-pixel border
    assert grid.shape == (3, 2 * 7 + 2, 4 * 9 + 2)
    image = grid_to_uint8(grid)
    assert image.shape == (16, 38, 3) and image.dtype == np.uint8
    for i in range(8):
        r, c = divmod(i, 4)
        tile = image[2 + 7 * r : 2 + 7 * r + 5, 2 + 9 * c : 2 + 9 * c + 7]
        expected = 0 if i >= 6 else (0 if i % 2 == 0 else 255)  # slots 6, 7 are empty (padding value 0)
        assert (tile == expected).all(), f"tile {i}: {np.unique(tile)}"
    assert image[0].max() == 0 and image[:, 0].max() == 0  # black padding
    assert (image == 255).sum() == 3 * 5 * 7 * 3  # three white tiles, 3 channels, nothing else white


def test_grid_clamps_and_rounds_like_save_image():
    model = ConstantImages(values=[-3.0, 0.0, 3.0], channels=3, height=2, width=2)
    image = grid_to_uint8(SampleGridCallback(num_samples=3, nrow=3).render(model))
    tiles = [image[2:4, 2 + 4 * c : 4 + 4 * c] for c in range(3)]
    assert (tiles[0] == 0).all() and (tiles[2] == 255).all()
    assert (tiles[1] == 128).all()  # 0 -> 0.5 -> floor(127.5 + 0.5)


def test_default_nrow_is_square_for_unconditional_modules():
    model = LinearGenerator(size=4)
    grid = SampleGridCallback(num_samples=10).render(model)  # nrow = ceil(sqrt(10)) = 4 -> 3 rows
    assert grid.shape == (3, 3 * 6 + 2, 4 * 6 + 2)


def test_fixed_noise_gives_identical_grids_and_the_seed_matters():
    model = LinearGenerator(size=4)
    cb = SampleGridCallback(num_samples=16, seed=7)
    first = cb.render(model).clone()
    torch.randn(100)  # moving the global RNG must not change the grid
    second = cb.render(model)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.std() > 0.05  # a real picture, not a constant
    other = SampleGridCallback(num_samples=16, seed=8).render(model)
    assert (other - first).abs().max() > 0.05


def test_conditional_grid_puts_one_class_per_column():
    model = LinearGenerator(num_classes=3)
    cb = SampleGridCallback(num_samples=7)
    grid = cb.render(model)
    (labels,) = model.sampled_labels
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert grid.shape == (3, 3 * 6 + 2, 3 * 6 + 2)  # nrow = num_classes = 3 columns, 3 rows

    model.sampled_labels.clear()
    SampleGridCallback(num_samples=5, labels=[2, 0]).render(model)
    assert model.sampled_labels[0].tolist() == [2, 0, 2, 0, 2]


def test_sample_grid_arguments_are_checked():
    with pytest.raises(ValueError, match="num_samples"):
        SampleGridCallback(num_samples=0)
    with pytest.raises(ValueError, match="every_n_steps"):
        SampleGridCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        SampleGridCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="unconditional"):
        SampleGridCallback(labels=[1]).render(LinearGenerator())
    with pytest.raises(ValueError, match="out of range"):
        SampleGridCallback(labels=[3]).render(LinearGenerator(num_classes=3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        images_to_grid(torch.zeros(4, 2), nrow=2)


# -- logging through a real Trainer -----------------------------------------------------------------------------------
def test_pngs_without_a_logger_and_with_a_csv_logger(tmp_path):
    callbacks = [SampleGridCallback(num_samples=4), InterpolationCallback(num_rows=2, steps=3)]
    trainer = _fit(tmp_path / "none", LinearGenerator(), callbacks)
    folder = image_dir(trainer)
    assert folder == tmp_path / "none" / "images"
    assert sorted(p.name for p in folder.glob("*.png")) == ["interpolation_step2.png", "samples_step2.png"]

    cb = SampleGridCallback(num_samples=4, key="gan/samples")
    trainer = _fit(tmp_path / "csv", LinearGenerator(), [cb], logger=CSVLogger(save_dir=tmp_path / "csv"))
    png = image_dir(trainer) / "gan_samples_step2.png"
    assert png.parent == tmp_path / "csv" / "lightning_logs" / "version_0" / "images"
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), grid_to_uint8(cb.last_grid))


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None,
    reason="TensorBoardLogger needs tensorboard or tensorboardX",
)
def test_tensorboard_receives_the_grid(tmp_path, monkeypatch):
    logger = TensorBoardLogger(save_dir=str(tmp_path / "tb"))
    calls = []
    writer_cls = type(logger.experiment)

    def add_image(self, tag, img, global_step=None, dataformats="CHW", **kwargs):
        calls.append((tag, img, global_step, dataformats))

    monkeypatch.setattr(writer_cls, "add_image", add_image)
    cb = SampleGridCallback(num_samples=4)
    _fit(tmp_path, LinearGenerator(), [cb], logger=logger)
    assert [(tag, step, fmt) for tag, _, step, fmt in calls] == [("samples", 2, "HWC")]
    np.testing.assert_array_equal(calls[0][1], grid_to_uint8(cb.last_grid))
    # and the same grid as a PNG file beside the event files, for opening without TensorBoard
    (png,) = tmp_path.rglob("*.png")
    assert png == Path(logger.log_dir) / "images" / "samples_step2.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), calls[0][1])


def test_wandb_receives_the_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = []

    def record(self, key, images, step=None, **kwargs):
        calls.append((key, images, step))

    monkeypatch.setattr(WandbLogger, "log_image", record)
    logger = WandbLogger(save_dir=str(tmp_path / "wb"), offline=True, project="lightning-gen-tests")
    cb = InterpolationCallback(num_rows=2, steps=4, mode="linear")
    try:
        _fit(tmp_path, LinearGenerator(), [cb], logger=logger)
    finally:
        logger.experiment.finish()
    assert [(key, step) for key, _, step in calls] == [("interpolation", 2)]
    (image,) = calls[0][1]
    np.testing.assert_array_equal(image, grid_to_uint8(cb.last_grid))
    (png,) = tmp_path.rglob("*.png")  # the PNG copy, beside the run's checkpoints
    assert png == tmp_path / "wb" / "lightning-gen-tests" / logger.version / "images" / "interpolation_step2.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), image)


def test_every_n_epochs_every_n_steps_and_train_end_are_honoured(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(images_module, "log_image", lambda trainer, key, image, step=None: calls.append((key, step)))
    callbacks = [
        SampleGridCallback(num_samples=4, every_n_epochs=2, key="epochs"),  # epoch 2 ends at step 8; end at 12
        SampleGridCallback(num_samples=4, every_n_epochs=None, every_n_steps=3, on_train_end=False, key="steps"),
        SampleGridCallback(num_samples=4, every_n_epochs=1, key="dedup"),  # end of training = end of epoch 3
        InterpolationCallback(num_rows=1, steps=2, every_n_epochs=3, key="interp"),
    ]
    _fit(tmp_path, LinearGenerator(), callbacks, max_epochs=3, limit_train_batches=4)
    by_key = {k: [s for key, s in calls if key == k] for k in ("epochs", "steps", "dedup", "interp")}
    assert by_key == {"epochs": [8, 12], "steps": [3, 6, 9, 12], "dedup": [4, 8, 12], "interp": [12]}


# -- interpolation grids ----------------------------------------------------------------------------------------------
def test_linear_interpolation_middle_column_is_the_generator_at_the_midpoint():
    model = LinearGenerator(latent_dim=5, size=4)
    cb = InterpolationCallback(num_rows=3, steps=5, mode="linear", seed=3)
    grid = cb.render(model)
    assert grid.shape == (3, 3 * 6 + 2, 5 * 6 + 2)  # one row per pair, `steps` columns
    ((z, labels),) = model.generated
    assert labels is None and z.shape == (15, 5)
    z = z.view(3, 5, 5)
    expected_z = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))  # the documented fixed pairs
    torch.testing.assert_close(z[:, 0], expected_z[:3], rtol=0, atol=1e-6)
    torch.testing.assert_close(z[:, -1], expected_z[3:], rtol=0, atol=1e-6)
    for row in range(3):
        mid = (z[row, 0] + z[row, -1]) / 2
        expected = ((model.net(mid).view(1, 4, 4) + 1) / 2).clamp(0, 1).expand(3, 4, 4)
        tile = grid[:, 2 + 6 * row : 6 + 6 * row, 2 + 6 * 2 : 6 + 6 * 2]
        torch.testing.assert_close(tile, expected, rtol=0, atol=1e-5)
        # and it is not just the endpoint image
        assert (tile - grid[:, 2 + 6 * row : 6 + 6 * row, 2:6]).abs().max() > 1e-3


def test_slerp_interpolation_rows_follow_the_great_circle_and_repeat():
    model = LinearGenerator(latent_dim=6)
    cb = InterpolationCallback(num_rows=2, steps=7, mode="slerp")
    first = cb.render(model).clone()
    ((z, _),) = model.generated
    z = z.view(2, 7, 6).double()
    z0, z1 = z[:, 0], z[:, -1]
    omega = torch.arccos((z0 * z1).sum(-1) / (z0.norm(dim=-1) * z1.norm(dim=-1)))
    # t = 1/2: sin(omega / 2) / sin(omega) = 1 / (2 cos(omega / 2)), so the midpoint is (z0 + z1) / (2 cos(omega / 2))
    expected_mid = (z0 + z1) / (2 * torch.cos(omega / 2)).unsqueeze(-1)
    torch.testing.assert_close(z[:, 3], expected_mid, rtol=0, atol=1e-5)
    assert (z[:, 3].norm(dim=-1) > 1.05 * ((z0 + z1) / 2).norm(dim=-1)).all()  # longer than the lerp midpoint
    torch.testing.assert_close(cb.render(model), first, rtol=0, atol=0)


def test_conditional_interpolation_keeps_one_label_per_row():
    model = LinearGenerator(num_classes=2)
    InterpolationCallback(num_rows=3, steps=2).render(model)
    assert model.generated[-1][1].tolist() == [0, 0, 1, 1, 0, 0]
    InterpolationCallback(num_rows=2, steps=3, label=1).render(model)
    assert model.generated[-1][1].tolist() == [1] * 6
    with pytest.raises(ValueError, match="out of range"):
        InterpolationCallback(label=2).render(model)


def test_interpolation_needs_a_latent_space(tmp_path):
    class SampleOnly(GenerativeModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 2)

        def sample(self, num_samples, generator=None, **condition):
            return torch.zeros(num_samples, 1, 4, 4)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 2)), batch_size=2)

    with pytest.raises(TypeError, match=r"must implement latent_dim, noise\(n, generator=None\), generate"):
        _fit(tmp_path, SampleOnly(), [InterpolationCallback()])
    with pytest.raises(ValueError, match="mode"):
        InterpolationCallback(mode="cubic")
    with pytest.raises(ValueError, match="steps"):
        InterpolationCallback(steps=1)
