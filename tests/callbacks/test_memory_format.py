"""ChannelsLast: convolution weights channels-last during fit, the same training to float tolerance, checkpoints
interchangeable with the default format."""

from __future__ import annotations

import copy

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import GAN
from lightning_gen.callbacks import ChannelsLast
from lightning_gen.nets import DCGANDiscriminator, DCGANGenerator


def _model() -> GAN:
    torch.manual_seed(0)
    return GAN(DCGANGenerator(8, image_size=28, channels=1, base_channels=4),
               DCGANDiscriminator(image_size=28, channels=1, base_channels=4))


def _fit(model: GAN, tmp_path, callbacks: list) -> L.Trainer:
    torch.manual_seed(1)
    data = DataLoader(TensorDataset(torch.rand(32, 1, 28, 28) * 2 - 1), batch_size=8)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, data)
    return trainer


def test_channels_last_converts_the_convolutions_and_trains_the_same(tmp_path):
    plain, converted = _model(), _model()
    _fit(plain, tmp_path / "plain", [])
    trainer = _fit(converted, tmp_path / "cl", [ChannelsLast()])
    weights = [p for p in converted.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert sum(not p.is_contiguous() for p in weights) >= 2  # (those with one input or output channel look the same)
    assert all(p.is_contiguous() for p in plain.parameters())
    for (name, a), b in zip(plain.state_dict().items(), converted.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # other kernels, same math
    # the optimizer steps the converted parameters themselves
    optimized = {id(p) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]}
    assert {id(p) for p in weights} <= optimized
    # checkpoints go both ways
    fresh = _model()
    fresh.load_state_dict(copy.deepcopy(converted.state_dict()))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), converted.state_dict().values()))
