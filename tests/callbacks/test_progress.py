"""Tests for lightning_gen/callbacks/progress.py: the generator-step progress bar, the end-of-run summary, the
logged x-axis (generator steps) and the PNG copies of pictures."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_gen import GAN
from lightning_gen.callbacks import StepProgressBar, ToyScatterCallback, log_image, run_summary
from lightning_gen.callbacks.progress import total_steps
from lightning_gen.cli import GenerativeCLI, main as cli_main
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPDiscriminator, MLPGenerator

ROOT = Path(__file__).resolve().parents[2]
RING = ROOT / "configs" / "gan" / "toy_ring.yaml"


def make_gan(**kwargs) -> GAN:
    """A tiny GAN for the 2-D ring."""
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.9))
    return GAN(MLPGenerator(2, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), generator_optimizer=adam,
               discriminator_optimizer=adam, **kwargs)


def ring(**kwargs) -> ToyGaussiansDataModule:
    """A small ring data set: ``train_size / batch_size`` batches per epoch."""
    return ToyGaussiansDataModule(**{"mixture": "ring", "train_size": 256, "val_size": 64, "batch_size": 32, **kwargs})


def fit(tmp_path, model, data, callbacks=(), **trainer_kwargs) -> L.Trainer:
    kwargs = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "log_every_n_steps": 1,
              "limit_val_batches": 0, "default_root_dir": tmp_path, **trainer_kwargs}
    trainer = L.Trainer(callbacks=list(callbacks), **kwargs)
    trainer.fit(model, data)
    return trainer


def test_bar_counts_generator_steps_toward_max_steps_and_shows_losses_and_critic_steps(tmp_path):
    bar = StepProgressBar()
    trainer = fit(tmp_path, make_gan(n_critic=3), ring(), [bar], max_steps=4)
    shown = bar.train_progress_bar
    assert trainer.global_step == 4 and (shown.n, shown.total) == (4, 4)  # 12 critic batches, 4 generator steps
    assert "discriminator_steps=12" in shown.postfix
    assert "loss_gen=" in shown.postfix and "loss_dis=" in shown.postfix
    assert "v_num" not in shown.postfix and "train/" not in shown.postfix


def test_bar_total_without_max_steps_is_batches_times_epochs_over_batches_per_step(tmp_path):
    bar = StepProgressBar()
    # 8 batches per epoch, 2 epochs, n_critic 2 -> 8 generator steps
    trainer = fit(tmp_path, make_gan(n_critic=2), ring(), [bar], max_epochs=2)
    assert trainer.global_step == 8
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (8, 8)
    assert total_steps(trainer, trainer.lightning_module) == 8


def test_adversarial_values_are_logged_at_generator_steps(tmp_path):
    logger = CSVLogger(tmp_path)
    fit(tmp_path, make_gan(n_critic=2), ring(), max_steps=8, logger=logger, log_every_n_steps=4,
        limit_val_batches=1.0, check_val_every_n_epoch=1)
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    train = [r for r in rows if r.get("train/generator_steps")]
    val = [r for r in rows if r.get("val/loss_dis")]
    # batches 4, 8, 12, 16 logged: 2, 4, 6, 8 generator steps (not 4, 8, 12, 16)
    assert [int(r["step"]) for r in train] == [2, 4, 6, 8]
    assert all(int(r["step"]) == float(r["train/generator_steps"]) for r in train)
    assert [int(r["step"]) for r in val] == [4, 8]  # after each 8-batch epoch
    assert [int(float(r["epoch"])) for r in val] == [0, 1]


def test_cli_adds_the_step_bar_unless_the_config_names_a_bar_or_turns_it_off(tmp_path):
    base = [f"--config={RING}", f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    cli = GenerativeCLI(args=base, run=False)
    assert type(cli.trainer.progress_bar_callback) is StepProgressBar
    cli = GenerativeCLI(args=[*base, "--trainer.enable_progress_bar=false"], run=False)
    assert cli.trainer.progress_bar_callback is None
    own = [*base, "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
           "--trainer.callbacks.refresh_rate=7"]
    cli = GenerativeCLI(args=own, run=False)
    assert type(cli.trainer.progress_bar_callback) is TQDMProgressBar
    assert cli.trainer.progress_bar_callback.refresh_rate == 7


@pytest.mark.slow
def test_fit_and_test_print_a_summary_with_metrics_checkpoints_and_pictures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [f"--config={RING}", "--trainer.max_steps=3", "--data.train_size=512", "--data.batch_size=64",
            "--trainer.log_every_n_steps=1"]
    cli_main(["fit", *args])
    out = capsys.readouterr().out
    summary = out[out.index("fit finished at"):]
    lines = summary.splitlines()
    assert lines[0] == "fit finished at generator step 3 (discriminator steps 3)"
    train = " ".join(lines[1:lines.index(next(line for line in lines if line.lstrip().startswith("logs")))])
    assert train.split()[0] == "train" and "loss_gen" in train and "loss_dis" in train and "_steps" not in train
    run = Path("lightning_logs/version_0")
    assert f"  logs         {run}   (view: tensorboard --logdir lightning_logs)" in lines
    assert f"  checkpoints  {run / 'checkpoints'}   (last: {run / 'checkpoints' / 'last.ckpt'})" in lines
    # the toy scatter is drawn at the end of training and saved as a PNG beside the TensorBoard events
    assert f"  pictures     {run / 'images' / 'toy_samples_step3.png'}" in lines
    assert (tmp_path / run / "images" / "toy_samples_step3.png").is_file()

    cli_main(["test", *args, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    summary = capsys.readouterr().out.split("test finished at")[1].splitlines()
    assert summary[0] == " generator step 3 (discriminator steps 3)"
    assert summary[1].split()[0] == "test" and "modes_covered" in " ".join(summary[1:3])
    assert f"  weights      {run / 'checkpoints' / 'last.ckpt'}" in summary


def test_summary_without_logger_or_checkpoints_says_so(tmp_path):
    trainer = fit(tmp_path, make_gan(), ring(), max_steps=2)
    lines = run_summary(trainer, "fit").splitlines()
    assert lines[0] == "fit finished at generator step 2 (discriminator steps 2)"
    assert lines[-1] == "  checkpoints  none (no ModelCheckpoint callback)"
    assert not any(line.lstrip().startswith(("logs", "pictures")) for line in lines)


def test_pictures_are_png_files_under_the_tensorboard_log_dir(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    trainer = L.Trainer(accelerator="cpu", logger=logger, default_root_dir=tmp_path)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[1:4, 2:6] = (255, 0, 0)
    path = log_image(trainer, "toy/samples", image, step=7)
    assert path == Path(logger.log_dir) / "images" / "toy_samples_step7.png"
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)
    assert list(Path(logger.log_dir).glob("events.out.tfevents*")), "TensorBoard got the image too"


def test_toy_scatter_draws_the_last_step_once(tmp_path):
    scatter = ToyScatterCallback(every_n_epochs=2, num_samples=50, resolution=4)
    # 8 batches per epoch, 2 epochs: drawn after epoch 2 (step 16), not again at the end
    fit(tmp_path, make_gan(), ring(), [scatter], max_epochs=2)
    assert sorted(p.name for p in (tmp_path / "images").glob("*.png")) == ["toy_samples_step16.png"]
    # stopped mid-cycle by max_steps: the final picture is drawn at the end of training
    fit(tmp_path / "b", make_gan(), ring(), [scatter], max_steps=5)
    assert sorted(p.name for p in (tmp_path / "b" / "images").glob("*.png")) == ["toy_samples_step5.png"]
