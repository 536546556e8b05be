"""Mixed precision of the adversarial games (lightning_gen/modules/adversarial.py): penalties under autocast and
loss scaling, clipping of the unscaled gradients, per-player overflow skipping, training, resume and DDP.

Lightning turns ``16-mixed`` into ``bf16-mixed`` on a CPU, so float16 with loss scaling is driven through a
``MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))`` plugin: the same code path a GPU
run takes, on CPU kernels.
"""

from __future__ import annotations

import copy
import csv
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_script
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor

from lightning_gen import GAN, ConditionalGAN, CycleGAN, NonFiniteLossError, Pix2Pix, StarGAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.losses import dragan_penalty, gradient_penalty, r1_penalty
from lightning_gen.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    StarGANDiscriminator,
    StarGANGenerator,
)
from lightning_gen.nets.image_to_image import PatchGANDiscriminator, ResnetGenerator, UNetGenerator

from .test_adversarial import AppliedStepNorms

ROOT = Path(__file__).resolve().parents[2]
PENALTIES = [gradient_penalty, dragan_penalty, r1_penalty]


def fp16_plugin(**scaler_kwargs) -> MixedPrecision:
    """float16 autocast with a CPU GradScaler: what ``16-mixed`` does on a GPU."""
    return MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", **scaler_kwargs))


def precision_kwargs(precision: str, **scaler_kwargs) -> dict:
    """Trainer arguments for ``32``, ``bf16-mixed`` or ``16-mixed`` (the latter through the CPU plugin)."""
    if precision == "16-mixed":
        return {"plugins": [fp16_plugin(**scaler_kwargs)]}
    return {"precision": precision}


def trainer(tmp_path: Path, precision: str = "32", **kwargs) -> L.Trainer:
    """A quiet CPU trainer."""
    scaler_kwargs = kwargs.pop("scaler_kwargs", {})
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path))
    return L.Trainer(**{**base, **precision_kwargs(precision, **scaler_kwargs), **kwargs})


def toy_data(**kwargs) -> ToyGaussiansDataModule:
    """A small ring data set (16 batches of 32)."""
    return ToyGaussiansDataModule(**{"mixture": "ring", "train_size": 512, "val_size": 128, "batch_size": 32, **kwargs})


def make_gan(**kwargs) -> GAN:
    """A tiny toy WGAN-GP-style game."""
    kwargs.setdefault("generator_optimizer", partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9)))
    kwargs.setdefault("discriminator_optimizer", partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9)))
    return GAN(MLPGenerator(2, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), **kwargs)


# -- penalties ----------------------------------------------------------------------------------------------------
def _critic_and_batch(kind: str):
    torch.manual_seed(0)
    if kind == "mlp":
        return MLPDiscriminator(2, (64, 64)), torch.randn(256, 2), torch.randn(256, 2)
    return DCGANDiscriminator(image_size=28, channels=1), torch.randn(32, 1, 28, 28), torch.randn(32, 1, 28, 28)


# measured relative errors against fp32 (max over critics and penalties): bf16 2.9e-3, fp16 2.3e-3 with or without
# a loss scale (2**10, 2**16)
@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", ["mlp", "dcgan"])
@pytest.mark.parametrize(("dtype", "grad_scale", "rtol"), [
    (torch.bfloat16, None, 1e-2), (torch.float16, None, 5e-3), (torch.float16, 2.0**16, 5e-3),
    (torch.float16, 2.0**10, 5e-3),
])
def test_penalty_under_autocast_matches_fp32(penalty, kind, dtype, grad_scale, rtol):
    critic, real, fake = _critic_and_batch(kind)
    ref = penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=dtype):
        value = penalty(critic, real, fake, generator=torch.Generator().manual_seed(1), grad_scale=grad_scale)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ref, rtol=rtol, atol=0)


@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_penalty_overflow_under_a_too_large_scale_is_visible_not_wrong(penalty):
    """A scale too large for float16 gives a non-finite penalty, which a GradScaler catches and skips."""
    critic, real, fake = _critic_and_batch("mlp")
    with torch.autocast("cpu", dtype=torch.float16):
        value = penalty(critic, real, fake, generator=torch.Generator().manual_seed(1), grad_scale=2.0**30)
    assert not torch.isfinite(value)


def test_penalty_gradient_under_a_loss_scale_is_unscaled():
    """The parameters' gradient of ``S * penalty(grad_scale=S)`` is S times the fp32 one: the penalty is not scaled
    twice, and a scaler's unscale recovers the true gradient."""
    critic, real, fake = _critic_and_batch("mlp")
    grads = []
    for scale in (None, 2.0**12):
        critic.zero_grad()
        value = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1), grad_scale=scale)
        (value * (scale or 1.0)).backward()
        grads.append(torch.cat([p.grad.flatten() / (scale or 1.0) for p in critic.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


class RecordingPenalty:
    """A gradient penalty that records the critic, inputs and loss scale it was called with."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, critic, real: Tensor, fake: Tensor, grad_scale=None) -> Tensor:
        self.calls.append({"critic": copy.deepcopy(critic), "real": real.detach().clone(),
                           "fake": fake.detach().clone(), "grad_scale": grad_scale})
        return gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(len(self.calls)),
                                grad_scale=grad_scale)


def test_training_step_penalty_gets_the_critic_scale_and_matches_fp32(tmp_path):
    L.seed_everything(0)
    penalty = RecordingPenalty()
    model = make_gan(loss="wasserstein", regularizer=penalty, n_critic=2)
    t = trainer(tmp_path, "16-mixed", max_steps=2, log_every_n_steps=1)
    logged = []
    t.callbacks.append(type("Rec", (L.Callback,), {
        "on_train_batch_end": lambda self, tr, pl, out, b, i: logged.append(float(tr.callback_metrics["train/penalty"]))
    })())
    t.fit(model, toy_data())
    assert len(penalty.calls) == 4 == len(logged)
    assert float(penalty.calls[0]["grad_scale"]) == 2.0**16  # the critic's own scaler, initial scale
    for i, call in enumerate(penalty.calls):
        ref = gradient_penalty(call["critic"], call["real"], call["fake"], generator=torch.Generator().manual_seed(i + 1))
        assert logged[i] == pytest.approx(float(ref), rel=2e-3)


# -- clipping, overflow -------------------------------------------------------------------------------------------
def test_clipping_under_fp16_bounds_the_unscaled_gradient_norm(tmp_path):
    L.seed_everything(0)
    sgd = partial(torch.optim.SGD, lr=1e-2)
    model = make_gan(gradient_clip_val=1e-3, generator_optimizer=sgd, discriminator_optimizer=sgd)
    rec = AppliedStepNorms()
    t = trainer(tmp_path, "16-mixed", max_steps=6, callbacks=[rec])
    t.fit(model, toy_data())
    applied = [n for n in rec.norms if n > 0]  # a step the scaler skipped applies nothing
    assert len(applied) >= 10 and len(rec.norms) == 12
    # clipping the scaled gradients (Lightning #18089) would apply norms of 1e-3 / 65536
    assert max(applied) <= 1e-3 * (1 + 2e-3) and min(applied) >= 1e-3 * (1 - 2e-3)


class InjectInf(L.Callback):
    """Makes the discriminator's gradient infinite in exactly one backward (the ``at``-th critic micro-batch)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0
        self.before: dict[str, Tensor] = {}
        self.after: dict[str, Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        def hook(grad: Tensor) -> Tensor:
            self.calls += 1
            return grad * float("inf") if self.calls == self.at else grad

        next(pl_module.discriminator.parameters()).register_hook(hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.at - 1:
            self.before = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.at - 1:
            self.after = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_forced_overflow_skips_that_players_step_is_logged_and_training_goes_on(tmp_path, capsys):
    L.seed_everything(0)
    model = make_gan(n_critic=1)
    inject = InjectInf(at=3)  # the third batch: critic step 3, then generator step 3
    logger = CSVLogger(str(tmp_path), name="overflow")
    t = trainer(tmp_path, "16-mixed", max_steps=6, callbacks=[inject], logger=logger, log_every_n_steps=1)
    t.fit(model, toy_data())
    assert model.skipped_steps("discriminator") == 1 and model.skipped_steps("generator") == 0
    # that critic step changed nothing; the generator step after it did
    for name in inject.before:
        if name.startswith("discriminator."):
            assert torch.equal(inject.before[name], inject.after[name]), name
    assert any(not torch.equal(inject.before[k], inject.after[k]) for k in inject.before if k.startswith("generator."))
    # the critic's scale backed off once; the generator's did not
    assert float(model.gradient_scale("discriminator")) == 2.0**15
    assert float(model.gradient_scale("generator")) == 2.0**16
    assert model.critic_steps == 6 and t.global_step == 6  # skipped steps still count, as in Lightning
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    skipped = [(int(r["step"]), r["train/skipped_steps/discriminator"]) for r in rows
               if r.get("train/skipped_steps/discriminator")]
    assert [float(v) for _, v in skipped] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    with capsys.disabled():
        line = next(r for r in rows if r.get("train/skipped_steps/discriminator") == "1.0")
        print("\noverflow log line:", {k: v for k, v in line.items() if v and ("skipped" in k or "scale" in k or k == "step")})


class OverflowingPenalty:
    """The gradient penalty, but infinite at its ``at``-th call, as when a scaled input gradient overflows."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, critic, real: Tensor, fake: Tensor, grad_scale=None) -> Tensor:
        self.calls += 1
        value = gradient_penalty(critic, real, fake, grad_scale=grad_scale)
        return value * float("inf") if self.calls == self.at else value


def test_an_overflowed_penalty_is_skipped_by_the_scaler_not_stopped_on(tmp_path):
    skipped = []
    for at in (0, 2):  # 0: never overflows (the control run)
        L.seed_everything(0)
        model = make_gan(loss="wasserstein", regularizer=OverflowingPenalty(at=at), n_critic=1)
        trainer(tmp_path, "16-mixed", max_steps=4, scaler_kwargs={"init_scale": 2.0**8}).fit(model, toy_data())
        skipped.append(model.skipped_steps("discriminator"))
        assert model.critic_steps == 4 and all(torch.isfinite(p).all() for p in model.parameters())
    assert skipped[1] == skipped[0] + 1  # exactly the overflowed step more


def test_an_infinite_penalty_without_a_scaler_stops_training(tmp_path):
    L.seed_everything(0)
    model = make_gan(loss="wasserstein", regularizer=OverflowingPenalty(at=2), n_critic=1)
    with pytest.raises(NonFiniteLossError, match="discriminator loss of GAN became inf"):
        trainer(tmp_path, "32", max_steps=4).fit(model, toy_data())


# -- every family trains under both mixed precisions --------------------------------------------------------------
def _images(n: int, seed: int, channels: int = 3, size: int = 16) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


class _PairDataModule(L.LightningDataModule):
    """Dict batches ``{"a": x, "b": -x}`` (colour inversion)."""

    def train_dataloader(self):
        x = _images(64, 1)
        data = [{"a": x[i], "b": -x[i]} for i in range(len(x))]
        return torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)


class _DigitsLikeDataModule(L.LightningDataModule):
    """Random 28 px ``(images, labels)`` batches in [-1, 1] with 10 classes."""

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(64) % 10), batch_size=16)


def _adam(lr: float = 2e-3):
    return partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999))


FAMILIES = {
    "gan": lambda: make_gan(),
    "wgan_gp": lambda: make_gan(loss="wasserstein", regularizer="gradient_penalty", n_critic=2),
    "dragan_ema": lambda: make_gan(regularizer="dragan", ema_decay=0.9),
    "ragan_smoothed": lambda: make_gan(loss="relativistic_average", label_smoothing=0.1, regularizer="r1"),
    "cgan_dcgan_sn_hinge": lambda: ConditionalGAN(
        DCGANGenerator(16, image_size=28, channels=1, base_channels=8, num_classes=10),
        DCGANDiscriminator(image_size=28, channels=1, base_channels=8, num_classes=10, projection=True,
                           spectral_norm=True),
        loss="hinge", generator_optimizer=_adam(), discriminator_optimizer=_adam(), ema_decay=0.9),
    "pix2pix": lambda: Pix2Pix(UNetGenerator(3, 3, 8, num_downs=4), PatchGANDiscriminator(6, 8, num_layers=2),
                               generator_optimizer=_adam(), discriminator_optimizer=_adam()),
    "cyclegan": lambda: CycleGAN(ResnetGenerator(3, 3, 8, num_blocks=1), ResnetGenerator(3, 3, 8, num_blocks=1),
                                 PatchGANDiscriminator(3, 8, num_layers=2), PatchGANDiscriminator(3, 8, num_layers=2),
                                 generator_optimizer=_adam(), discriminator_optimizer=_adam(), pool_size=8),
    "stargan": lambda: StarGAN(StarGANGenerator(10, 1, 8, num_residual_blocks=1),
                               StarGANDiscriminator(10, 28, 1, 8, num_layers=3), n_critic=2,
                               generator_optimizer=_adam(), discriminator_optimizer=_adam()),
}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_under_mixed_precision_and_samples_finite_values(family, precision, tmp_path):
    L.seed_everything(0)
    model = FAMILIES[family]()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    image = family in ("pix2pix", "cyclegan")
    digits = family.startswith("cgan") or family == "stargan"
    steps = 8 if image or digits else 30
    t = trainer(tmp_path, precision, max_steps=steps)
    t.fit(model, _PairDataModule() if image else _DigitsLikeDataModule() if digits else toy_data())
    assert t.global_step == steps
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    moved = [n for n, p in model.state_dict().items() if n in init and p.is_floating_point() and not torch.equal(p, init[n])]
    assert any(n.startswith("generator") for n in moved) and any(n.startswith("discriminator") for n in moved)
    if image:
        x = model.sample(4, a=_images(4, 9))
        assert x.shape == (4, 3, 16, 16)
    elif family.startswith("cgan"):
        x = model.sample(10, generator=torch.Generator().manual_seed(0), labels=torch.arange(10))
        assert x.shape == (10, 1, 28, 28)
    elif family == "stargan":
        x = model.sample(10, a=torch.rand(10, 1, 28, 28) * 2 - 1, domains=torch.arange(10))
        assert x.shape == (10, 1, 28, 28)
    else:
        x = model.sample(64, generator=torch.Generator().manual_seed(0))
        assert x.shape == (64, 2)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    if precision == "16-mixed":
        assert set(model.player_steps) == {"generator", "discriminator"}
        # overflow skips happen only while the scale settles from 2**16; most steps are taken
        assert model.skipped_steps("discriminator") <= model.player_steps["discriminator"] // 4
        assert model.skipped_steps("generator") <= model.player_steps["generator"] // 2


def test_ema_and_parameter_averages_stay_float32_under_bf16(tmp_path):
    L.seed_everything(0)
    model = make_gan(ema_decay=0.9, historical_averaging_weight=1e-3)
    trainer(tmp_path, "bf16-mixed", max_steps=5).fit(model, toy_data())
    averages = {k: v for k, v in model.state_dict().items()
                if k.startswith(("generator_ema.module", "generator_average.mean", "discriminator_average.mean"))}
    assert len(averages) == 18 and all(v.dtype == torch.float32 for v in averages.values())
    assert int(model.generator_ema.num_updates) == 5


# -- exact resume and scaler state ----------------------------------------------------------------------------------
def _fit_fp16(root: Path, max_epochs: int, ckpt_path: str | None = None) -> GAN:
    L.seed_everything(123)
    model = make_gan(loss="wasserstein", regularizer="gradient_penalty", n_critic=2, ema_decay=0.9)
    ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1)
    t = trainer(root, "16-mixed", max_epochs=max_epochs, callbacks=[ckpt], enable_checkpointing=True,
                deterministic=True, scaler_kwargs={"init_scale": 2.0**20, "growth_interval": 3})
    t.fit(model, toy_data(), ckpt_path=ckpt_path)
    return model


def test_exact_resume_under_fp16_restores_each_players_scaler(tmp_path):
    full = _fit_fp16(tmp_path / "full", 4)
    _fit_fp16(tmp_path / "half", 2)
    ckpt = tmp_path / "half" / "epoch=1-step=16.ckpt"
    saved = torch.load(ckpt, weights_only=False)["lightning_gen_grad_scalers"]
    # growth_interval 3 and init_scale 2**20: the scales moved by the time of the checkpoint, so restoring matters
    assert set(saved) == {"generator", "discriminator"}
    assert saved["generator"]["scaler"]["scale"] != 2.0**20 or saved["discriminator"]["scaler"]["scale"] != 2.0**20
    resumed = _fit_fp16(tmp_path / "resumed", 4, ckpt_path=str(ckpt))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for player in ("generator", "discriminator"):
        assert float(full.gradient_scale(player)) == float(resumed.gradient_scale(player))
        assert full.skipped_steps(player) == resumed.skipped_steps(player)


# -- DDP ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_two_cpu_processes_under_bf16_keep_ranks_identical(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_gan.py", str(tmp_path), "bf16-mixed", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert all(info["global_step"] == 12 and info["critic_steps"] == 24 for info in ranks)
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    assert (a["generator.net.0.weight"] - init["generator.net.0.weight"]).abs().max() > 1e-3
    assert (a["discriminator.net.0.weight"] - init["discriminator.net.0.weight"]).abs().max() > 1e-3
