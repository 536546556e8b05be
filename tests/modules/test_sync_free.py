"""No host-device sync in any family's steady-state training step (issue 17, point 1).

``torch.cuda.set_sync_debug_mode`` works only on a GPU, so the counter here catches what would wait for the device
on any machine: the Python conversions of a tensor to host values (``item``, ``bool(t)``, ``int(t)``, ``float(t)``,
``tolist``, ``cpu``, ``numpy``, ``__index__``), and, below Python, the ATen operations that read device memory on the
host (``_local_scalar_dense``, ``nonzero``, boolean-mask indexing, ``unique``, ``equal``, ...) or build a tensor from
host data (``lift_fresh``: ``torch.tensor(x, device=...)``, a host-to-device copy that waits). It counts from the
start to the end of each training batch after the first two (the module's training step, backward, clipping and
optimizer steps, and Lightning's optimization loop around them), with ``log_every_n_steps`` large and the epoch
longer than the run, so no batch in the window logs or starts an epoch.

Exempt: the ``step`` counters of non-capturable optimizers, which torch keeps on the host by design when the
parameters are on a GPU (reading them never waits for the device; on this CPU-only machine they look like any other
tensor).

On a CPU the finite-loss check reads every loss at once (it waits for nothing there); every test here but the last
one takes the path an accelerator takes (``HOST_READABLE_DEVICES`` emptied), which this CPU-only machine can run.
"""

from __future__ import annotations

import copy
import math
import traceback
from functools import partial
from typing import Any, Callable

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_gen import (
    DDPM,
    GAN,
    VAE,
    WGANGP,
    Autoencoder,
    BiGAN,
    ConditionalGAN,
    CycleGAN,
    DenoisingAutoencoder,
    InfoGAN,
    NonFiniteLossError,
    Pix2Pix,
    RBM,
    RealNVP,
    StarGAN,
)
from lightning_gen.losses import AdversarialLoss, nonsaturating_loss_dis, nonsaturating_loss_gen
from lightning_gen.modules import finite
from lightning_gen.modules.finite import FiniteLossGuard, NonFiniteLoss
from lightning_gen.nets import (
    BernoulliRBM,
    DCGANDiscriminator,
    JointMLPDiscriminator,
    MLPInfoGANDiscriminator,
    DCGANGenerator,
    ImageRealNVP,
    MLPDecoder,
    MLPDenoiser,
    MLPDiscriminator,
    MLPEncoder,
    MLPGenerator,
    PatchGANDiscriminator,
    ResnetGenerator,
    StarGANDiscriminator,
    StarGANGenerator,
    UNetGenerator,
)

@pytest.fixture(autouse=True)
def accelerator_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat the CPU like an accelerator: no device is read for free, so the finite-loss flag stays on the device."""
    monkeypatch.setattr(finite, "HOST_READABLE_DEVICES", frozenset())


_PYTHON_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "__complex__",
                 "__array__")
_ATEN_SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2",
               "unique_consecutive", "unique_dim", "is_nonzero", "equal", "allclose", "_assert_async",
               "repeat_interleave", "lift_fresh", "lift_fresh_copy"}


class SyncCounter(TorchDispatchMode):
    """While entered, records every host read of tensor values (see the module docstring) with where it happened."""

    def __init__(self, exempt: Callable[[Tensor], bool] = lambda t: False) -> None:
        super().__init__()
        self.exempt = exempt
        self.hits: list[tuple[str, list[traceback.FrameSummary]]] = []
        self._originals: dict[str, Any] = {}

    def _hit(self, what: str, tensor: Any) -> None:
        if not (isinstance(tensor, Tensor) and self.exempt(tensor)):
            self.hits.append((what, traceback.extract_stack()[:-2]))

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        name = func._schema.name.split("::")[-1]
        masked = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (args[1] or []))
        if name in _ATEN_SYNCS or masked:
            self._hit(f"aten.{name}", args[0] if args else None)
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> "SyncCounter":
        for method in _PYTHON_SYNCS:
            original = getattr(torch.Tensor, method)
            self._originals[method] = original

            def counted(tensor: Tensor, *args: Any, _original: Any = original, _method: str = method, **kwargs: Any):
                self._hit(f"Tensor.{_method}", tensor)
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, method, counted)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for method, original in self._originals.items():
            setattr(torch.Tensor, method, original)
        self._originals.clear()
        return super().__exit__(*exc)

    def where(self) -> list[str]:
        """One line per hit: what, the innermost frame of this package (or of anything), and whether torch's
        ``GradScaler`` made it."""
        lines = []
        for what, stack in self.hits:
            own = [f for f in stack if "lightning_gen" in f.filename] or stack
            scaler = " via torch.amp.GradScaler" if any(f.filename.endswith("grad_scaler.py") for f in stack) else ""
            lines.append(f"{what} at {own[-1].filename}:{own[-1].lineno} ({own[-1].name}){scaler}")
        return lines


def _host_step_counters(trainer: L.Trainer) -> set[int]:
    return {id(v) for opt in trainer.optimizers for state in opt.state.values() for k, v in state.items()
            if k == "step" and isinstance(v, Tensor)}


class SteadyStateSyncs(L.Callback):
    """Counts syncs from the start to the end of every training batch from ``skip`` on; records whether each counted
    batch was one whose step must not wait (neither logging nor starting an epoch)."""

    def __init__(self, skip: int = 2) -> None:
        self.skip = skip
        self.counter: SyncCounter | None = None
        self.exempt: set[int] = set()
        self.counted: list[bool] = []  # per counted batch: sync-free by the module's own account
        self.hits: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx >= self.skip:
            self.exempt = _host_step_counters(trainer)
            self.counter = SyncCounter(lambda t: id(t) in self.exempt)
            self.counter.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.hits += self.counter.where()
            self.counted.append(not pl_module.synchronous_checks)
            self.counter = None


def _toy(n: int = 512, batch_size: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2, generator=torch.Generator().manual_seed(0))), batch_size=batch_size)


def _digits(n: int = 256, labels: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    return DataLoader(TensorDataset(x, torch.arange(n) % 10) if labels else TensorDataset(x), batch_size=16)


def _levels(n: int = 256) -> DataLoader:
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 255 * 2 - 1
    return DataLoader(TensorDataset(x), batch_size=16)


class _Pairs(Dataset):
    def __init__(self, n: int = 64) -> None:
        self.a = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"a": self.a[i], "b": -self.a[i]}


# each family: (build the module, its training loader); every loader has more batches than a run of 8 steps uses
FAMILIES: dict[str, tuple[Callable[[], L.LightningModule], Callable[[], DataLoader]]] = {
    "gan_ema": (lambda: GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), ema_decay=0.99), _toy),
    "wgan_gp": (lambda: WGANGP(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), n_critic=2), _toy),
    "gan_stabilizers": (lambda: GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), regularizer="r1",
                                    loss="relativistic_average", label_smoothing=0.1, instance_noise=0.1,
                                    historical_averaging_weight=0.1, clip_value=0.5, gradient_clip_val=1.0), _toy),
    "conditional_gan": (lambda: ConditionalGAN(
        DCGANGenerator(16, image_size=28, channels=1, base_channels=4, num_classes=10),
        DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=10, projection=True)),
        lambda: _digits(labels=True)),
    "infogan": (lambda: InfoGAN(MLPGenerator(2 + 4 + 1, 2, (16,)), MLPInfoGANDiscriminator(2, 4, 1, (16,), (8,))),
                _toy),
    "bigan": (lambda: BiGAN(MLPGenerator(4, 2, (16,)), MLPEncoder(2, 4, (16,)), JointMLPDiscriminator(2, 4, (16,))),
              _toy),
    "pix2pix": (lambda: Pix2Pix(UNetGenerator(3, 3, 4, num_downs=4), PatchGANDiscriminator(6, 4, num_layers=2)),
                lambda: DataLoader(_Pairs(), batch_size=4)),
    "cyclegan": (lambda: CycleGAN(ResnetGenerator(3, 3, 4, num_blocks=1), ResnetGenerator(3, 3, 4, num_blocks=1),
                                  PatchGANDiscriminator(3, 4, num_layers=2), PatchGANDiscriminator(3, 4, num_layers=2),
                                  pool_size=3), lambda: DataLoader(_Pairs(), batch_size=2)),
    "stargan": (lambda: StarGAN(StarGANGenerator(10, 1, 4, num_residual_blocks=1),
                                StarGANDiscriminator(10, 28, 1, 4, num_layers=3), n_critic=2),
                lambda: _digits(labels=True)),
    "autoencoder": (lambda: Autoencoder(MLPEncoder((1, 28, 28), 4, (32,)), MLPDecoder(4, (1, 28, 28), (32,)),
                                        reconstruction="bernoulli"), _digits),
    "denoising_autoencoder": (lambda: DenoisingAutoencoder(MLPEncoder(2, 2, (16,)), MLPDecoder(2, 2, (16,)),
                                                           noise_std=0.2, data_range=None), _toy),
    "vae": (lambda: VAE(MLPEncoder((1, 28, 28), 8, (32,)), MLPDecoder(4, (1, 28, 28), (32,))), _digits),
    "vae_gaussian": (lambda: VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian",
                                 decoder_std=0.5, data_range=None), _toy),
    "realnvp": (lambda: RealNVP(ImageRealNVP(1, 8, num_scales=1, hidden_channels=4, num_blocks=1), dequantize=True),
                _levels),
    "ddpm": (lambda: DDPM(MLPDenoiser(2, (16,), 8), num_timesteps=100, ema_decay=0.9), _toy),
    "rbm_cd": (lambda: RBM(BernoulliRBM((1, 28, 28), 16)), _digits),
    "rbm_pcd": (lambda: RBM(BernoulliRBM((1, 28, 28), 16), persistent=True, persistent_chains=8), _digits),
}


def _quiet_trainer(tmp_path: Any, **kwargs: Any) -> L.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path))
    return L.Trainer(**{**base, **kwargs})


def _count(family: str, tmp_path: Any, steps: int = 8, **trainer_kwargs: Any) -> SteadyStateSyncs:
    build, data = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    syncs = SteadyStateSyncs()
    trainer_kwargs.setdefault("log_every_n_steps", 1000)
    before = copy.deepcopy(model.state_dict())
    _quiet_trainer(tmp_path, max_steps=steps, callbacks=[syncs], **trainer_kwargs).fit(model, data())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained
    return syncs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_no_sync_in_the_steady_state_training_step(family, tmp_path):
    syncs = _count(family, tmp_path)
    assert len(syncs.counted) >= 6 and all(syncs.counted), syncs.counted  # only sync-free batches were counted
    assert syncs.hits == []


def test_the_counter_catches_syncs_in_python_and_below():
    x = torch.arange(4.0)
    with SyncCounter() as counter:
        float(x.sum())
        if x.max() > 2:
            pass
        x[x > 1]  # boolean mask: nonzero inside ATen
        torch.nn.functional.one_hot(torch.tensor([1, 2]), 3)  # a tensor from host data, and a range read inside
    kinds = [what for what, _ in counter.hits]
    assert "Tensor.__float__" in kinds and "Tensor.__bool__" in kinds
    assert "aten.index" in kinds and "aten.lift_fresh" in kinds and kinds.count("aten._local_scalar_dense") >= 3


def test_the_counter_sees_the_syncs_of_logging_batches(tmp_path):
    # control: the same GAN with every batch logging (one transfer of the logged values and the finite-flag read)
    syncs = _count("gan_ema", tmp_path, log_every_n_steps=1)
    assert syncs.counted and not any(syncs.counted)
    assert len(syncs.hits) >= len(syncs.counted)
    assert any("base.py" in line and "_on_host" in line for line in syncs.hits)
    assert any("finite.py" in line and "check" in line for line in syncs.hits)


def _fp16(**scaler_kwargs: Any) -> MixedPrecision:
    return MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", **scaler_kwargs))


@pytest.mark.parametrize("fused", [False, True])
def test_under_16_mixed_only_the_grad_scaler_of_a_non_fused_optimizer_syncs(fused, tmp_path):
    adam = partial(torch.optim.Adam, lr=1e-3, fused=fused)
    torch.manual_seed(0)
    model = GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), generator_optimizer=adam,
                discriminator_optimizer=adam)
    syncs = SteadyStateSyncs()
    _quiet_trainer(tmp_path, max_steps=8, callbacks=[syncs], log_every_n_steps=1000, plugins=[_fp16()]).fit(
        model, _toy())
    assert len(syncs.counted) >= 6 and all(syncs.counted)
    # torch's GradScaler reads found_inf on the host before a non-fused step (one wait per step, by design); the
    # fused optimizers take found_inf into their kernel; this package adds none
    ours = [line for line in syncs.hits if "GradScaler" not in line]
    assert ours == []
    if fused:
        assert syncs.hits == []
    else:
        assert len(syncs.hits) >= 2 * len(syncs.counted)  # both players' steps, every batch


# -- training never steps on a non-finite loss, and says at which step it happened --------------------------------
def _optimizer_states(trainer: L.Trainer) -> list[dict[str, Any]]:
    return [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]


def _assert_same(a: Any, b: Any) -> None:
    """Exact equality of nested state (tensors bit for bit)."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


class Snapshots(L.Callback):
    """The module's state dict and the optimizers' states at the end of every training batch."""

    def __init__(self) -> None:
        self.after: dict[int, tuple[dict[str, Tensor], list[dict[str, Any]]]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.after[batch_idx] = (copy.deepcopy(pl_module.state_dict()), _optimizer_states(trainer))


def _poisoned_toy(nan_batch: int, n: int = 512, batch_size: int = 16) -> DataLoader:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    x[nan_batch * batch_size + 3, 1] = float("nan")
    return DataLoader(TensorDataset(x), batch_size=batch_size)


def _vae_gaussian(optimizer: Any) -> VAE:
    return VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian", data_range=None,
               optimizer=optimizer)


OPTIMIZERS = {
    "adam": partial(torch.optim.Adam, lr=1e-2),
    "adam_fused": partial(torch.optim.Adam, lr=1e-2, fused=True),
    "sgd_momentum": partial(torch.optim.SGD, lr=1e-2, momentum=0.9),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_a_likelihood_step_on_a_non_finite_loss_changes_nothing_and_the_next_logging_batch_raises(optimizer, tmp_path):
    # log_every_n_steps=3: batches 2, 5, 8 log; batch 4 (NaN data) is a sync-free batch
    torch.manual_seed(0)
    model = _vae_gaussian(OPTIMIZERS[optimizer])
    snaps = Snapshots()
    trainer = _quiet_trainer(tmp_path, max_steps=20, callbacks=[snaps], log_every_n_steps=3)
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 4 \(batch 4\); no optimizer stepped on it or on "
                                                 r"any later loss \(found at step 5"):
        trainer.fit(model, _poisoned_toy(nan_batch=4))
    assert sorted(snaps.after) == [0, 1, 2, 3, 4]  # batch 5 raised before its step
    _assert_same(snaps.after[4], snaps.after[3])  # the step on the NaN loss changed nothing
    _assert_same((model.state_dict(), _optimizer_states(trainer)), snaps.after[3])
    assert trainer.global_step == 5 and all(torch.isfinite(p).all() for p in model.parameters())


class _VAEWithNaNAt(VAE):
    """A Gaussian VAE whose training loss is NaN at one optimizer step."""

    def __init__(self, nan_at_step: int) -> None:
        super().__init__(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian", data_range=None)
        self.nan_at_step = nan_at_step

    def training_loss(self, data: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss, logs = super().training_loss(data)
        return (loss * float("nan"), logs) if self.global_step == self.nan_at_step else (loss, logs)


def test_a_non_finite_loss_is_raised_at_the_epoch_end_before_the_epoch_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    model = _VAEWithNaNAt(nan_at_step=11)
    folder = tmp_path / "ckpt"
    trainer = _quiet_trainer(tmp_path, max_epochs=3, log_every_n_steps=0, enable_checkpointing=True,
                             callbacks=[ModelCheckpoint(dirpath=folder, save_top_k=-1)])
    # 8 batches per epoch and no logging batches: the NaN of the second epoch's batch 3 (step 11) is read at the
    # epoch's end, after its 8 (no-op) steps and before its checkpoint
    with pytest.raises(NonFiniteLossError, match=r"at step 11 \(batch 3\).*found at step 16.*last good checkpoint is "
                                                 r"in"):
        trainer.fit(model, _toy(n=128))
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=8.ckpt"]


def _flaky_gan(nan_from_call: int, **kwargs: Any) -> GAN:
    calls = {"n": 0}

    def flaky_dis(real_out: Tensor, fake_out: Tensor) -> Tensor:
        calls["n"] += 1
        loss = nonsaturating_loss_dis(real_out, fake_out)
        return loss * float("nan") if calls["n"] > nan_from_call else loss

    kwargs.setdefault("generator_optimizer", partial(torch.optim.Adam, lr=1e-3))
    kwargs.setdefault("discriminator_optimizer", partial(torch.optim.Adam, lr=1e-3))
    return GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)),
               loss=AdversarialLoss("flaky", nonsaturating_loss_gen, flaky_dis), ema_decay=0.9, **kwargs)


@pytest.mark.parametrize("precision", ["32", "16-mixed"])
def test_a_game_step_on_a_non_finite_loss_changes_no_player_and_the_next_logging_batch_raises(precision, tmp_path):
    # the critic's loss is NaN from batch 6 on; batches 4 and 9 log (log_every_n_steps=5)
    torch.manual_seed(0)
    model = _flaky_gan(nan_from_call=6)
    snaps = Snapshots()
    plugins = [_fp16(init_scale=2.0**4)] if precision == "16-mixed" else []
    trainer = _quiet_trainer(tmp_path, max_steps=30, callbacks=[snaps], log_every_n_steps=5, plugins=plugins)
    with pytest.raises(NonFiniteLossError, match=r"discriminator loss of GAN became nan at generator step 6 "
                                                 r"\(generator steps 6, discriminator steps 6\).*found at generator "
                                                 r"step 9"):
        trainer.fit(model, _toy())
    assert sorted(snaps.after) == list(range(9))
    weights = {k: v for k, v in snaps.after[5][0].items() if not k.startswith("generator_ema")}
    for batch in (6, 7, 8):  # both players' steps after the NaN were no-ops
        _assert_same({k: snaps.after[batch][0][k] for k in weights}, weights)
        _assert_same(snaps.after[batch][1], snaps.after[5][1])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_a_first_step_on_a_non_finite_loss_is_decided_at_once_and_leaves_no_optimizer_state(tmp_path):
    # n_critic=3: the generator's first step (batch 2, a sync-free batch) creates its Adam state, which the device
    # cannot take back, so that step reads the flag on the host (once) and raises at once
    calls = {"n": 0}

    def flaky_gen(fake_out: Tensor, real_out: Any = None) -> Tensor:
        calls["n"] += 1
        return nonsaturating_loss_gen(fake_out) * float("nan")

    torch.manual_seed(0)
    model = GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), n_critic=3,
                loss=AdversarialLoss("flaky", flaky_gen, nonsaturating_loss_dis))
    trainer = _quiet_trainer(tmp_path, max_steps=5, log_every_n_steps=1000)
    with pytest.raises(NonFiniteLossError, match=r"generator loss of GAN became nan at generator step 0 \(generator "
                                                 r"steps 0, discriminator steps 3\)\. Training stopped; no optimizer "
                                                 r"stepped on it"):
        trainer.fit(model, _toy())
    generator_optimizer = trainer.optimizers[0]
    assert calls["n"] == 1 and len(generator_optimizer.state) == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_without_the_check_a_non_finite_loss_reaches_the_weights(tmp_path):
    torch.manual_seed(0)
    model = _flaky_gan(nan_from_call=3, detect_non_finite=False)
    _quiet_trainer(tmp_path, max_steps=6, log_every_n_steps=1000).fit(model, _toy())
    assert not all(torch.isfinite(p).all() for p in model.discriminator.parameters())


# -- the guard on its own ---------------------------------------------------------------------------------------
class CountingSGD(torch.optim.SGD):
    """SGD that also keeps a Python number in its state (host-resident state the device cannot put back)."""

    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["calls"] = self.state[p].get("calls", 0) + 1
        return out


@pytest.mark.parametrize("make", [partial(torch.optim.Adam, lr=0.1), partial(torch.optim.AdamW, lr=0.1, fused=True),
                                  partial(torch.optim.RMSprop, lr=0.1, momentum=0.5), partial(CountingSGD, lr=0.1,
                                                                                                 momentum=0.9)],
                         ids=["adam", "adamw_fused", "rmsprop", "sgd_with_host_state"])
def test_guarded_steps_after_a_non_finite_loss_put_everything_back(make):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    optimizer = make(net.parameters())
    found: list[NonFiniteLoss] = []
    guard = FiniteLossGuard(found.append)

    def step(scale: float) -> None:
        loss = net(torch.randn(4, 3)).pow(2).mean() * scale
        guard.record(loss, scale)
        loss.backward()
        guard.update_skip()
        with guard.step(optimizer):
            optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):  # the first step creates the state (decided on the host), the others are guarded
        step(1.0)
    guard.check()
    before = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
    step(math.inf)  # inf * 0 gradients: NaN
    step(1.0)
    step(1.0)
    after_params = copy.deepcopy(net.state_dict())
    _assert_same(after_params, before[0])  # parameters exactly as before the inf loss
    guard.check()  # reads the flag, puts back the host-resident values, reports
    assert found == [NonFiniteLoss("inf", math.inf)]
    _assert_same((net.state_dict(), optimizer.state_dict()), before)
    step(1.0)  # after the report training goes on from the state before the loss
    assert not torch.equal(net.weight, before[0]["weight"])


# -- input checks and logging where the step may wait --------------------------------------------------------------
class _Digits(Dataset):
    """Digit-like images with labels; from ``bad_epoch`` on, item 5 has the label 10 (outside 10 classes)."""

    def __init__(self, bad_epoch: int) -> None:
        self.x = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.bad_epoch, self.epoch = bad_epoch, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        label = 10 if i == 5 and self.epoch >= self.bad_epoch else i % 10
        return self.x[i], torch.tensor(label)


class _EpochToData(L.Callback):
    def __init__(self, data: _Digits) -> None:
        self.data = data

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.data.epoch = trainer.current_epoch


def test_input_checks_run_on_the_first_batch_of_every_epoch(tmp_path):
    data = _Digits(bad_epoch=1)
    torch.manual_seed(0)
    model = FAMILIES["conditional_gan"][0]()
    trainer = _quiet_trainer(tmp_path, max_epochs=2, log_every_n_steps=1000, callbacks=[_EpochToData(data)])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\); got values in \[0, 10\]"):
        trainer.fit(model, DataLoader(data, batch_size=16))
    assert trainer.global_step == 16  # the first epoch (valid labels) trained; the second stopped at its first batch

    images = torch.randint(0, 256, (64, 1, 8, 8)).float() / 255 * 2 - 1
    images[3] = 1.5  # outside data_range, in the first batch
    flow = FAMILIES["realnvp"][0]()
    with pytest.raises(ValueError, match=r"expects data in data_range \(-1\.0, 1\.0\)"):
        _quiet_trainer(tmp_path, max_steps=2).fit(flow, DataLoader(TensorDataset(images), batch_size=16))


class LoggedValues(L.Callback):
    """The value of ``train/loss`` Lightning holds after every training batch."""

    def __init__(self) -> None:
        self.values: list[Tensor | None] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        value = trainer.callback_metrics.get("train/loss")
        self.values.append(None if value is None else value.clone())


def test_likelihood_families_log_on_lightnings_logging_batches_as_host_tensors(tmp_path):
    torch.manual_seed(0)
    model = FAMILIES["denoising_autoencoder"][0]()
    logged = LoggedValues()
    _quiet_trainer(tmp_path, max_epochs=2, log_every_n_steps=4, callbacks=[logged]).fit(model, _toy(n=160))
    values = logged.values
    assert len(values) == 20 and values[:3] == [None] * 3
    changed = [i for i in range(3, 20) if i == 3 or not torch.equal(values[i], values[i - 1])]
    assert changed == [3, 7, 11, 15, 19]  # every 4th step, across the epochs (10 batches each)
    assert all(v.device.type == "cpu" for v in values[3:])


def test_on_a_cpu_the_check_reads_each_loss_at_once_and_keeps_no_copies(monkeypatch, tmp_path):
    monkeypatch.setattr(finite, "HOST_READABLE_DEVICES", frozenset({"cpu"}))
    torch.manual_seed(0)
    model = _vae_gaussian(OPTIMIZERS["adam"])
    snaps = Snapshots()
    trainer = _quiet_trainer(tmp_path, max_steps=20, callbacks=[snaps], log_every_n_steps=3)
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 4 \(batch 4\); no optimizer stepped on it; "):
        trainer.fit(model, _poisoned_toy(nan_batch=4))
    assert sorted(snaps.after) == [0, 1, 2, 3] and trainer.global_step == 4  # raised before batch 4's step
    _assert_same((model.state_dict(), _optimizer_states(trainer)), snaps.after[3])
    assert model._finite_guard._buffers == {}
