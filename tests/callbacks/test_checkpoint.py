"""Tests for lightning_gen/callbacks/checkpoint.py: ``last.ckpt`` every N generator steps and every T of wall time,
under manual (GAN, n_critic 2) and automatic (VAE) optimization, resumable exactly, epoch-end saves unchanged."""

from __future__ import annotations

import shutil
import warnings
from datetime import timedelta
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_gen import GAN, VAE
from lightning_gen.callbacks import PeriodicCheckpoint
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPDecoder, MLPDiscriminator, MLPEncoder, MLPGenerator


def _gan() -> GAN:
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.9))
    return GAN(MLPGenerator(2, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), n_critic=2,
               generator_optimizer=adam, discriminator_optimizer=adam)


def _vae() -> VAE:
    return VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian", data_range=None)


def _fit(make_model, root: Path, callback: PeriodicCheckpoint, max_steps: int, ckpt_path: str | None = None,
         copies: dict[int, Path] | None = None) -> tuple[L.Trainer, list[tuple[str, int, str]]]:
    """Fit on 40 batches an epoch; returns the trainer and every save as (file name, global step, hook)."""
    L.seed_everything(3)
    # log_every_n_steps 3: a logged "step" value lags the trainer's; file names must still say the real step
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(root),
                        log_every_n_steps=3, callbacks=[callback])
    saves: list[tuple[str, int, str]] = []
    save = trainer.save_checkpoint

    def spy(path, *args, **kwargs):
        save(path, *args, **kwargs)
        hook = "batch" if trainer.fit_loop.epoch_loop.batch_progress.current.completed < \
            trainer.fit_loop.epoch_loop.batch_progress.current.processed else "epoch"
        saves.append((Path(path).name, trainer.global_step, hook))
        if copies is not None and Path(path).name == "last.ckpt":
            copies[trainer.global_step] = Path(shutil.copy(path, root / f"copy-{trainer.global_step}.ckpt"))

    trainer.save_checkpoint = spy  # type: ignore[method-assign]
    data = ToyGaussiansDataModule(mixture="ring", train_size=40 * 16, val_size=16, batch_size=16)
    trainer.fit(make_model(), data, ckpt_path=ckpt_path)
    return trainer, saves


def test_every_n_train_steps_writes_last_mid_epoch_under_manual_optimization_and_resumes_exactly(tmp_path):
    """GAN with n_critic 2 (two batches per generator step): last.ckpt at generator steps 3, 6 and 9, once each, in
    the middle of the first epoch; the end of the run still writes the epoch checkpoint and last.ckpt. Resuming
    from the step-3 save ends with the uninterrupted run's weights, bit for bit."""
    callback = PeriodicCheckpoint(dirpath=str(tmp_path / "full"), every_n_train_steps=3)
    copies: dict[int, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "pre-optimization state" warning from Lightning
        warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|exists and is not empty).*")
        full, saves = _fit(_gan, tmp_path / "full", callback, max_steps=10, copies=copies)
    assert saves[:3] == [("last.ckpt", 3, "batch"), ("last.ckpt", 6, "batch"), ("last.ckpt", 9, "batch")]
    assert saves[3:] == [("epoch=0-step=10.ckpt", 10, "epoch"), ("last.ckpt", 10, "epoch")]
    ckpt = torch.load(copies[3], weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["lightning_gen_counters"]["player_steps"]["discriminator"] == 6
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 6  # of 40 batches

    resumed, resaves = _fit(_gan, tmp_path / "resumed", PeriodicCheckpoint(every_n_train_steps=3), 10,
                            ckpt_path=str(copies[3]))
    assert [s for s in resaves if s[2] == "batch"] == [("last.ckpt", 6, "batch"), ("last.ckpt", 9, "batch")]
    a, b = full.lightning_module.state_dict(), resumed.lightning_module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make_model", [_gan, _vae], ids=["gan_manual", "vae_automatic"])
def test_train_time_interval_writes_last_when_the_time_has_passed(make_model, tmp_path):
    """A clock that advances one second per generator step: with a 2.5 s interval, saves at steps 3, 6, 9 (the
    clock restarts at each save). Lightning's own train_time_interval never fires under manual optimization."""
    callback = PeriodicCheckpoint(train_time_interval=timedelta(seconds=2.5))
    trainer_ref: list[L.Trainer] = []
    callback._clock = lambda: float(trainer_ref[0].global_step) if trainer_ref else 0.0  # type: ignore[method-assign]

    class Remember(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer_ref.append(trainer)

    L.seed_everything(3)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=10, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
                        callbacks=[Remember(), callback])
    steps: list[int] = []
    save = trainer.save_checkpoint
    trainer.save_checkpoint = lambda path, *a, **k: (steps.append(trainer.global_step), save(path, *a, **k))[1]
    trainer.fit(make_model(), ToyGaussiansDataModule(mixture="ring", train_size=40 * 16, val_size=16, batch_size=16))
    assert steps == [3, 6, 9, 10, 10]  # periodic last.ckpt, then the end of the run: epoch checkpoint + last.ckpt
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_periodic_triggers_need_save_last():
    with pytest.raises(ValueError, match="save_last"):
        PeriodicCheckpoint(every_n_train_steps=10, save_last=False)
    with pytest.raises(ValueError, match="every_n_train_steps"):
        PeriodicCheckpoint(every_n_train_steps=-1)
    with pytest.raises(ValueError, match="train_time_interval"):
        PeriodicCheckpoint(train_time_interval=timedelta(0))
