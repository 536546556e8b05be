"""Exact resume in real processes, one and two (DDP, gloo) CPU ranks: the checkpoint a SIGKILLed run leaves, an
epoch-end checkpoint inside a critic cycle / accumulation window, a clean stop at ``max_steps`` resumed to a later
``max_steps``, and a time-based periodic save. Every tensor of every rank's final state dict and optimizer states must be
``torch.equal`` to the uninterrupted run's.

The runs are ``tests/scripts/resume_case.py`` (cases ``gan``: n_critic 2 and accumulation 2 with 15 batches per rank
and epoch; ``cyclegan``: accumulation 2, image pools, 11 batches per epoch on ``UnpairedImageDataModule`` folders with
the shipped recipe's resize, random crop and random flip; ``vae``; ``ddpm`` with EMA). To keep the suite short, one
module-scoped chain per case and process count runs in one interpreter (``--then``): the uninterrupted run, the
``max_steps`` stop, the two resumes, then the run killed by SIGKILL; the next case's interpreter resumes from the killed
run's ``last.ckpt``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from lightning_gen import GAN, VAE
from lightning_gen.callbacks import PeriodicCheckpoint
from lightning_gen.data import ResumableDataLoader
from lightning_gen.nets import MLPDecoder, MLPDiscriminator, MLPEncoder, MLPGenerator

from .test_resume import CASES, _assert_same_state, _fit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "resume_case.py"


@dataclass(frozen=True)
class Shape:
    """The step counts of one case (global steps: generator steps for the games, optimizer steps otherwise)."""

    max_steps: int
    stop: int  # the clean max_steps stop, inside an epoch
    kill_at: int  # SIGKILL at the first optimizer step once global_step >= kill_at ...
    last_save: int  # ... so the killed run's last.ckpt is this periodic (every_n_train_steps) save, mid-epoch
    epoch0_end: int  # global step at the end of epoch 0 (its epoch-end checkpoint)


SHAPES = {
    # 15 batches per rank and epoch, a generator step every 4 (2 critic steps of 2 micro-batches): epoch 0 ends after
    # 3.75 generator steps (mid-cycle, mid-accumulation); the kill lands in a critic step of a critic-only batch
    "gan": Shape(max_steps=12, stop=5, kill_at=7, last_save=6, epoch0_end=3),
    # 11 batches per epoch, a step every 2 (accumulation): epoch 0 ends inside an accumulation window
    "cyclegan": Shape(max_steps=14, stop=8, kill_at=10, last_save=9, epoch0_end=5),
    "vae": Shape(max_steps=40, stop=22, kill_at=20, last_save=18, epoch0_end=15),
    "ddpm": Shape(max_steps=40, stop=22, kill_at=20, last_save=18, epoch0_end=15),
}
FAMILIES = list(SHAPES)
DEVICES = [1, 2]


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trainA (88 images) and trainB (30) of seeded noise, 26x22 px: resized to 20x20, then cropped to 16."""
    root = tmp_path_factory.mktemp("unpaired")
    rng = np.random.default_rng(0)
    for domain, count in (("trainA", 88), ("trainB", 30)):
        (root / domain).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (22, 26, 3), dtype=np.uint8)).save(root / domain / f"{i:03d}.png")
    return root


@dataclass
class Runs:
    """One case's run folders, the interpreter that ran its chain and was killed, and the one that resumed it."""

    root: Path
    killed: subprocess.CompletedProcess
    resumed: subprocess.CompletedProcess

    def output(self) -> str:
        return "\n".join(p.stdout[-3000:] + p.stderr[-3000:] for p in (self.killed, self.resumed))


def _launch(runs: list[list[str]], cwd: Path) -> subprocess.CompletedProcess:
    """Run the script's chain of ``runs`` in one interpreter (in a session of its own: the kill takes the script's
    process group, DDP's rank 1 and loader workers included, never pytest)."""
    args = [arg for i, run in enumerate(runs) for arg in ([] if i == 0 else ["--then"]) + run]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, str(SCRIPT), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        # the whole session: DDP's rank 1 and the loader workers hold the pipes open, so killing the script alone
        # would leave communicate() waiting for ever
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += "\n[test] the chain ran past 600 s and its process group was killed"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory: pytest.TempPathFactory, image_folders: Path) -> Callable[[int], dict[str, Runs]]:
    """``runs(devices)[case]``: every case's runs on ``devices`` processes, made once per module, shared by the tests.

    Interpreter starts dominate the cost (two per DDP launch), so case ``k``'s runs (uninterrupted run, ``max_steps``
    stop, its resume, the epoch-end resume) share an interpreter with the resume of case ``k - 1``'s killed run and,
    last, case ``k``'s killed run: five interpreters for the four cases.
    """
    cache: dict[int, dict[str, Runs]] = {}

    def runs(devices: int) -> dict[str, Runs]:
        if devices in cache:
            return cache[devices]
        # the CycleGAN loader with two worker processes, like the recipe's (augmentation drawn in the workers)
        common = ["--devices", str(devices), "--images", str(image_folders), "--num-workers", "2"]
        roots = {case: tmp_path_factory.mktemp(f"{case}_{devices}") for case in FAMILIES}
        procs, pending = [], []
        for case in FAMILIES:
            root, s = roots[case], SHAPES[case]
            chain = [
                [case, str(root / "full"), str(s.max_steps)],
                [case, str(root / "stopped"), str(s.stop)],
                [case, str(root / "after_stop"), str(s.max_steps), "--ckpt", str(_stop_checkpoint(root, s.stop))],
                [case, str(root / "after_epoch_end"), str(s.max_steps), "--ckpt",
                 str(root / "full" / "epochs" / f"epoch=0-step={s.epoch0_end}.ckpt")],
            ]
            kill = [[case, str(root / "killed"), str(s.max_steps), "--kill-at-step", str(s.kill_at)]]
            procs.append(_launch([[*run, *common] for run in chain + pending + kill], root))
            pending = [[case, str(root / "after_kill"), str(s.max_steps), "--ckpt",
                        str(root / "killed" / "steps" / "last.ckpt")]]
        procs.append(_launch([[*run, *common] for run in pending], roots[FAMILIES[-1]]))
        cache[devices] = {case: Runs(roots[case], procs[i], procs[i + 1]) for i, case in enumerate(FAMILIES)}
        return cache[devices]

    return runs


def _stop_checkpoint(root: Path, stop: int) -> Path:
    """The checkpoint the run stopped by ``max_steps=stop`` wrote (inside epoch 1 in every case): the epoch-end save
    Lightning makes when ``max_steps`` ends the epoch early."""
    return root / "stopped" / "epochs" / f"epoch=1-step={stop}.ckpt"


def _batches_done(ckpt: Path) -> int:
    """Training batches of the checkpoint's epoch that were completed when it was written."""
    state = torch.load(ckpt, weights_only=False)
    return state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]


def _assert_ranks_equal(runs: Runs, name: str, devices: int, max_steps: int) -> None:
    """Every rank of ``runs.root/name`` ended exactly as the uninterrupted run's same rank."""
    for rank in range(devices):
        path_a, path_b = runs.root / "full" / f"rank{rank}.pt", runs.root / name / f"rank{rank}.pt"
        assert path_a.is_file() and path_b.is_file(), runs.output()
        a, b = torch.load(path_a, weights_only=False), torch.load(path_b, weights_only=False)
        assert a["global_step"] == b["global_step"] == max_steps
        assert a["epoch"] == b["epoch"]
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), f"rank {rank}: {key} differs"
        assert len(a["optimizers"]) == len(b["optimizers"])
        for i, (oa, ob) in enumerate(zip(a["optimizers"], b["optimizers"])):
            assert oa["state"].keys() == ob["state"].keys()
            for key, state in oa["state"].items():
                for field, value in state.items():
                    assert torch.equal(torch.as_tensor(value), torch.as_tensor(ob["state"][key][field])), \
                        f"rank {rank}: optimizer {i} state {key}.{field} differs"


@pytest.mark.slow
@pytest.mark.parametrize("devices", DEVICES)
@pytest.mark.parametrize("case", FAMILIES)
def test_a_run_sigkilled_after_a_periodic_save_resumes_from_last_ckpt_bit_for_bit(case, devices, resume_runs):
    """A real SIGKILL of every process in the middle of a step (for the GAN inside a critic-only batch), after a
    periodic save: the file it leaves, ``last.ckpt``, resumes to the uninterrupted run's weights and optimizers."""
    runs = resume_runs(devices)[case]
    assert runs.killed.returncode == -9, runs.output()  # really killed by SIGKILL
    assert "SIGKILL at global step" in runs.killed.stdout
    last = runs.root / "killed" / "steps" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == SHAPES[case].last_save  # the periodic save before the kill, nothing later
    assert 0 < _batches_done(last) < (11 if case == "cyclegan" else 15)  # in the middle of an epoch
    assert not (runs.root / "killed" / "rank0.pt").exists()
    _assert_ranks_equal(runs, "after_kill", devices, SHAPES[case].max_steps)


@pytest.mark.slow
@pytest.mark.parametrize("devices", DEVICES)
@pytest.mark.parametrize("case", FAMILIES)
def test_an_epoch_end_checkpoint_inside_a_critic_cycle_or_accumulation_window_resumes_bit_for_bit(
        case, devices, resume_runs):
    runs = resume_runs(devices)[case]
    ckpt = runs.root / "full" / "epochs" / f"epoch=0-step={SHAPES[case].epoch0_end}.ckpt"
    if case in ("gan", "cyclegan"):  # the epoch really ends with gradients accumulated towards a step not yet taken
        state = torch.load(ckpt, weights_only=False)
        assert any(state["lightning_gen_counters"]["player_micro_batches"].values())
        assert len(state["lightning_gen_pending_grads"]) == devices
    _assert_ranks_equal(runs, "after_epoch_end", devices, SHAPES[case].max_steps)


@pytest.mark.slow
@pytest.mark.parametrize("devices", DEVICES)
@pytest.mark.parametrize("case", FAMILIES)
def test_a_clean_stop_at_max_steps_resumed_to_a_later_max_steps_is_bit_for_bit(case, devices, resume_runs):
    runs = resume_runs(devices)[case]
    ckpt = _stop_checkpoint(runs.root, SHAPES[case].stop)
    assert ckpt.is_file(), runs.output()
    assert torch.load(ckpt, weights_only=False)["global_step"] == SHAPES[case].stop
    assert 0 < _batches_done(ckpt) < (11 if case == "cyclegan" else 15)  # the stop is inside an epoch
    _assert_ranks_equal(runs, "after_stop", devices, SHAPES[case].max_steps)


class _KeepLastCopies(L.Callback):
    """Keeps a copy of ``folder/last.ckpt`` each time it was rewritten (periodic saves overwrite it in place)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        last = self.folder / "last.ckpt"
        if last.is_file() and last.stat().st_mtime_ns != self.seen:
            self.seen = last.stat().st_mtime_ns
            shutil.copy(last, self.folder / f"copy-{len(list(self.folder.glob('copy-*')))}.ckpt")


def _fit_in_process(case: str, root: Path, callbacks: list, ckpt_path: str | None = None) -> L.Trainer:
    L.seed_everything(11)
    make_model, make_data = CASES[case]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=12 if case.startswith("gan") else 40, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(root), enable_checkpointing=bool(callbacks), callbacks=callbacks)
    trainer.fit(make_model(), make_data(), ckpt_path=ckpt_path)
    return trainer


@pytest.fixture
def one_thread():
    """One intra-op thread, as the scripts use: tiny nets gain nothing from two, and lose much on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gan_ncritic2_acc2", "vae"])
def test_a_time_based_periodic_checkpoint_in_the_middle_of_an_epoch_resumes_bit_for_bit(case, tmp_path, one_thread):
    """Saves every ``train_time_interval`` of wall time land wherever the clock says; a run resumed from one of its
    saves in the middle of an epoch ends exactly as the uninterrupted run (which wrote them) did. The GAN (manual
    optimization, where Lightning's ``ModelCheckpoint`` ignores ``train_time_interval``) uses
    ``PeriodicCheckpoint``, which rewrites ``last.ckpt``; the VAE uses Lightning's ``ModelCheckpoint``."""
    folder = tmp_path / "full"
    interval = timedelta(milliseconds=1)  # shorter than any step: a save at nearly every step, where time allows
    if case.startswith("gan"):
        callbacks = [PeriodicCheckpoint(dirpath=str(folder), train_time_interval=interval), _KeepLastCopies(folder)]
        pattern = "copy-*.ckpt"
    else:
        callbacks = [ModelCheckpoint(dirpath=folder, save_top_k=-1, train_time_interval=interval)]
        pattern = "*step=*.ckpt"
    full = _fit_in_process(case, folder, callbacks)
    saves = sorted(folder.glob(pattern))
    mid_epoch = [c for c in saves if 0 < _batches_done(c) < 15]
    assert mid_epoch, [(c.name, _batches_done(c)) for c in saves]
    ckpt = mid_epoch[len(mid_epoch) // 2]
    resumed = _fit_in_process(case, tmp_path / "resumed", [], str(ckpt))
    assert resumed.global_step == full.global_step
    _assert_same_state(full, resumed)


class _SamplerEpochs(L.Callback):
    """Records ``(trainer.current_epoch, the training sampler's epoch)`` at the first batch of every epoch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.seen.append((trainer.current_epoch, trainer.train_dataloader.sampler.epoch))


def test_after_a_resume_from_an_epoch_end_checkpoint_each_epoch_gets_its_own_sampler_epoch(tmp_path, one_thread):
    """Lightning sets the samplers' epoch from its count of processed epochs, which in a run limited by ``max_steps``
    runs one ahead of ``current_epoch`` after resuming from a checkpoint written at an epoch end (an epoch-end save,
    a ``max_steps`` stop); the module sets it back, so a ``DistributedSampler``'s order (every DDP run) and an unpaired pairing
    repeat the uninterrupted run's."""
    points = torch.randn(120, 2, generator=torch.Generator().manual_seed(0))

    def fit(root: Path, ckpt_path: str | None = None) -> tuple[L.Trainer, list[tuple[int, int]]]:
        L.seed_everything(3)
        sampler = torch.utils.data.DistributedSampler(points, num_replicas=1, rank=0, shuffle=True, seed=1)
        loader = ResumableDataLoader(torch.utils.data.TensorDataset(points), batch_size=8, sampler=sampler)  # 15
        epochs = _SamplerEpochs()
        # a run limited by max_steps (iteration-based: Lightning does not re-sync its epoch counts on resume)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=40, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=str(root), callbacks=[
                                epochs, ModelCheckpoint(dirpath=root, save_top_k=-1, save_on_train_epoch_end=True)])
        model = VAE(MLPEncoder(2, 4, (8,)), MLPDecoder(2, 2, (8,)), likelihood="gaussian", data_range=None)
        trainer.fit(model, loader, ckpt_path=ckpt_path)
        return trainer, epochs.seen

    full, seen_full = fit(tmp_path / "full")
    assert seen_full == [(0, 0), (1, 1), (2, 2)]
    resumed, seen_resumed = fit(tmp_path / "resumed", str(next((tmp_path / "full").glob("epoch=0-*.ckpt"))))
    assert seen_resumed == [(1, 1), (2, 2)]  # without the module's correction: (1, 2), (2, 3)
    _assert_same_state(full, resumed)


def test_a_checkpoint_holding_half_accumulated_gradients_loads_without_a_trainer(tmp_path, one_thread):
    """The epoch-end checkpoint of the GAN case holds a half-accumulated critic step; ``load_from_checkpoint``
    (sampling from a checkpoint, no trainer) restores the weights and ignores the pending gradients."""
    _fit("gan_ncritic2_acc2", tmp_path, 1, limit_val_batches=0)
    (ckpt,) = sorted(tmp_path.glob("epoch=0-*.ckpt"))
    state = torch.load(ckpt, weights_only=False)
    assert "lightning_gen_pending_grads" in state
    model = GAN.load_from_checkpoint(ckpt, generator=MLPGenerator(2, 2, (16, 16)),
                                     discriminator=MLPDiscriminator(2, (16, 16)))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state["state_dict"].items())
    assert all(p.grad is None for p in model.parameters())
