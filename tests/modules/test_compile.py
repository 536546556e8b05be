"""Tests for lightning_gen/modules/compile.py: the ``compile`` option of every family.

Compiled runs use ``backend="aot_eager"`` to fit the test budget: it runs TorchDynamo and AOTAutograd (the capture,
the guards and recompiles, the compiled forward and backward, the missing double backward) as ``inductor`` does,
without generating and building C++ kernels (a cold inductor build of a toy VAE's two nets takes ~20 s on 2 cores).
``test_inductor_smoke`` runs the default inductor backend once. Losses are compared per batch with
``rtol=1e-5, atol=1e-6`` (aot_eager; measured: identical) and ``rtol=1e-4, atol=1e-5`` (inductor, whose fused
kernels may round differently; measured: identical on these toy nets).
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import pytest
import torch
from conftest import run_script
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_gen
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.modules.compile import compile_counts, compile_nets, compile_options, eager, is_compiled
from lightning_gen.nets import (
    JointMLPDiscriminator,
    MLPInfoGANDiscriminator,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDecoder,
    MLPDenoiser,
    MLPDiscriminator,
    MLPEncoder,
    MLPGenerator,
    VectorRealNVP,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_image_to_image import InversionDataModule, make_cyclegan, make_pix2pix  # noqa: E402
from test_stargan import DomainImages, make_stargan  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
AOT_EAGER = {"backend": "aot_eager"}
adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.9))


@pytest.fixture(autouse=True)
def _fresh_dynamo_one_thread() -> Iterator[None]:
    """Each test starts from empty TorchDynamo caches, so its graph counts do not depend on the tests before it (the
    automatic-dynamic size memory is per code object, and all nets share ``nn.Module._call_impl``'s). The toy nets run
    on one thread: on a busy 2-core machine two OpenMP threads wait for each other (measured: a 28 px DCGAN step
    0.5-1 s instead of 0.02 s)."""
    torch._dynamo.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _no_pytest_capture_of_dynamo_traces() -> Iterator[None]:
    """pytest (>= 9) attaches its log capture to every non-propagating logger, TorchDynamo's structured trace log
    among them, which then formats every graph it compiles: compiles run 4-5x slower. Detach it for the block."""
    trace = logging.getLogger("torch.__trace")
    attached = [h for h in trace.handlers if type(h).__module__.startswith("_pytest")]
    for handler in attached:
        trace.removeHandler(handler)
    try:
        yield
    finally:
        for handler in attached:
            trace.addHandler(handler)


class Recorder(L.Callback):
    """Per training batch: the logged training values and the process's TorchDynamo counts."""

    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []
        self.counts: list[dict[str, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counts.append(compile_counts())
        self.losses.append({k: float(v) for k, v in trainer.callback_metrics.items()
                            if k.startswith("train/") and not k.endswith("steps")})


def _fit(model: lightning_gen.GenerativeModule, data: L.LightningDataModule | dict[str, DataLoader], max_steps: int,
         root: Path,
         ckpt_path: str | None = None, **trainer_kwargs: Any) -> Recorder:
    """Fit on the CPU with every batch logged, no validation; ``last.ckpt`` is saved in ``root`` at the end."""
    recorder = Recorder()
    L.seed_everything(1, verbose=False)
    kwargs = dict(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, limit_val_batches=0,
                  default_root_dir=str(root), callbacks=[recorder, SaveAtEnd()])
    data_kwargs = data if isinstance(data, dict) else {"datamodule": data}
    with _no_pytest_capture_of_dynamo_traces():
        L.Trainer(**{**kwargs, **trainer_kwargs}).fit(model, **data_kwargs, ckpt_path=ckpt_path)
    return recorder


def _toy(**kwargs: Any) -> ToyGaussiansDataModule:
    return ToyGaussiansDataModule(**{"mixture": "ring", "train_size": 256, "val_size": 64, "batch_size": 32, **kwargs})


def _wgan_gp(**kwargs: Any) -> lightning_gen.WGANGP:
    torch.manual_seed(0)
    return lightning_gen.WGANGP(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), n_critic=2,
                                generator_optimizer=adam, discriminator_optimizer=adam, **kwargs)


def _counts_since(before: dict[str, int], recorder: Recorder) -> list[tuple[int, int]]:
    return [(c["frames"] - before["frames"], c["graphs"] - before["graphs"]) for c in recorder.counts]


def _assert_same_losses(eager_run: Recorder, compiled_run: Recorder, rtol: float, atol: float) -> None:
    """The values logged at each batch (every batch, unless the fit logs less often) agree."""
    assert len(eager_run.losses) == len(compiled_run.losses) > 0
    assert sum(bool(logged) for logged in compiled_run.losses) >= len(compiled_run.losses) // 4
    for step, (a, b) in enumerate(zip(eager_run.losses, compiled_run.losses)):
        assert a.keys() == b.keys(), f"batch {step}: logged {sorted(a)} eager, {sorted(b)} compiled"
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=lambda m: f"batch {step}: {m}")


# -- the option ------------------------------------------------------------------------------------------------------
def test_compile_option_is_checked_and_isolates_each_net():
    assert compile_options(False) is None and compile_options(None) is None
    isolate = {"isolate_recompiles": True} if "isolate_recompiles" in compile_options(True) else {}
    assert compile_options(True) == isolate
    assert compile_options({"mode": "max-autotune", "dynamic": False}) == {"mode": "max-autotune", "dynamic": False,
                                                                          **isolate}
    with pytest.raises(ValueError, match=r"\['modes'\], which torch.compile does not take"):
        compile_options({"modes": "max-autotune"})
    with pytest.raises(TypeError, match="compile must be true, false or a dict"):
        compile_options("max-autotune")
    with pytest.raises(ValueError, match="which torch.compile does not take"):
        lightning_gen.VAE(MLPEncoder(2, 4, (8,)), MLPDecoder(2, 2, (8,)), likelihood="gaussian", data_range=None,
                          compile={"fullgrph": True})
    # the option is a saved constructor argument of every family, the named games' included
    model = _wgan_gp(compile=AOT_EAGER)
    assert model.hparams["compile"] == AOT_EAGER and model.compile_options == {**AOT_EAGER, **isolate}
    assert not any(is_compiled(net) for net in model.nets_to_compile())  # compiled at set-up, not before


def test_compile_nets_is_in_place_once_and_eager_restores():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    keys = list(net.state_dict())
    assert compile_nets([net, net], None) == []
    assert compile_nets([net, net], compile_options(AOT_EAGER)) == [net]  # once, even when listed twice
    compiled = net._compiled_call_impl
    assert compile_nets([net], compile_options(AOT_EAGER)) == [] and net._compiled_call_impl is compiled
    assert list(net.state_dict()) == keys and is_compiled(net)
    with eager(net):
        assert not is_compiled(net)
    assert net._compiled_call_impl is compiled


def test_cli_sets_the_option_from_yaml():
    from lightning_gen.cli import GenerativeCLI

    config = ROOT / "configs" / "wgan_gp" / "toy_ring.yaml"
    cli = GenerativeCLI(args=["--config", str(config), "--model.compile={backend: aot_eager, dynamic: false}",
                              "--trainer.logger=false"], run=False)
    assert isinstance(cli.model, lightning_gen.WGANGP)
    assert {k: cli.model.compile_options[k] for k in ("backend", "dynamic")} == {"backend": "aot_eager", "dynamic": False}
    cli = GenerativeCLI(args=["--config", str(config), "--trainer.logger=false"], run=False)
    assert cli.model.compile_options is None


# -- the adversarial games: critic steps, frozen players, the penalty's eager fallback, checkpoints ------------------
def test_compiled_wgan_gp_matches_eager_stops_recompiling_and_shares_checkpoints(tmp_path):
    eager_model, compiled_model = _wgan_gp(), _wgan_gp(compile=AOT_EAGER)
    eager_run = _fit(eager_model, _toy(), 4, tmp_path / "eager")  # 4 generator steps = 8 critic batches
    before = compile_counts()
    compiled_run = _fit(compiled_model, _toy(), 4, tmp_path / "compiled")
    assert all(is_compiled(net) for net in (compiled_model.generator, compiled_model.discriminator))
    assert not any(is_compiled(net) for net in (eager_model.generator, eager_model.discriminator))
    _assert_same_losses(eager_run, compiled_run, rtol=1e-5, atol=1e-6)
    assert "train/penalty" in compiled_run.losses[0] and "train/loss_gen" in compiled_run.losses[-1]

    # batch 1: the generator without gradients (the fakes) and the critic; batch 2 adds the generator step: the
    # generator with gradients and the critic frozen (requires_grad off). Then nothing compiles again.
    counts = _counts_since(before, compiled_run)
    assert counts[0] == (2, 2) and counts[1] == (4, 4)
    assert counts[1:] == [(4, 4)] * (len(counts) - 1)

    # samples of the compiled nets equal the eager ones
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(compiled_model.sample(16, generator=g()), eager_model.sample(16, generator=g()),
                               rtol=1e-5, atol=1e-6)

    # a compiled run's checkpoint has the eager keys and loads into eager nets; an eager run's resumes compiled
    state = torch.load(tmp_path / "compiled" / "last.ckpt", weights_only=True)["state_dict"]
    assert list(state) == list(eager_model.state_dict())
    loaded = lightning_gen.WGANGP.load_from_checkpoint(
        tmp_path / "compiled" / "last.ckpt", generator=MLPGenerator(2, 2, (16,)),
        discriminator=MLPDiscriminator(2, (16,)), compile=False)
    torch.testing.assert_close(loaded.state_dict(), compiled_model.state_dict(), rtol=0, atol=0)
    assert loaded.compile_options is None and not is_compiled(loaded.generator)

    resumed = {}
    for name, model in (("eager", _wgan_gp()), ("compiled", _wgan_gp(compile=AOT_EAGER))):
        run = _fit(model, _toy(), 6, tmp_path / f"resumed_{name}", ckpt_path=str(tmp_path / "eager" / "last.ckpt"))
        resumed[name] = (run, model)
    assert is_compiled(resumed["compiled"][1].generator)
    assert len(resumed["compiled"][0].losses) == 4  # generator steps 5 and 6
    _assert_same_losses(resumed["eager"][0], resumed["compiled"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(resumed["compiled"][1].state_dict(), resumed["eager"][1].state_dict(),
                               rtol=1e-5, atol=1e-6)


class SaveAtEnd(L.Callback):
    """Saves ``last.ckpt`` in the trainer's root folder when the fit ends."""

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(Path(trainer.default_root_dir) / "last.ckpt")


def test_penalty_needs_the_eager_fallback():
    """What the fallback avoids: a compiled critic under a gradient penalty fails at the backward."""
    from lightning_gen.losses import gradient_penalty

    critic = MLPDiscriminator(2, (8,))
    compile_nets([critic], compile_options(AOT_EAGER))
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    # (torch says "does not currently support double backward", or, with donated buffers, "requires create_graph=False")
    with pytest.raises(RuntimeError, match="double backward|requires create_graph=False"):
        gradient_penalty(critic, real, fake).backward()
    with eager(critic):
        gradient_penalty(critic, real, fake).backward()
    grads = [p.grad for p in critic.parameters() if p.grad is not None]  # the last bias has no input gradient
    assert len(grads) == len(list(critic.parameters())) - 1 and all(torch.isfinite(g).all() for g in grads)


# -- every family: same losses, a fixed number of graphs, none after the warm-up -----------------------------------
def _ae(**kwargs: Any) -> lightning_gen.Autoencoder:
    return lightning_gen.Autoencoder(MLPEncoder(2, 2, (16,)), MLPDecoder(2, 2, (16,)), data_range=None, **kwargs)


def _vae(**kwargs: Any) -> lightning_gen.VAE:
    return lightning_gen.VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian",
                             data_range=None, **kwargs)


FAMILIES: dict[str, tuple[Callable[..., lightning_gen.GenerativeModule], Callable[[], L.LightningDataModule], int]] = {
    # family: (build, data, graphs compiled in training)
    "vae": (_vae, _toy, 2),  # encoder, decoder
    "autoencoder": (_ae, _toy, 2),
    "dae": (lambda **k: lightning_gen.DenoisingAutoencoder(MLPEncoder(2, 2, (16,)), MLPDecoder(2, 2, (16,)),
                                                           data_range=None, noise_std=0.3, **k), _toy, 3),  # + clean codes
    "realnvp": (lambda **k: lightning_gen.RealNVP(VectorRealNVP(2, 4, (16, 16)), **k), _toy, 1),
    "ddpm": (lambda **k: lightning_gen.DDPM(MLPDenoiser(2, (32, 32), 16), num_timesteps=25, ema_decay=0.9, **k), _toy, 1),
    "gan": (lambda **k: lightning_gen.GAN(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), **k), _toy, 4),
    "infogan": (lambda **k: lightning_gen.InfoGAN(MLPGenerator(2 + 4 + 1, 2, (16,)),
                                                  MLPInfoGANDiscriminator(2, 4, 1, (16,), (8,)), **k), _toy, 3),  # q() eager
    "bigan": (lambda **k: lightning_gen.BiGAN(MLPGenerator(4, 2, (16,)), MLPEncoder(2, 4, (16,)),
                                              JointMLPDiscriminator(2, 4, (16,)), **k), _toy, 5),
    "pix2pix": (make_pix2pix, InversionDataModule, 3),  # generator; discriminator trained and frozen
    "cyclegan": (make_cyclegan, InversionDataModule, 8),
    # generator: no-grad fakes, translation, reconstruction (its input needs grad); discriminator: real, fake, frozen
    "stargan": (lambda **k: make_stargan(base=4, n_critic=1, **k), DomainImages, 8),  # 2 generators; 2 discriminators frozen and trained
}
SLOW = {"cyclegan", "stargan"}  # four conv nets: ~4 s; StarGAN ~12 s


@pytest.mark.parametrize("family", [f if f not in SLOW else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_compiled_family_matches_eager_and_stops_recompiling(family, tmp_path):
    build, data, graphs = FAMILIES[family]
    torch.manual_seed(0)
    eager_model = build()
    torch.manual_seed(0)
    compiled_model = build(compile=AOT_EAGER)
    eager_run = _fit(eager_model, data(), 5, tmp_path / "eager")
    before = compile_counts()
    compiled_run = _fit(compiled_model, data(), 5, tmp_path / "compiled")
    nets = compiled_model.nets_to_compile()
    assert nets and all(is_compiled(net) for net in nets)
    _assert_same_losses(eager_run, compiled_run, rtol=1e-5, atol=1e-6)
    # every graph is compiled at the first batch; none after
    assert _counts_since(before, compiled_run) == [(graphs, graphs)] * len(compiled_run.counts)


def test_validation_and_epochs_compile_once(tmp_path):
    """Evaluation (eval mode, no gradients) and a smaller last batch compile their own graphs once, in the first
    epoch; later epochs reuse every graph."""
    model = _vae(compile=AOT_EAGER)
    points = torch.randn(200, 2)
    loaders = {"train_dataloaders": DataLoader(TensorDataset(points), batch_size=64, shuffle=True),
               "val_dataloaders": DataLoader(TensorDataset(points[:64]), batch_size=64)}
    before = compile_counts()
    run = _fit(model, loaders, -1, tmp_path, max_epochs=3, limit_val_batches=1, num_sanity_val_steps=1)
    counts = _counts_since(before, run)
    per_epoch = len(counts) // 3
    assert len(counts) == 3 * per_epoch == 12  # 200 = 3 x 64 + 8
    # sanity check: encoder and decoder in eval mode without gradients; first batch: both with gradients; the last
    # (8 examples): both again for the new size, now with a dynamic batch dimension (torch's automatic dynamic)
    assert counts[0] == (4, 4) and counts[per_epoch - 2] == (4, 4) and counts[per_epoch - 1] == (6, 6)
    assert counts[per_epoch:] == [counts[per_epoch - 1]] * (len(counts) - per_epoch)



def test_conditional_nets_with_checks_switched_per_batch_stop_recompiling(tmp_path):
    """Conditional nets check their labels' range inside ``forward`` on the batches that start an epoch or log, and
    skip it on the others (:mod:`lightning_gen.checks`): both paths compile once (the check's host read is a graph
    break), and after the first epochs nothing compiles again."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(24, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 3, (24,), generator=g)
    loader = lambda: {"train_dataloaders": DataLoader(TensorDataset(images, labels), batch_size=4, shuffle=True)}  # noqa: E731
    runs = {}
    for mode, option in (("eager", False), ("compiled", AOT_EAGER)):
        torch.manual_seed(0)
        model = lightning_gen.ConditionalGAN(
            DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4, num_classes=3),
            DCGANDiscriminator(image_size=28, channels=1, base_channels=4, num_classes=3), loss="wasserstein",
            regularizer="r1", n_critic=2, compile=option)
        # 6 batches an epoch, 3 generator steps: 4 epochs; logged every 4th batch
        runs[mode] = _fit(model, loader(), 12, tmp_path / mode, log_every_n_steps=4)
    assert len(runs["compiled"].counts) == 24
    _assert_same_losses(runs["eager"], runs["compiled"], rtol=1e-5, atol=1e-6)
    counts = runs["compiled"].counts
    assert counts[11]["graphs"] > 0 and counts[12:] == [counts[11]] * 12  # epochs 3 and 4 compile nothing

@pytest.mark.slow
def test_inductor_smoke(tmp_path):
    """The default backend (inductor, C++ kernels built with the system compiler): a VAE's steps equal eager ones."""
    torch.manual_seed(0)
    eager_run = _fit(_vae(), _toy(), 3, tmp_path / "eager")
    torch.manual_seed(0)
    model = _vae(compile=True)
    before = compile_counts()
    run = _fit(model, _toy(), 3, tmp_path / "inductor")
    assert all(is_compiled(net) for net in model.nets_to_compile())
    assert _counts_since(before, run) == [(2, 2)] * 3
    _assert_same_losses(eager_run, run, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """Under ``strategy="ddp"`` (tests/scripts/ddp_compile.py) compiled nets train as eager ones on every rank and
    compile only in the first batches."""
    script = ROOT / "tests" / "scripts" / "ddp_compile.py"
    proc = run_script(script, str(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for info in ranks:
        for name, graphs, warm_up in (("gan", 4, 2), ("vae", 2, 1)):
            eager_run, compiled_run = info[f"eager/{name}"], info[f"compiled/{name}"]
            assert compiled_run["compiled"] == [True, True] and eager_run["compiled"] == [False, False]
            torch.testing.assert_close(compiled_run["state_dict"], eager_run["state_dict"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(compiled_run["state_dict"], ranks[0][f"compiled/{name}"]["state_dict"],
                                       rtol=0, atol=0)  # every rank holds the same weights
            # the script fits eager/gan, eager/vae, compiled/gan, compiled/vae in this order, in the same processes
            before = info["eager/vae" if name == "gan" else "compiled/gan"]["counts"][-1]
            new = [(c["frames"] - before["frames"], c["graphs"] - before["graphs"]) for c in compiled_run["counts"]]
            assert new[warm_up - 1:] == [(graphs, graphs)] * (len(new) - warm_up + 1), (name, new)
