"""Fit one of the resume tests' cases on 1 or 2 CPU processes, with periodic and epoch-end checkpoints, optionally
resuming from a checkpoint or SIGKILLing the whole process group in the middle of a step.

Run as a script (DDP re-launches it for rank 1)::

    python tests/scripts/resume_case.py CASE OUT MAX_STEPS [--devices 2] [--nodes 2] [--ckpt PATH] [--kill-at-step K]
        [--images DIR] [--num-workers N] [--then CASE OUT MAX_STEPS [--ckpt PATH] [--kill-at-step K] ...]

``CASE`` is ``gan`` (n_critic 2, accumulation 2), ``cyclegan`` (accumulation 2, image pools, on
``UnpairedImageDataModule`` over ``--images``/trainA and trainB: resize to 20 px, random 16 px crop and flip, as
configs/cyclegan/folders.yaml does, with ``--num-workers`` loader processes), ``vae``
or ``ddpm`` (with EMA); every case has 15 (GAN, VAE, DDPM) or 11 (CycleGAN) training batches per rank and epoch.
Checkpoints: ``OUT/steps/`` (``every_n_train_steps`` of the case, plus ``last.ckpt``) and ``OUT/epochs/`` (every
epoch end). Each rank saves its final state dict and optimizer states to ``OUT/rank{r}.pt``.

``--nodes N`` simulates N nodes of ``--devices`` processes each, launched from outside as a cluster does: every
process runs this script with ``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set
(tests/modules/test_multinode.py), and the trainer gets ``num_nodes=N``. Each rank's file also holds the fingerprints
of the samples it trained on in epoch 0 of a run started from scratch (``seen``) and its random state when its first
training batch started (``rng_at_start``).

``--then`` chains runs in one process (one interpreter start, one process group): the tests use it to save time. A
run whose ``--ckpt`` does not exist (an earlier run failed to write it) is skipped with a message.
``--kill-at-step K``: at the first optimizer step taken once ``trainer.global_step >= K`` (after the backward, before
the step; for the GAN a critic step inside a critic-only batch) the whole process group is SIGKILLed, so the run leaves
exactly the files a killed job leaves; put it on the last run of a chain.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_gen import DDPM, GAN, VAE, CycleGAN, GenerativeModule
from lightning_gen.data import ToyGaussiansDataModule, UnpairedImageDataModule
from lightning_gen.nets import (MLPDecoder, MLPDenoiser, MLPDiscriminator, MLPEncoder, MLPGenerator,
                                PatchGANDiscriminator, ResnetGenerator)

# the periodic save every this many global steps, per case
EVERY_N_STEPS = {"gan": 3, "cyclegan": 3, "vae": 6, "ddpm": 6}
CYCLEGAN_IMAGES_A = 88  # 11 batches per epoch: batch 8 in one process, 4 per rank in two


def _toy(devices: int) -> ToyGaussiansDataModule:
    return ToyGaussiansDataModule(mixture="ring", train_size=15 * 32 * devices, val_size=64, batch_size=32)


def _gan() -> GAN:
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9))
    return GAN(MLPGenerator(2, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), loss="wasserstein",
               regularizer="gradient_penalty", n_critic=2, accumulate_grad_batches=2, ema_decay=0.9,
               generator_optimizer=adam, discriminator_optimizer=adam)


def _cyclegan() -> CycleGAN:
    adam = partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999))
    return CycleGAN(ResnetGenerator(3, 3, 8, num_blocks=1), ResnetGenerator(3, 3, 8, num_blocks=1),
                    PatchGANDiscriminator(3, 8, num_layers=2), PatchGANDiscriminator(3, 8, num_layers=2),
                    generator_optimizer=adam, discriminator_optimizer=adam, pool_size=6, accumulate_grad_batches=2)


def _unpaired(devices: int, images: Optional[Path], num_workers: int) -> UnpairedImageDataModule:
    if images is None:
        raise SystemExit("the cyclegan case needs --images DIR (holding trainA/ and trainB/)")
    # the shipped configs/cyclegan/folders.yaml's preprocessing: resize to load_size, random crop, random flip
    return UnpairedImageDataModule(str(images / "trainA"), str(images / "trainB"), image_size=16, load_size=20,
                                   flip=True, channels=3, batch_size=8 // devices, num_workers=num_workers)


CASES: dict[str, Callable[[], GenerativeModule]] = {
    "gan": _gan,
    "cyclegan": _cyclegan,
    "vae": lambda: VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian", data_range=None),
    "ddpm": lambda: DDPM(MLPDenoiser(2, (16,), 8), num_timesteps=50, ema_decay=0.9),
}


def _fingerprints(batch) -> list[float]:
    """One number per sample of the batch's first tensor (a toy point, an image of domain A)."""
    while not isinstance(batch, torch.Tensor):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    flat = batch.detach().flatten(1).double()
    return (flat.sum(1) + 1e-3 * flat.pow(2).sum(1)).tolist()


class SaveFinalState(L.Callback):
    """Every rank writes its final state dict, optimizer states and counters to ``OUT/rank{r}.pt``, with the samples
    it saw in epoch 0 (of a run from scratch) and its random state at its first training batch."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seen: list[float] = []
        self.rng_at_start: Optional[torch.Tensor] = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.rng_at_start is None:
            self.rng_at_start = torch.get_rng_state()
        if trainer.current_epoch == 0 and trainer.ckpt_path is None:
            self.seen += _fingerprints(batch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save({"state_dict": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                    "optimizers": [o.state_dict() for o in trainer.optimizers], "global_step": trainer.global_step,
                    "epoch": trainer.current_epoch, "world_size": trainer.world_size, "seen": self.seen,
                    "rng_at_start": self.rng_at_start}, self.out / f"rank{trainer.global_rank}.pt")


class KillAtStep(L.Callback):
    """SIGKILL the whole process group (every rank) at the first optimizer step once ``global_step >= step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step >= self.step:
            print(f"rank {trainer.global_rank}: SIGKILL at global step {trainer.global_step}, batch "
                  f"{trainer.fit_loop.epoch_loop.batch_progress.current.ready} of epoch {trainer.current_epoch}",
                  flush=True)
            os.killpg(os.getpgid(0), signal.SIGKILL)


def fit(case: str, out: Path, max_steps: int, devices: int, ckpt: Optional[str], kill_at_step: Optional[int],
        images: Optional[Path], num_workers: int, nodes: int = 1) -> None:
    """One run of ``case`` to ``max_steps`` generator/optimizer steps (see the module docstring)."""
    L.seed_everything(5)
    model = CASES[case]()
    world = devices * nodes
    data = _unpaired(world, images, num_workers) if case == "cyclegan" else _toy(world)
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=out / "steps", filename="{epoch}-{step}", save_top_k=-1, save_last=True,
                        every_n_train_steps=EVERY_N_STEPS[case]),
        ModelCheckpoint(dirpath=out / "epochs", filename="{epoch}-{step}", save_top_k=-1, every_n_epochs=1,
                        save_on_train_epoch_end=True),
        SaveFinalState(out),
    ]
    if kill_at_step is not None:
        callbacks.append(KillAtStep(kill_at_step))
    strategy = "ddp" if world > 1 else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=devices, num_nodes=nodes, strategy=strategy, max_steps=max_steps,
                        logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=str(out), callbacks=callbacks)
    trainer.fit(model, data, ckpt_path=ckpt)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("out", type=Path)
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--devices", type=int, default=None, help="1 or 2 CPU processes (the first run's; default 1)")
    parser.add_argument("--nodes", type=int, default=None, help="simulated nodes (the first run's; default 1)")
    parser.add_argument("--ckpt", default=None, help="resume from this checkpoint")
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--images", type=Path, default=None, help="folder holding trainA/ and trainB/ (cyclegan)")
    parser.add_argument("--num-workers", type=int, default=None, help="cyclegan loader workers (default 0)")
    return parser


def main(argv: list[str]) -> None:
    chunks: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--then":
            chunks.append([])
        else:
            chunks[-1].append(arg)
    runs = [_parser().parse_args(chunk) for chunk in chunks]
    devices, nodes = runs[0].devices or 1, runs[0].nodes or 1
    images, num_workers = runs[0].images, runs[0].num_workers or 0
    for i, run in enumerate(runs):
        if run.devices not in (None, devices) or run.nodes not in (None, nodes):
            raise SystemExit("every run of a chain uses the first run's --devices and --nodes (one process group)")
        if run.kill_at_step is not None and i != len(runs) - 1:
            raise SystemExit("--kill-at-step ends the process: give it to the last run of the chain only")
        if run.ckpt is not None and not Path(run.ckpt).is_file():
            # an earlier run of the chain failed to write it: go on with the others (the tests report what is missing)
            print(f"skipping the run into {run.out}: no checkpoint {run.ckpt}", flush=True)
            continue
        fit(run.case, run.out, run.max_steps, devices, run.ckpt, run.kill_at_step, run.images or images,
            num_workers if run.num_workers is None else run.num_workers, nodes)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
