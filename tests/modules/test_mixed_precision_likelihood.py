"""The single-objective families (autoencoders, VAE, RealNVP, DDPM; lightning_gen/modules/autoencoder.py, flow.py,
diffusion.py and base.py) under mixed precision: bf16-mixed and fp16-mixed with loss scaling, both on the CPU.

On a CPU Lightning turns ``precision="16-mixed"`` into bf16; fp16 autocast with a ``GradScaler`` is reached through
the plugin ``MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))``. The training tests check
that the nets really ran in the low-precision dtype (a forward hook records it) and the precision tests that the
low-precision result differs from the float32 one, so none passes by silently running in float32.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import DDPM, VAE, Autoencoder, DenoisingAutoencoder, RealNVP
from lightning_gen.modules.base import NonFiniteLossError
from lightning_gen.nets import ImageRealNVP, MLPDecoder, MLPDenoiser, MLPEncoder, VectorRealNVP

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_kwargs(kind: str, **scaler_args: Any) -> dict[str, Any]:
    """Trainer arguments for bf16-mixed, or for fp16-mixed with a CPU GradScaler (Lightning's CPU path is bf16)."""
    if kind == "bf16":
        return {"precision": "bf16-mixed"}
    return {"plugins": [MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", **scaler_args))]}


def toy_data(n: int = 256) -> Tensor:
    """Correlated 2-D Gaussian points, the same every call."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g) @ torch.tensor([[1.0, 0.6], [0.0, 0.5]]) + torch.tensor([1.0, -0.5])


def blob_images(n: int = 64) -> Tensor:
    """8x8 one-channel images in [-1, 1] on the 256-level grid: a bright square at a random place, and noise."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 1, 8, 8), -0.8)
    for i in range(n):
        r, c = torch.randint(0, 5, (2,), generator=g).tolist()
        x[i, :, r:r + 3, c:c + 3] = 0.8
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    return (torch.round((x.clamp(-1, 1) + 1) / 2 * 255) / 255 * 2 - 1)


# each family: (build a fresh module, its training data)
FAMILIES: dict[str, tuple[Callable[[], L.LightningModule], Callable[[], Tensor]]] = {
    "autoencoder": (lambda: Autoencoder(MLPEncoder(2, 2, (32,)), MLPDecoder(2, 2, (32,)), data_range=None,
                                        optimizer=partial(torch.optim.Adam, lr=1e-2)), toy_data),
    "dae": (lambda: DenoisingAutoencoder(MLPEncoder(2, 2, (32,)), MLPDecoder(2, 2, (32,)), noise_std=0.2,
                                         data_range=None, optimizer=partial(torch.optim.Adam, lr=1e-2)), toy_data),
    "vae": (lambda: VAE(MLPEncoder(2, 4, (32,)), MLPDecoder(2, 2, (32,)), likelihood="gaussian", data_range=None,
                        optimizer=partial(torch.optim.Adam, lr=1e-2)), toy_data),
    "realnvp": (lambda: RealNVP(VectorRealNVP(2, 4, (32, 32)), optimizer=partial(torch.optim.Adam, lr=1e-2)),
                toy_data),
    "spline_flow": (lambda: RealNVP(VectorRealNVP(2, 4, (32, 32), coupling="spline", num_bins=8),
                                    optimizer=partial(torch.optim.Adam, lr=1e-2)), toy_data),
    "realnvp_image": (lambda: RealNVP(ImageRealNVP(1, 8, num_scales=1, hidden_channels=8, num_blocks=1),
                                      dequantize=True, optimizer=partial(torch.optim.Adam, lr=3e-3)), blob_images),
    "ddpm": (lambda: DDPM(MLPDenoiser(2, (64, 64), 16), num_timesteps=25, ema_decay=0.9,
                          optimizer=partial(torch.optim.Adam, lr=1e-2)), toy_data),
}
# The mean loss of the first 5 of 30 steps minus that of the last 5, measured (bf16 / fp16; float32 gives the bf16
# numbers to 3 decimals; fp16 starts higher because its first steps overflow and are skipped while the scale drops):
# autoencoder 1.62 / 1.85, dae 1.54 / 1.78, vae 0.65 / 0.79, realnvp 0.79 / 0.86 nats, spline_flow 0.57 / 0.59,
# realnvp_image 55 / 75 nats per image, ddpm 0.45 / 0.45. The test asks for about half of it: a model that does not learn fails.
MIN_DROP = {"autoencoder": 0.8, "dae": 0.75, "vae": 0.3, "realnvp": 0.4, "spline_flow": 0.28, "realnvp_image": 25.0,
            "ddpm": 0.2}


def perturbed(module: nn.Module, scale: float = 0.05, seed: int = 0) -> nn.Module:
    """``module`` with ``scale * N(0, 1)`` added to every parameter: zero-initialized last layers (the flows'
    identity couplings, the denoiser's zero output) would otherwise make the nets' rounding invisible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


class LossRecorder(Callback):
    """Records every training step's loss and the dtype the first linear/conv layer produced during training."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.net_dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        first = next(m for m in pl_module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
        first.register_forward_hook(lambda m, i, out: self.net_dtypes.add(out.dtype) if m.training else None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def fit(family: str, kind: str, steps: int = 30, **trainer_kwargs: Any) -> tuple[L.LightningModule, LossRecorder]:
    """Train a fresh seeded model of ``family`` for ``steps`` steps under ``kind`` precision."""
    build, data = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    recorder = LossRecorder()
    trainer = L.Trainer(max_steps=steps, limit_val_batches=0, callbacks=[recorder], **precision_kwargs(kind),
                        **trainer_kwargs)
    trainer.fit(model, DataLoader(TensorDataset(data()), batch_size=32, shuffle=True))
    return model, recorder


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_trains_under_mixed_precision_and_samples_float32(family, kind, tiny_trainer_kwargs):
    model, recorder = fit(family, kind, **tiny_trainer_kwargs)
    assert recorder.net_dtypes == {LOW[kind]}  # the nets really ran in low precision
    losses = torch.tensor(recorder.losses)
    assert len(losses) == 30 and torch.isfinite(losses).all()
    drop = float(losses[:5].mean() - losses[-5:].mean())
    assert drop > MIN_DROP[family], (family, kind, recorder.losses)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.state_dict().values()
               if p.is_floating_point())
    shape = tuple(FAMILIES[family][1]().shape[1:])
    for autocast in (False, True):  # also when a caller samples inside an autocast region
        with torch.autocast("cpu", dtype=LOW[kind], enabled=autocast):
            x = model.sample(16, generator=torch.Generator().manual_seed(1))
        assert x.dtype == torch.float32 and x.shape == (16, *shape) and torch.isfinite(x).all()


def test_ddpm_updates_its_ema_outside_autocast(tiny_trainer_kwargs):
    torch.manual_seed(0)
    model = FAMILIES["ddpm"][0]()
    update, autocast_on = model.denoiser_ema.update, []

    def recording_update(net: nn.Module) -> None:
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        update(net)

    model.denoiser_ema.update = recording_update
    L.Trainer(max_steps=4, limit_val_batches=0, precision="bf16-mixed", **tiny_trainer_kwargs).fit(
        model, DataLoader(TensorDataset(toy_data()), batch_size=32))
    assert autocast_on == [False] * 4
    assert all(p.dtype == torch.float32 for p in model.denoiser_ema.parameters())


class RngWatcher(Callback):
    """Counts evaluation batches whose step moved the global RNG (states compared right before and after each)."""

    def __init__(self) -> None:
        self.batches, self.moved = 0, 0
        self._state = torch.get_rng_state()

    def _start(self, *args: Any) -> None:
        self._state = torch.get_rng_state()

    def _end(self, *args: Any) -> None:
        self.batches += 1
        self.moved += int(not torch.equal(torch.get_rng_state(), self._state))

    on_validation_batch_start = on_test_batch_start = _start
    on_validation_batch_end = on_test_batch_end = _end


@pytest.mark.parametrize("family", list(FAMILIES))
def test_validation_and_test_under_bf16_leave_the_global_rng_alone_and_repeat(family, tiny_trainer_kwargs):
    # the corruption (DAE), posterior draws (VAE), dequantization (RealNVP) and t/noise (DDPM) of evaluation come
    # from generators seeded by the batch index, never from the global RNG (the data loader's own draws aside)
    build, data = FAMILIES[family]
    torch.manual_seed(0)
    model = perturbed(build())
    loader = DataLoader(TensorDataset(data()[:64]), batch_size=32)
    watcher = RngWatcher()
    trainer = L.Trainer(precision="bf16-mixed", callbacks=[watcher], **tiny_trainer_kwargs)
    first = trainer.validate(model, loader, verbose=False)[0]
    tested = trainer.test(model, loader, verbose=False)[0]
    assert watcher.batches == 4 and watcher.moved == 0
    assert trainer.validate(model, loader, verbose=False)[0] == first
    assert first and all(math.isfinite(v) for v in [*first.values(), *tested.values()])


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_loss_and_its_terms_are_float32_under_autocast_and_match_float32(family, kind):
    # the same global-RNG draws with and without autocast: only the nets' rounding separates the two losses
    build, data = FAMILIES[family]
    torch.manual_seed(0)
    model, x = perturbed(build()), data()[:64]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        reference, _ = model.training_loss(x)
    with torch.random.fork_rng(devices=[]), torch.no_grad(), torch.autocast("cpu", dtype=LOW[kind]):
        torch.manual_seed(1)
        loss, logs = model.training_loss(x)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in logs.values())
    gap = abs(float(loss - reference)) / abs(float(reference))
    assert 0 < gap <= LOSS_GAP[kind], (float(loss), float(reference))  # > 0: the nets did run in low precision


# largest relative gap measured over the six families: 2.9e-4 in bf16 (dae), 5.5e-5 in fp16 (realnvp_image)
LOSS_GAP = {"bf16": 1e-3, "fp16": 2e-4}


@pytest.mark.parametrize("coupling", ["affine", "spline"])
@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_flow_log_det_under_autocast_is_float32_and_matches_float32(kind, coupling):
    # 6 random (non-identity) couplings on 4-D vectors, |log det| up to 1.2: measured max gaps 8.2e-3 (bf16) and
    # 1.7e-3 (fp16), the nets' rounding; spline couplings bend more (|log det| up to 5.2) and their widths, heights and
    # slopes come from the rounded outputs: 0.146 (bf16) and 0.029 (fp16). A log-det summed in bf16 would also come
    # back as bf16
    torch.manual_seed(0)
    flow = perturbed(VectorRealNVP(4, 6, (64, 64), coupling=coupling), 0.1)
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, log_det = flow(x)
        with torch.autocast("cpu", dtype=LOW[kind]):
            z_low, log_det_low = flow(x)
    assert log_det_low.dtype == torch.float32 and z_low.dtype == torch.float32
    torch.testing.assert_close(log_det_low, log_det, rtol=0, atol=FLOW_LOG_DET_ATOL[kind, coupling])


FLOW_LOG_DET_ATOL = {("bf16", "affine"): 0.03, ("fp16", "affine"): 0.006, ("bf16", "spline"): 0.3,
                     ("fp16", "spline"): 0.06}


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_image_flow_log_prob_under_autocast_is_float32_and_matches_float32(kind):
    images = blob_images(32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (the same dequantization noise every time)
    # identity couplings (the flow at init): the nets output exact zeros in any precision, so every other step
    # (dequantization, logit, log-determinants, Gaussian log-density: about -400 nats per image) must be float32
    # to agree to float32 rounding; bfloat16 anywhere would be off by whole nats
    model = RealNVP(ImageRealNVP(1, 8, num_scales=2, hidden_channels=8, num_blocks=1), dequantize=True)
    with torch.no_grad():
        reference = model.log_prob(images, g())
        with torch.autocast("cpu", dtype=LOW[kind]):
            at_init = model.log_prob(images, g())
    assert at_init.dtype == torch.float32
    torch.testing.assert_close(at_init, reference, rtol=1e-6, atol=1e-4)
    # random couplings: the nets' rounding moves log p by at most 1.5 nats of 490 in bf16 (0.24 %) and 0.14 in fp16
    torch.manual_seed(0)
    perturbed(model.flow, 0.05)
    with torch.no_grad():
        reference = model.log_prob(images, g())
        with torch.autocast("cpu", dtype=LOW[kind]):
            low, bits = model.log_prob(images, g()), model.bits_per_dim(images, g())
    assert low.dtype == torch.float32 and bits.dtype == torch.float32
    torch.testing.assert_close(low, reference, rtol=IMAGE_LOG_PROB_RTOL[kind], atol=0)


IMAGE_LOG_PROB_RTOL = {"bf16": 0.01, "fp16": 0.001}


# -- exact resume under fp16 with a CPU GradScaler ---------------------------------------------------------------------
class ScaleRecorder(Callback):
    """Records the GradScaler's scale when training starts (after a resume restored it) and after every step."""

    def __init__(self) -> None:
        self.at_start: float = float("nan")
        self.scales: list[float] = []
        self.losses: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.at_start = trainer.precision_plugin.scaler.get_scale()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.scales.append(trainer.precision_plugin.scaler.get_scale())
        self.losses.append(float(outputs["loss"]))


def _fit_ddpm_fp16(max_epochs: int, root: str, ckpt_path: str | None = None) -> tuple[DDPM, L.Trainer, ScaleRecorder]:
    # a high initial scale that halves on overflowing steps and grows every 3 clean ones: the scale changes during
    # the run, so a resume that forgot it would diverge
    L.seed_everything(0)
    model = DDPM(MLPDenoiser(2, (64, 64), 16), num_timesteps=25, ema_decay=0.9,
                 optimizer=partial(torch.optim.Adam, lr=1e-2))
    recorder = ScaleRecorder()
    trainer = L.Trainer(max_epochs=max_epochs, limit_val_batches=0, callbacks=[recorder], accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root,
                        **precision_kwargs("fp16", init_scale=2.0**24, growth_interval=3))
    trainer.fit(model, DataLoader(TensorDataset(toy_data(96)), batch_size=16, shuffle=True), ckpt_path=ckpt_path)
    return model, trainer, recorder


def test_fp16_resume_with_a_cpu_grad_scaler_continues_bit_for_bit(tmp_path):
    full, _, full_rec = _fit_ddpm_fp16(4, str(tmp_path / "full"))  # 6 steps per epoch: 24 steps
    _, half_trainer, half_rec = _fit_ddpm_fp16(2, str(tmp_path / "half"))
    ckpt = tmp_path / "half.ckpt"
    half_trainer.save_checkpoint(ckpt)
    saved_scale = half_trainer.precision_plugin.scaler.get_scale()
    # measured: halved on the first 6 (overflowing) steps, then 65536 <-> 131072 (growth after 3 clean steps, halving
    # on an overflow); a resumed scaler starting afresh at 2**24 would skip steps the full run took
    assert saved_scale == half_rec.scales[-1] == 65536.0 and len(set(full_rec.scales[12:])) > 1
    resumed, _, resumed_rec = _fit_ddpm_fp16(4, str(tmp_path / "resumed"), ckpt_path=str(ckpt))
    assert resumed_rec.at_start == saved_scale  # the scaler's state came back from the checkpoint
    assert half_rec.losses == full_rec.losses[:12] and resumed_rec.losses == full_rec.losses[12:]
    assert resumed_rec.scales == full_rec.scales[12:]
    assert int(resumed.denoiser_ema.num_updates) == 24
    state, reference = resumed.state_dict(), full.state_dict()
    assert state.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(state[name], value), f"{name} differs after resume"


# -- detect_non_finite and NonFiniteLossError -------------------------------------------------------------------------
def _poisoned_loader(nan_at: int = 5) -> DataLoader:
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    x[nan_at, 0] = float("nan")
    return DataLoader(TensorDataset(x), batch_size=16)


def _vae(**kwargs: Any) -> VAE:
    return VAE(MLPEncoder(2, 4, ()), MLPDecoder(2, 2, ()), likelihood="gaussian", data_range=None, **kwargs)


def test_detect_non_finite_is_a_saved_constructor_argument(tiny_trainer_kwargs, tmp_path):
    model = _vae(detect_non_finite=False)
    assert model.hparams.detect_non_finite is False and model.detect_non_finite is False
    L.Trainer(max_epochs=1, limit_val_batches=0, **tiny_trainer_kwargs).fit(model, _poisoned_loader())
    assert torch.isnan(model.decoder.net[0].weight).any()  # unchecked, the NaN reached the weights
    for family in ("autoencoder", "dae", "realnvp", "ddpm"):
        assert FAMILIES[family][0]().detect_non_finite is True
    # checkpoints written before the argument existed (no such hyperparameter) load with the check on
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, **tiny_trainer_kwargs)
    trainer.fit(_vae(detect_non_finite=False), DataLoader(TensorDataset(toy_data(16)), batch_size=16))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["hyper_parameters"]["detect_non_finite"]
    torch.save(checkpoint, path)
    loaded = VAE.load_from_checkpoint(path, encoder=MLPEncoder(2, 4, ()), decoder=MLPDecoder(2, 2, ()))
    assert loaded.detect_non_finite is True
    assert VAE.load_from_checkpoint(path, encoder=MLPEncoder(2, 4, ()), decoder=MLPDecoder(2, 2, ()),
                                    detect_non_finite=False).detect_non_finite is False


def test_a_non_finite_loss_raises_non_finite_loss_error_naming_an_existing_checkpoint_folder(
    tiny_trainer_kwargs, tmp_path
):
    # NaN in the first batch: no checkpoint exists yet, so no folder is named
    kwargs = {**tiny_trainer_kwargs, "enable_checkpointing": True}
    folder = tmp_path / "checkpoints"
    for catch in (FloatingPointError, RuntimeError, NonFiniteLossError):
        with pytest.raises(catch, match="at step 0 .*lower the learning rate or enable gradient clipping") as info:
            L.Trainer(max_epochs=1, limit_val_batches=0, callbacks=[ModelCheckpoint(dirpath=folder)],
                      **kwargs).fit(_vae(detect_non_finite=True), _poisoned_loader(nan_at=5))
        assert "checkpoint" not in str(info.value) and not folder.exists()
    # NaN in the third batch, a checkpoint after every step: the message points at the folder
    checkpoints = ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteLossError, match="at step 2 ") as info:
        L.Trainer(max_epochs=1, limit_val_batches=0, callbacks=[checkpoints], **kwargs).fit(
            _vae(), _poisoned_loader(nan_at=40))
    assert f"The last good checkpoint is in {str(folder)!r}" in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]
