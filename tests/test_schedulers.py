"""Tests for lightning_gen/schedulers.py: the linear-decay rule of the CycleGAN/pix2pix code."""

from __future__ import annotations

import pytest
import torch

from lightning_gen.schedulers import LinearDecayLR


def test_constant_then_linear_decay_as_in_the_reference_code():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = LinearDecayLR(opt, constant_steps=3, decay_steps=4)
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the reference code's rule, with its epochs as our steps: 1 - max(0, n + 1 - 3) / (4 + 1) for step n
    assert lrs == pytest.approx([2e-4 * f for f in (1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0)], rel=1e-12, abs=1e-15)
    state = sched.state_dict()
    again = LinearDecayLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4), 3, 4)
    again.load_state_dict(state)
    assert again.last_epoch == sched.last_epoch and again.factor(again.last_epoch) == sched.factor(sched.last_epoch)


def test_bad_arguments_are_reported():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_steps >= 1"):
        LinearDecayLR(opt, constant_steps=5, decay_steps=0)


# -- schedules that follow the run --------------------------------------------------------------------------------
import math  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402

from lightning_gen import GAN, VAE  # noqa: E402
from lightning_gen.cli import GenerativeCLI  # noqa: E402
from lightning_gen.data import ToyGaussiansDataModule  # noqa: E402
from lightning_gen.nets import MLPDecoder, MLPDiscriminator, MLPEncoder, MLPGenerator  # noqa: E402
from lightning_gen.schedulers import CosineAnnealingLR, LinearLR, steps_in_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _sgd(lr: float = 2.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(opt: torch.optim.Optimizer, sched, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_and_cosine_with_an_explicit_length_match_torch():
    ours, theirs = _sgd(), _sgd()
    got = _lrs(ours, LinearLR(ours, 1.0, 0.01, total_iters=7), 10)
    want = _lrs(theirs, torch.optim.lr_scheduler.LinearLR(theirs, 1.0, 0.01, total_iters=7), 10)
    assert got == pytest.approx(want, rel=1e-12)
    assert got[-1] == pytest.approx(2.0 * 0.01, rel=1e-12)
    ours, theirs = _sgd(), _sgd()
    got = _lrs(ours, CosineAnnealingLR(ours, T_max=6, eta_min=0.1), 9)
    want = _lrs(theirs, torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=6, eta_min=0.1), 7)
    assert got[:7] == pytest.approx(want, rel=1e-12)
    assert got[6:] == pytest.approx([0.1] * 3, rel=1e-12)  # stays at eta_min past T_max (torch's would rise)


def test_a_schedule_left_without_length_takes_the_run_and_says_when_nobody_gave_it():
    opt = _sgd()
    sched = LinearLR(opt, 1.0, 0.0)
    assert sched.needs_run_length and opt.param_groups[0]["lr"] == 2.0
    sched.set_run_length(4)
    assert sched.total_iters == 4 and _lrs(opt, sched, 5) == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0], abs=1e-12)
    lone = _sgd()
    unresolved = LinearLR(lone)
    lone.step()
    with pytest.raises(RuntimeError, match="total_iters"):
        unresolved.step()


def test_linear_decay_takes_the_missing_lengths_from_the_run():
    halves = LinearDecayLR(_sgd(), constant_fraction=0.5)
    halves.set_run_length(9)
    assert (halves.constant_steps, halves.decay_steps) == (4, 5)  # round(4.5) = 4 (banker's rounding)
    rest = LinearDecayLR(_sgd(), constant_steps=3)
    rest.set_run_length(10)
    assert (rest.constant_steps, rest.decay_steps) == (3, 7)
    with pytest.raises(ValueError, match="lengthen the run"):
        LinearDecayLR(_sgd(), constant_steps=10).set_run_length(10)


def test_steps_in_run_counts_each_players_steps():
    assert steps_in_run(100, -1) == 100
    assert steps_in_run(100, -1, steps_per_generator_step=5) == 500  # WGAN-GP's critic
    # 2 epochs of 15 batches; GAN n_critic 2, accumulate 2: a generator step every 4 batches, a critic step every 2
    assert steps_in_run(-1, 2, 15, batches_per_generator_step=4) == 7
    assert steps_in_run(-1, 2, 15, batches_per_generator_step=4, steps_per_generator_step=2) == 15
    assert steps_in_run(5, 2, 15, batches_per_generator_step=4) == 5  # whichever ends the run first
    with pytest.raises(ValueError, match="max_steps"):
        steps_in_run(-1, -1, 15)
    with pytest.raises(ValueError, match="no length"):
        steps_in_run(-1, 3, float("inf"))


class _RecordLearningRates(L.Callback):
    """The learning rate of every optimizer step, per optimizer (in the order of ``trainer.optimizers``)."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        index = next(i for i, o in enumerate(trainer.optimizers) if o is optimizer)
        self.lrs.setdefault(index, []).append(optimizer.param_groups[0]["lr"])


def _linear(step: int, total: int, base: float = 2e-3, end: float = 0.01) -> float:
    """torch's LinearLR after ``step`` steps of ``total``, from factor 1 to ``end``."""
    return base * (1 + (end - 1) * min(step, total) / total)


def _toy_recipe(tmp_path: Path, *overrides: str) -> tuple[GenerativeCLI, _RecordLearningRates]:
    cli = GenerativeCLI(run=False, args=[
        f"--config={ROOT / 'configs' / 'wgan_gp' / 'toy_ring.yaml'}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0",
        "--data.train_size=512", "--data.batch_size=64", *overrides,
    ])
    recorder = _RecordLearningRates()
    cli.trainer.callbacks.append(recorder)
    return cli, recorder


@pytest.mark.parametrize("max_steps", [6, 10])
def test_the_toy_recipe_schedules_follow_an_overridden_max_steps(max_steps, tmp_path):
    """`lightning-gen fit --config configs/wgan_gp/toy_ring.yaml --trainer.max_steps N` (n_critic 2): the generator's
    rate decays linearly to 1 % over N steps, the critic's over 2N, whatever N is."""
    cli, recorder = _toy_recipe(tmp_path, f"--trainer.max_steps={max_steps}")
    cli.trainer.fit(cli.model, cli.datamodule)
    gen, dis = recorder.lrs[0], recorder.lrs[1]  # players in registration order: generator, discriminator
    assert len(gen) == max_steps and len(dis) == 2 * max_steps
    assert gen[-1] == pytest.approx(_linear(max_steps - 1, max_steps), rel=1e-9)
    assert dis[-1] == pytest.approx(_linear(2 * max_steps - 1, 2 * max_steps), rel=1e-9)
    assert cli.model.scheduler_of("generator").get_last_lr()[0] == pytest.approx(2e-3 * 0.01, rel=1e-9)
    assert cli.model.scheduler_of("discriminator").get_last_lr()[0] == pytest.approx(2e-3 * 0.01, rel=1e-9)


def test_extending_a_resumed_run_stretches_its_schedule(tmp_path):
    """Fit 6 steps, then resume from last.ckpt with max_steps 10: the schedule continues from step 6 of 10."""
    cli, _ = _toy_recipe(tmp_path / "first", "--trainer.max_steps=6")
    cli.trainer.fit(cli.model, cli.datamodule)
    last = next((tmp_path / "first").rglob("last.ckpt"))
    cli, recorder = _toy_recipe(tmp_path / "more", "--trainer.max_steps=10")
    # no silent divergence: the stretched schedule cannot repeat an uninterrupted run, and one warning per schedule
    # says so, with the two lengths
    with pytest.warns(UserWarning, match=r"sized for 6 steps .* this run's for 10") as record:
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(last))
    assert len([w for w in record if "follows the run" in str(w.message)]) == 2  # generator's and critic's
    assert any("sized for 12 steps" in str(w.message) and "for 20" in str(w.message) for w in record)
    gen, dis = recorder.lrs[0], recorder.lrs[1]
    assert len(gen) == 4 and len(dis) == 8
    assert gen == pytest.approx([_linear(k, 10) for k in range(6, 10)], rel=1e-9)
    assert dis == pytest.approx([_linear(k, 20) for k in range(12, 20)], rel=1e-9)


def test_resuming_with_the_same_run_length_does_not_warn(tmp_path, recwarn):
    """A resume that keeps max_steps (a killed run, say) continues the same schedule, and says nothing about it."""

    class SaveAtFirstEpochEnd(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 0:
                trainer.save_checkpoint(tmp_path / "epoch0.ckpt")

    cli, _ = _toy_recipe(tmp_path / "first", "--trainer.max_steps=6")
    cli.trainer.callbacks.append(SaveAtFirstEpochEnd())
    cli.trainer.fit(cli.model, cli.datamodule)
    cli, recorder = _toy_recipe(tmp_path / "again", "--trainer.max_steps=6")
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(tmp_path / "epoch0.ckpt"))
    assert len(recorder.lrs[0]) == 2  # 4 of the 6 steps were in the checkpoint
    assert recorder.lrs[0] == pytest.approx([_linear(k, 6) for k in (4, 5)], rel=1e-9)
    assert not [w for w in recwarn if "follows the run" in str(w.message)]


def _gan(accumulate: int) -> GAN:
    adam = partial(torch.optim.Adam, lr=2e-3)
    linear = partial(LinearLR, start_factor=1.0, end_factor=0.01)
    return GAN(MLPGenerator(2, 2, (8,)), MLPDiscriminator(2, (8,)), n_critic=2, accumulate_grad_batches=accumulate,
               generator_optimizer=adam, discriminator_optimizer=adam, generator_scheduler=linear,
               discriminator_scheduler=linear)


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, **kwargs)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_an_epoch_based_gan_run_counts_each_players_steps(accumulate):
    """max_epochs 2 of 15 batches, n_critic 2: the schedules span exactly the steps each optimizer takes."""
    L.seed_everything(0)
    recorder = _RecordLearningRates()
    model = _gan(accumulate)
    _trainer(max_epochs=2, callbacks=[recorder]).fit(model, ToyGaussiansDataModule(train_size=15 * 16, batch_size=16))
    for index, name in enumerate(("generator", "discriminator")):
        taken, total = len(recorder.lrs[index]), model.scheduler_of(name).total_iters
        assert total == (30 // (2 * accumulate) if name == "generator" else 30 // accumulate) == taken
        assert recorder.lrs[index][-1] == pytest.approx(_linear(total - 1, total), rel=1e-9)


def test_an_epoch_based_likelihood_run_follows_lightnings_step_count():
    """VAE, max_epochs 2 of 15 batches, accumulate_grad_batches 2: ceil(15 / 2) = 8 optimizer steps an epoch."""
    L.seed_everything(0)
    recorder = _RecordLearningRates()
    model = VAE(MLPEncoder(2, 4, (8,)), MLPDecoder(2, 2, (8,)), likelihood="gaussian", data_range=None,
                scheduler=partial(CosineAnnealingLR, eta_min=1e-4))
    trainer = _trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[recorder])
    trainer.fit(model, ToyGaussiansDataModule(train_size=15 * 16, batch_size=16))
    (lrs,) = recorder.lrs.values()
    assert model.lr_schedulers().T_max == 16 == len(lrs)
    assert model.lr_schedulers().get_last_lr()[0] == pytest.approx(1e-4, rel=1e-9)


def test_a_run_without_end_stops_clearly():
    with pytest.raises(ValueError, match=r"generator scheduler \(LinearLR\).*--trainer.max_steps"):
        _trainer(max_epochs=-1).fit(_gan(1), ToyGaussiansDataModule(train_size=64, batch_size=16))
