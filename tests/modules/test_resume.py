"""Exact resume from epoch-end checkpoints on the shipped recipes' shapes: an odd number of batches per epoch, so the
epoch ends inside the GAN's ``n_critic`` cycle and inside its accumulation window (lightning_gen/modules/base.py and
adversarial.py). Every tensor of the final state dict and of every optimizer state must be ``torch.equal`` to the
uninterrupted run's.

Mid-epoch checkpoints (``every_n_train_steps`` saves, a run stopped by ``max_steps`` inside an epoch) resume exactly
with this package's data modules, whose training loaders (``lightning_gen.data.ResumableDataLoader``) continue the
epoch's permutation; with a plain ``DataLoader`` a warning says the run will not repeat.

Real processes (a SIGKILLed run, two DDP ranks, CycleGAN on image folders) and time-based saves:
tests/modules/test_resume_kill.py.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_gen import DDPM, GAN, VAE, GenerativeModule
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPDecoder, MLPDenoiser, MLPDiscriminator, MLPEncoder, MLPGenerator

from .test_image_to_image import InversionDataModule, make_cyclegan
from .test_stargan import DomainImages, make_stargan


def _toy() -> ToyGaussiansDataModule:
    return ToyGaussiansDataModule(mixture="ring", train_size=15 * 32, val_size=64, batch_size=32)  # 15 batches


def _gan() -> GAN:
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9))
    return GAN(MLPGenerator(2, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), loss="wasserstein",
               regularizer="gradient_penalty", n_critic=2, accumulate_grad_batches=2, ema_decay=0.9,
               generator_optimizer=adam, discriminator_optimizer=adam)


CASES: dict[str, tuple[Callable[[], GenerativeModule], Callable[[], L.LightningDataModule]]] = {
    # 15 batches an epoch, 2 per critic step, 2 critic steps per generator step: epoch 1 ends mid-cycle and
    # mid-accumulation (7.5 critic steps)
    "gan_ncritic2_acc2": (_gan, _toy),
    "cyclegan": (lambda: make_cyclegan(pool_size=6), lambda: InversionDataModule(batch_size=24)),  # 11 batches
    # 15 batches, 2 per discriminator step, the generator fed by every second step's batches: mid-cycle at epoch end
    "stargan_ncritic2_acc2": (lambda: make_stargan(base=4, n_critic=2, accumulate_grad_batches=2),
                              lambda: DomainImages(train_size=240, batch_size=16)),
    "vae": (lambda: VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian", data_range=None),
            _toy),
    "ddpm_ema": (lambda: DDPM(MLPDenoiser(2, (16,), 8), num_timesteps=50, ema_decay=0.9), _toy),
}


def _fit(case: str, root: Path, max_epochs: int, ckpt_path: str | None = None, **kwargs) -> L.Trainer:
    L.seed_everything(11)
    make_model, make_data = CASES[case]
    model = make_model()
    checkpoints = ModelCheckpoint(dirpath=root, save_top_k=-1, save_on_train_epoch_end=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[checkpoints], default_root_dir=str(root), **kwargs)
    trainer.fit(model, make_data(), ckpt_path=ckpt_path)
    return trainer


def _assert_same_state(a: L.Trainer, b: L.Trainer) -> None:
    sa, sb = a.lightning_module.state_dict(), b.lightning_module.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), f"{name} differs from the uninterrupted run"
    for i, (oa, ob) in enumerate(zip(a.optimizers, b.optimizers)):
        for key, state in oa.state_dict()["state"].items():
            for field, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(ob.state_dict()["state"][key][field])), \
                    f"optimizer {i} state {key}.{field} differs"


VALIDATION = {
    "no_val": {"limit_val_batches": 0},
    "val_every_epoch": {"limit_val_batches": 2, "check_val_every_n_epoch": 1},
    # the toy recipes' shape (validation every 10 epochs): on resume Lightning replays the end of the checkpoint's
    # epoch and would train one extra batch, which the base skips
    "val_every_2_epochs": {"limit_val_batches": 2, "check_val_every_n_epoch": 2},
}


@pytest.mark.slow
@pytest.mark.parametrize("validation", list(VALIDATION))
@pytest.mark.parametrize("case", list(CASES))
def test_resume_from_an_epoch_end_checkpoint_is_exact(case, validation, tmp_path):
    """A run that dies after its epoch-0 save (SIGKILL, say) resumes from that file exactly as it would have gone on."""
    full = _fit(case, tmp_path / "full", 3, **VALIDATION[validation])
    (ckpt,) = sorted((tmp_path / "full").glob("epoch=0-*.ckpt"))
    resumed = _fit(case, tmp_path / "resumed", 3, ckpt_path=str(ckpt), **VALIDATION[validation])
    assert resumed.global_step == full.global_step > 0
    _assert_same_state(full, resumed)


def test_the_gan_case_really_ends_its_first_epoch_mid_cycle_with_pending_gradients(tmp_path):
    """The shape the test above relies on: the epoch-end checkpoint holds a half-accumulated critic step."""
    _fit("gan_ncritic2_acc2", tmp_path, 1, limit_val_batches=0)
    (ckpt,) = sorted(tmp_path.glob("epoch=0-*.ckpt"))
    state = torch.load(ckpt, weights_only=False)
    counters = state["lightning_gen_counters"]
    assert counters["player_steps"]["discriminator"] % 2 == 1  # inside the n_critic cycle
    assert counters["player_micro_batches"]["discriminator"] == 1  # inside the accumulation window
    (grads,) = state["lightning_gen_pending_grads"]
    assert set(grads) == {"discriminator"} and all(g is not None for g in grads["discriminator"])
    assert sum(float(g.abs().sum()) for g in grads["discriminator"]) > 0


MID_EPOCH = ["gan_ncritic2_acc2", "vae", "ddpm_ema"]  # on lightning_gen's data modules (ResumableDataLoader)


@pytest.mark.slow
@pytest.mark.parametrize("case", MID_EPOCH)
def test_resume_from_a_mid_epoch_periodic_checkpoint_is_exact(case, tmp_path):
    """``every_n_train_steps`` saves land inside epochs; the loader continues the epoch's permutation."""
    steps = 12 if case.startswith("gan") else 40

    def fit(root: Path, ckpt_path: str | None = None) -> L.Trainer:
        L.seed_everything(11)
        make_model, make_data = CASES[case]
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, default_root_dir=str(root),
                            callbacks=[ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=3)])
        trainer.fit(make_model(), make_data(), ckpt_path=ckpt_path)
        return trainer

    full = fit(tmp_path / "full")
    ckpt = next((tmp_path / "full").glob("*-step=6.ckpt"))
    state = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]
    done = state["epoch_loop.batch_progress"]["current"]["completed"]
    assert 0 < done < 15 - 1  # really in the middle of an epoch
    resumed = fit(tmp_path / "resumed", str(ckpt))
    _assert_same_state(full, resumed)


@pytest.mark.slow
def test_resume_from_a_save_right_after_the_first_batch_of_an_epoch_is_exact(tmp_path):
    """A periodic save after epoch 1's first batch (none completed before it: Lightning's count is 0) restores the
    batch's random state too (it used to be skipped, so the VAE drew other noise from there on)."""

    def fit(root: Path, ckpt_path: str | None = None) -> L.Trainer:
        L.seed_everything(11)
        make_model, make_data = CASES["vae"]
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=20, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, default_root_dir=str(root),
                            callbacks=[ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=16)])
        trainer.fit(make_model(), make_data(), ckpt_path=ckpt_path)
        return trainer

    full = fit(tmp_path / "full")
    ckpt = tmp_path / "full" / "epoch=1-step=16.ckpt"  # 15 batches an epoch: step 16 is epoch 1's first batch
    progress = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert (progress["ready"], progress["completed"]) == (1, 0)
    resumed = fit(tmp_path / "resumed", str(ckpt))
    assert resumed.global_step == full.global_step == 20
    _assert_same_state(full, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("case", MID_EPOCH)
def test_a_clean_stop_at_any_max_steps_then_resume_is_exact(case, tmp_path):
    stop, steps = (5, 12) if case.startswith("gan") else (7, 40)
    full = _fit(case, tmp_path / "full", 100, max_steps=steps, limit_val_batches=0)
    _fit(case, tmp_path / "first", 100, max_steps=stop, limit_val_batches=0)
    ckpt = next((tmp_path / "first").glob(f"*-step={stop}.ckpt"))
    resumed = _fit(case, tmp_path / "resumed", 100, max_steps=steps, ckpt_path=str(ckpt), limit_val_batches=0)
    assert resumed.current_epoch == full.current_epoch
    _assert_same_state(full, resumed)


def test_a_mid_epoch_resume_with_a_plain_loader_says_it_will_not_be_exact(tmp_path):
    """A user data module with a plain ``DataLoader`` cannot continue the epoch: one warning says so."""
    _fit("cyclegan", tmp_path / "first", 1, max_steps=4, limit_val_batches=0)  # InversionDataModule: plain loaders
    (ckpt,) = sorted((tmp_path / "first").glob("*.ckpt"))
    with pytest.warns(UserWarning, match=r"middle of an epoch \(after batch 4 of 11\).*not resumable"):
        _fit("cyclegan", tmp_path / "resumed", 2, max_steps=6, ckpt_path=str(ckpt), limit_val_batches=0)


def test_an_epoch_end_resume_does_not_warn_about_the_loader(tmp_path, recwarn):
    _fit("cyclegan", tmp_path / "first", 1, limit_val_batches=0)
    (ckpt,) = sorted((tmp_path / "first").glob("epoch=0-*.ckpt"))
    _fit("cyclegan", tmp_path / "resumed", 2, ckpt_path=str(ckpt), limit_val_batches=0)
    assert not [w for w in recwarn if "middle of an epoch" in str(w.message)]
