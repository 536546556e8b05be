"""Tests for lightning_gen/modules/image_to_image.py: Pix2Pix and CycleGAN losses, steps, pools, resume, DDP, learning."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_gen.modules.image_to_image import CycleGAN, Pix2Pix
from lightning_gen.nets.image_to_image import PatchGANDiscriminator, ResnetGenerator, UNetGenerator

SIZE = 16


def smooth_images(n: int, seed: int, size: int = SIZE) -> Tensor:
    """Random smooth RGB images in [-1, 1]: 4x4 uniform noise upsampled bilinearly."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


class InversionPairs(Dataset):
    """Aligned pairs ``{"a": x, "b": -x}``: colour inversion as a paired translation task."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"a": self.images[i], "b": -self.images[i]}


class InversionDataModule(L.LightningDataModule):
    """A tiny in-memory data module of dict batches (train 256, val 64 images)."""

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.train_images, self.val_images = smooth_images(256, 1), smooth_images(64, 2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(InversionPairs(self.train_images), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(InversionPairs(self.val_images), batch_size=64)

    test_dataloader = val_dataloader


def adam(lr: float = 2e-3):
    return partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999))


def make_pix2pix(lr: float = 2e-3, **kwargs) -> Pix2Pix:
    """Tiny pix2pix for 16 px RGB pairs."""
    return Pix2Pix(UNetGenerator(3, 3, 8, num_downs=4), PatchGANDiscriminator(6, 8, num_layers=2),
                   generator_optimizer=adam(lr), discriminator_optimizer=adam(lr), **kwargs)


def make_cyclegan(lr: float = 2e-3, **kwargs) -> CycleGAN:
    """Tiny CycleGAN for 16 px RGB images."""
    return CycleGAN(ResnetGenerator(3, 3, 8, num_blocks=1), ResnetGenerator(3, 3, 8, num_blocks=1),
                    PatchGANDiscriminator(3, 8, num_layers=2), PatchGANDiscriminator(3, 8, num_layers=2),
                    generator_optimizer=adam(lr), discriminator_optimizer=adam(lr), **kwargs)


class StepCounter(L.Callback):
    """Counts optimizer steps seen by callbacks and records the train losses of every batch."""

    def __init__(self) -> None:
        self.optimizer_steps = 0
        self.logged: list[set[str]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.optimizer_steps += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.logged.append({k for k in trainer.callback_metrics if k.startswith("train/")})


class ConstantCritic(nn.Module):
    """A stand-in discriminator whose every patch logit is ``value`` (with a parameter so optimizers accept it)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0], 1, 2, 2), self.value) + 0 * self.weight


def test_cycle_and_identity_losses_vanish_for_identity_generators():
    model = CycleGAN(nn.Identity(), nn.Identity(), ConstantCritic(0.0), ConstantCritic(0.0))
    a, b = smooth_images(4, 0), smooth_images(4, 1)
    total, parts, (fake_a, fake_b) = model.generator_loss(a, b)
    for name in ("loss_cycle_a", "loss_cycle_b", "loss_identity_a", "loss_identity_b"):
        assert float(parts[name]) == 0.0
    # with D(.) = 0 everywhere the paper's LSGAN term E[(D - 1)^2] is 1 per direction
    assert float(parts["loss_gen_adv_ab"]) == pytest.approx(1.0, abs=1e-6)
    assert float(total.detach()) == pytest.approx(2.0, abs=1e-6)
    assert torch.equal(fake_b, a) and torch.equal(fake_a, b)


def test_cycle_and_identity_weights_follow_the_paper():
    swap = CycleGAN(nn.Identity(), nn.Identity(), ConstantCritic(1.0), ConstantCritic(1.0))
    a = torch.zeros(2, 3, 8, 8)
    b = torch.ones(2, 3, 8, 8)
    _, parts, _ = swap.generator_loss(a, b)
    assert float(parts["loss_gen_adv_ab"]) == pytest.approx(0.0, abs=1e-7)  # D fooled completely
    assert float(parts["loss_identity_a"]) == pytest.approx(0.0, abs=1e-7)
    # G_ab = negation: cycle |-(-a) - a| = 0, identity 0.5 * 10 * E|-b - b| = 5 * 2 = 10
    neg = CycleGAN(_Negate(), _Negate(), ConstantCritic(1.0), ConstantCritic(1.0))
    _, parts, _ = neg.generator_loss(a, b)
    assert float(parts["loss_cycle_b"]) == pytest.approx(0.0, abs=1e-7)
    assert float(parts["loss_identity_b"]) == pytest.approx(10.0, rel=1e-6)


class _Negate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return -x


def test_pix2pix_discriminator_objective_is_halved_bce():
    model = Pix2Pix(nn.Identity(), ConstantCritic(0.0))
    a = smooth_images(2, 0)
    # BCE at logit 0 is log 2 for the real and the fake term; halved: log 2
    assert float(model.discriminator_loss(a, a, a).detach()) == pytest.approx(float(torch.log(torch.tensor(2.0))), rel=1e-6)
    _, parts = model.generator_loss(a, -a, a)
    assert float(parts["loss_gen_l1"]) == pytest.approx(100.0 * float((2 * a).abs().mean()), rel=1e-5)


@pytest.mark.parametrize("make", [make_pix2pix, make_cyclegan], ids=["pix2pix", "cyclegan"])
def test_training_counts_generator_steps_and_logs(make, tiny_trainer_kwargs):
    L.seed_everything(0)
    model, counter = make(), StepCounter()
    trainer = L.Trainer(max_steps=5, limit_val_batches=0, callbacks=[counter], log_every_n_steps=1,
                        **tiny_trainer_kwargs)
    trainer.fit(model, InversionDataModule(batch_size=4))
    assert trainer.global_step == 5
    assert model.generator_steps == 5
    assert counter.optimizer_steps == 10  # one discriminator + one generator step per batch
    assert len(counter.logged) == 5
    assert {"train/loss_gen", "train/loss_dis"} <= counter.logged[-1]


def test_schedulers_are_stepped_by_the_module(tiny_trainer_kwargs):
    linear = partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda step: 1.0 - step / 10)
    model = make_cyclegan(lr=1e-3, generator_scheduler=linear, discriminator_scheduler=linear)
    trainer = L.Trainer(max_steps=4, limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(model, InversionDataModule(batch_size=4))
    opt_g, opt_d = model.optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.6)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.6)


@pytest.mark.parametrize("pool_size, stored", [(0, 0), (50, 12)])
def test_discriminator_step_draws_fakes_through_the_pools(pool_size, stored, tiny_trainer_kwargs):
    model = make_cyclegan(pool_size=pool_size)
    queried: list[int] = []
    original = model.pool_b.query
    model.pool_b.query = lambda images, generator=None: queried.append(images.shape[0]) or original(images, generator)
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(model, InversionDataModule(batch_size=4))
    assert queried == [4, 4, 4]
    assert int(model.pool_a.num_stored) == int(model.pool_b.num_stored) == stored


def test_checkpoints_keep_translations_and_pools(tmp_path, tiny_trainer_kwargs):
    L.seed_everything(0)
    data = InversionDataModule(batch_size=4)
    x = data.val_images[:4]
    for model, rebuild in (
        (make_pix2pix(), lambda p: Pix2Pix.load_from_checkpoint(
            p, generator=UNetGenerator(3, 3, 8, num_downs=4), discriminator=PatchGANDiscriminator(6, 8, 2))),
        (make_cyclegan(), lambda p: CycleGAN.load_from_checkpoint(
            p, generator_ab=ResnetGenerator(3, 3, 8, num_blocks=1), generator_ba=ResnetGenerator(3, 3, 8, num_blocks=1),
            discriminator_a=PatchGANDiscriminator(3, 8, 2), discriminator_b=PatchGANDiscriminator(3, 8, 2))),
    ):
        trainer = L.Trainer(max_steps=3, limit_val_batches=0, **tiny_trainer_kwargs)
        trainer.fit(model, data)
        path = tmp_path / f"{type(model).__name__}.ckpt"
        trainer.save_checkpoint(path)
        loaded = rebuild(path)
        assert torch.equal(loaded.sample(4, a=x), model.sample(4, a=x))
        if isinstance(model, CycleGAN):
            assert torch.equal(loaded.translate(x, "BtoA"), model.translate(x, "BtoA"))
            assert int(loaded.pool_b.num_stored) == 12
            assert torch.equal(loaded.pool_b.images, model.pool_b.images)
            assert loaded.hparams.pool_size == 50 and loaded.hparams.cycle_weight == 10.0


def test_sample_needs_its_condition():
    p2p, cyc = make_pix2pix(), make_cyclegan()
    x = smooth_images(3, 0)
    assert p2p.sample(3, a=x).shape == (3, 3, SIZE, SIZE)
    assert cyc.sample(3, b=x).shape == (3, 3, SIZE, SIZE)
    with pytest.raises(TypeError, match="needs the A images"):
        p2p.sample(3)
    with pytest.raises(ValueError, match="num_samples=2 but 3"):
        p2p.sample(2, a=x)
    with pytest.raises(TypeError, match="unexpected arguments"):
        p2p.sample(3, a=x, labels=torch.zeros(3))
    with pytest.raises(TypeError, match="exactly one"):
        cyc.sample(3)
    with pytest.raises(TypeError, match="exactly one"):
        cyc.sample(3, a=x, b=x)
    with pytest.raises(ValueError, match="direction"):
        cyc.translate(x, "AtoC")
    with pytest.raises(ValueError, match="identity_weight"):
        CycleGAN(ResnetGenerator(1, 3, 8, 1), ResnetGenerator(3, 1, 8, 1), PatchGANDiscriminator(1, 8, 2),
                 PatchGANDiscriminator(3, 8, 2))


def test_translate_is_deterministic_and_restores_train_mode():
    model = make_pix2pix()  # the U-Net has dropout: eval mode turns it off
    x = smooth_images(2, 0)
    assert torch.equal(model.translate(x), model.translate(x))
    assert model.generator.training
    assert torch.equal(model.predict_step({"a": x, "b": -x}, 0), model.translate(x))


@pytest.mark.slow
def test_pix2pix_learns_colour_inversion(tiny_trainer_kwargs):
    L.seed_everything(0)
    model, data = make_pix2pix(), InversionDataModule(batch_size=16)
    val_a = data.val_images
    before = float((model.translate(val_a) + val_a).abs().mean())
    trainer = L.Trainer(max_steps=150, check_val_every_n_epoch=None, val_check_interval=150, num_sanity_val_steps=0,
                        **tiny_trainer_kwargs)
    trainer.fit(model, data)
    after = float(trainer.callback_metrics["val/l1"])
    print(f"pix2pix inversion val L1: before {before:.3f}, after {after:.3f}")
    assert 0.2 < before < 0.6  # an untrained net outputs ~0: L1 ~ E|a| of the smooth images
    assert 0.005 < after < 0.35 * before
    assert after == pytest.approx(float((model.translate(val_a) + val_a).abs().mean()), rel=1e-4)


@pytest.mark.slow
def test_cyclegan_runs_on_inversion_and_cycle_l1_decreases(tiny_trainer_kwargs):
    L.seed_everything(0)
    model, data = make_cyclegan(paired_validation=True), InversionDataModule(batch_size=16)
    trainer = L.Trainer(max_steps=120, check_val_every_n_epoch=None, val_check_interval=120, num_sanity_val_steps=0,
                        **tiny_trainer_kwargs)
    before = trainer.validate(model, data, verbose=False)[0]
    trainer.fit(model, data)
    after = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"cyclegan val cycle L1: before {before['val/cycle_l1']:.3f}, after {after['val/cycle_l1']:.3f}; "
          f"l1_ab before {before['val/l1_ab']:.3f}, after {after['val/l1_ab']:.3f}")
    assert 0.2 < before["val/cycle_l1"] < 0.8
    assert 0.01 < after["val/cycle_l1"] < 0.75 * before["val/cycle_l1"]
    assert 0.0 < after["val/l1_ab"] < 2.0
    assert trainer.global_step == 120


def _fit_cyclegan(max_epochs: int, root: Path, ckpt_path: str | None = None) -> dict[str, Tensor]:
    L.seed_everything(5)
    model = make_cyclegan(pool_size=6)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=0,
                        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                        callbacks=[ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1)], deterministic=True)
    trainer.fit(model, InversionDataModule(batch_size=4), ckpt_path=ckpt_path)
    assert trainer.global_step == 2 * max_epochs
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_cyclegan_resume_continues_exactly(tmp_path):
    full = _fit_cyclegan(2, tmp_path / "full")
    _fit_cyclegan(1, tmp_path / "half")
    resumed = _fit_cyclegan(2, tmp_path / "resumed", ckpt_path=str(tmp_path / "half" / "epoch=0-step=2.ckpt"))
    assert int(resumed["pool_b.num_stored"]) == 6  # the pools (random swaps included) continue from the checkpoint
    for name, value in full.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-6, atol=1e-7, msg=f"{name} differs after resume")


class _SaveFinalState(L.Callback):
    """Each DDP rank saves its final state dict, step count and DDP settings (for the DDP test)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: CycleGAN) -> None:
        info = {"state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                "global_step": trainer.global_step, "world_size": trainer.world_size,
                "find_unused_parameters": trainer.strategy._ddp_kwargs.get("find_unused_parameters", False)}
        torch.save(info, self.out / f"rank{trainer.global_rank}.pt")


def _ddp_main(out: Path) -> None:
    """Fit a tiny CycleGAN with ``strategy="ddp"`` on 2 CPU processes (DDP re-runs this file for rank 1)."""
    torch.set_num_threads(1)
    L.seed_everything(3)
    model = make_cyclegan()
    if os.environ.get("LOCAL_RANK", "0") == "0":
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / "init.pt")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=4, limit_val_batches=1,
                        val_check_interval=2, check_val_every_n_epoch=None, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[_SaveFinalState(out)])
    trainer.fit(model, InversionDataModule(batch_size=4))


@pytest.mark.slow
def test_cyclegan_ddp_two_cpu_processes_without_find_unused(tmp_path):
    from conftest import run_script  # here, not at the top: this file is also the DDP script (tests/ not on its path)

    proc = run_script(Path(__file__).resolve(), str(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    for info in ranks:
        assert info["world_size"] == 2 and info["global_step"] == 4 and info["find_unused_parameters"] is False
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    params = [name for name, _ in make_cyclegan().named_parameters()]
    for name in params:  # gradients are averaged: every trained weight is identical on both ranks
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    norm_stats = [n for n in a if n.startswith("discriminator") and "running_" in n]
    assert norm_stats  # the PatchGANs' BatchNorm statistics: rank 0's are broadcast after each step
    for name in norm_stats:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    for prefix in ("generator_ab.", "generator_ba.", "discriminator_a.", "discriminator_b."):
        assert max((a[n] - init[n]).abs().max().item() for n in params if n.startswith(prefix)) > 1e-4


if __name__ == "__main__":
    _ddp_main(Path(sys.argv[1]))
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
