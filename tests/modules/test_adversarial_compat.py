"""Checkpoints written before the adversarial base (tests/fixtures/*_v0.ckpt, made with commit d5c83ff) still load,
sample the same values and resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import lightning_gen
from lightning_gen import CycleGAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import PatchGANDiscriminator, ResnetGenerator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_cli_written_wgan_gp_checkpoint_loads_and_samples_as_before():
    model = lightning_gen.load_model(FIXTURES / "wgan_gp_toy_v0.ckpt")
    assert type(model).__name__ == "WGANGP" and model.generator_ema is not None
    expected = torch.load(FIXTURES / "wgan_gp_toy_v0_samples.pt", weights_only=True)["samples"]
    got = model.sample(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_old_gan_checkpoint_resumes_with_its_counters(tmp_path):
    """The old counters (critic_steps, micro_batches) become the players' counters, and training goes on."""
    path = FIXTURES / "wgan_gp_toy_v0.ckpt"
    old = torch.load(path, weights_only=True)
    model = lightning_gen.load_model(path)
    data = ToyGaussiansDataModule(mixture="ring", train_size=256, val_size=64, batch_size=64)
    trainer = L.Trainer(accelerator="cpu", max_steps=old["global_step"] + 2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, data, ckpt_path=str(path))
    assert old["lightning_gen_counters"]["critic_steps"] == 6 and old["global_step"] == 3
    assert trainer.global_step == 5 and model.critic_steps == 10  # n_critic 2, continued from 6
    assert model.player_steps == {"generator": 5, "discriminator": 10}


def test_python_built_cyclegan_checkpoint_loads_and_translates_as_before():
    ckpt = torch.load(FIXTURES / "cyclegan_v0.ckpt", weights_only=False)
    model = CycleGAN.load_from_checkpoint(
        FIXTURES / "cyclegan_v0.ckpt",
        generator_ab=ResnetGenerator(3, 3, 8, num_blocks=1), generator_ba=ResnetGenerator(3, 3, 8, num_blocks=1),
        discriminator_a=PatchGANDiscriminator(3, 8, num_layers=2),
        discriminator_b=PatchGANDiscriminator(3, 8, num_layers=2),
    )
    x = torch.linspace(-1, 1, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16)
    # Convolutions may take another kernel on another CPU (a few 1e-6 apart); wrong or missing weights are ~0.1 off.
    torch.testing.assert_close(model.translate(x), ckpt["expected_translation"], rtol=1e-4, atol=2e-5)
    assert int(model.pool_a.num_stored) == 4  # the image pools came back too


def test_resuming_on_another_world_size_warns_and_trains_on(tmp_path):
    """A checkpoint from 2 processes resumed on 1: one clear warning that the noise streams restart, then training."""
    path = FIXTURES / "wgan_gp_toy_v0.ckpt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["lightning_gen_rng_states"] = ckpt["lightning_gen_rng_states"] * 2  # as if written by two ranks
    two_ranks = tmp_path / "two_ranks.ckpt"
    torch.save(ckpt, two_ranks)
    model = lightning_gen.load_model(path)
    data = ToyGaussiansDataModule(mixture="ring", train_size=256, val_size=64, batch_size=64)
    trainer = L.Trainer(accelerator="cpu", max_steps=ckpt["global_step"] + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="written by 2 process\\(es\\) on 1: .*fresh noise stream"):
        trainer.fit(model, data, ckpt_path=str(two_ranks))
    assert trainer.global_step == ckpt["global_step"] + 1
