"""Tests for lightning_gen/modules/bigan.py: what the discriminator sees, the losses against their formulas, frozen
players, shapes, encode/reconstruct, a short fit, the E = G^-1 optimum on a linear toy, and DDP."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import run_script
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import BiGAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import JointMLPDiscriminator, MLPEncoder, MLPGenerator

ROOT = Path(__file__).resolve().parents[2]


class Affine(nn.Module):
    """``y = a * x + b`` on ``(B, 1)`` vectors (a 1-D linear generator or encoder with fixed start values)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.latent_dim = 1
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: Tensor) -> Tensor:
        return self.a * x + self.b


class RecordingLinearD(nn.Module):
    """``D(x, z) = u x + v z + w`` on 1-D pairs, recording every pair it is called on."""

    def __init__(self, u: float = 0.7, v: float = -1.3, w: float = 0.2) -> None:
        super().__init__()
        self.latent_dim = 1
        self.u, self.v, self.w = (nn.Parameter(torch.tensor(t)) for t in (u, v, w))
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        self.calls.append((x.detach().clone(), z.detach().clone()))
        return (self.u * x + self.v * z + self.w).squeeze(-1)


def _quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=0)
    return L.Trainer(**{**args, **kwargs})


def _one_step(tmp_path: Path, loss: str) -> tuple[BiGAN, RecordingLinearD, Tensor, Tensor, L.Trainer]:
    """One batch of 4 points with fixed noise; the discriminator's learning rate is 0, so both logged losses are
    functions of the starting weights."""
    x = torch.tensor([[0.5], [-1.0], [2.0], [0.25]])
    z = torch.tensor([[0.3], [-0.8], [1.1], [0.0]])
    d = RecordingLinearD()
    model = BiGAN(Affine(2.0, 0.5), Affine(-0.5, 0.1), d, loss=loss,
                  generator_optimizer=partial(torch.optim.SGD, lr=0.1),
                  discriminator_optimizer=partial(torch.optim.SGD, lr=0.0))
    model.noise = lambda n, generator=None: z.clone()  # type: ignore[method-assign]
    trainer = _quiet_trainer(tmp_path, max_steps=1, log_every_n_steps=1)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=4))
    return model, d, x, z, trainer


def test_the_discriminator_sees_data_pairs_and_sample_pairs_exactly(tmp_path):
    _, d, x, z, _ = _one_step(tmp_path, "nonsaturating")
    assert len(d.calls) == 4  # discriminator step: two calls; generator/encoder step: two calls
    e_x = -0.5 * x + 0.1  # E(x) with the starting weights
    g_z = 2.0 * z + 0.5  # G(z)
    for first, second in (d.calls[:2], d.calls[2:]):  # both steps see the pairs of the same batch and noise
        torch.testing.assert_close(first[0], x, rtol=0, atol=0)
        torch.testing.assert_close(first[1], e_x, rtol=0, atol=0)
        torch.testing.assert_close(second[0], g_z, rtol=0, atol=0)
        torch.testing.assert_close(second[1], z, rtol=0, atol=0)


def _scores(x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    real = (0.7 * x - 1.3 * (-0.5 * x + 0.1) + 0.2).squeeze(-1)  # D(x, E(x))
    fake = (0.7 * (2.0 * z + 0.5) - 1.3 * z + 0.2).squeeze(-1)  # D(G(z), z)
    return real, fake


# the papers' formulas, written out: (discriminator loss, generator/encoder loss) from (real, fake) scores
FORMULAS = {
    # BiGAN eq. 3: V = E log D(x, E(x)) + E log(1 - D(G(z), z)); D minimizes -V, G and E minimize V
    "minimax": (lambda r, f: -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean()),
                lambda r, f: torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean()),
    # inverted labels: G and E minimize -E log D(G(z), z) - E log(1 - D(x, E(x)))
    "nonsaturating": (lambda r, f: -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean()),
                      lambda r, f: -(torch.log(torch.sigmoid(f)).mean() + torch.log(1 - torch.sigmoid(r)).mean())),
    "wasserstein": (lambda r, f: f.mean() - r.mean(), lambda r, f: r.mean() - f.mean()),
    # LSGAN 0/1 coding, labels swapped for G and E: 1/2 E(D(G(z), z) - 1)^2 + 1/2 E D(x, E(x))^2
    "least_squares": (lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),
                      lambda r, f: 0.5 * ((f - 1) ** 2).mean() + 0.5 * (r ** 2).mean()),
}


@pytest.mark.parametrize("loss", sorted(FORMULAS))
def test_logged_losses_equal_the_formulas_by_hand(tmp_path, loss):
    _, _, x, z, trainer = _one_step(tmp_path, loss)
    real, fake = _scores(x, z)
    want_d, want_ge = (f(real, fake) for f in FORMULAS[loss])
    assert float(trainer.callback_metrics["train/loss_dis"]) == pytest.approx(float(want_d), rel=1e-6, abs=1e-7)
    assert float(trainer.callback_metrics["train/loss_gen"]) == pytest.approx(float(want_ge), rel=1e-6, abs=1e-7)


def test_relativistic_losses_take_both_kinds_of_pair():
    model = BiGAN(Affine(1.0, 0.0), Affine(1.0, 0.0), RecordingLinearD(), loss="relativistic")
    real, fake = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    want = F.softplus(-(fake - real)).mean()  # RSGAN's generator loss: -E log sigmoid(D(G(z), z) - D(x, E(x)))
    assert float(model.generator_encoder_loss(real, fake)) == pytest.approx(float(want), rel=1e-6)


def test_the_generator_and_encoder_step_moves_both_along_the_hand_gradient(tmp_path):
    """SGD(0.1) on the non-saturating G/E loss: the step equals -0.1 times the gradient worked out by hand."""
    model, _, x, z, _ = _one_step(tmp_path, "nonsaturating")
    real, fake = _scores(x, z)
    # loss = mean softplus(-fake) + mean softplus(real); d fake / d a_G = 0.7 z, d fake / d b_G = 0.7,
    # d real / d a_E = -1.3 x, d real / d b_E = -1.3
    d_fake = -torch.sigmoid(-fake) / len(fake)
    d_real = torch.sigmoid(real) / len(real)
    grads = {"a_g": (d_fake * 0.7 * z.squeeze(-1)).sum(), "b_g": (d_fake * 0.7).sum(),
             "a_e": (d_real * -1.3 * x.squeeze(-1)).sum(), "b_e": (d_real * -1.3).sum()}
    with torch.no_grad():
        got = {"a_g": model.generator.a - 2.0, "b_g": model.generator.b - 0.5,
               "a_e": model.encoder.a + 0.5, "b_e": model.encoder.b - 0.1}
    for name in grads:
        # steps of ~1e-2 on weights of ~1: float32 keeps them to ~1e-7
        assert float(got[name]) == pytest.approx(-0.1 * float(grads[name]), abs=5e-7), name
        assert abs(float(grads[name])) > 1e-3, name  # a real step, not a tolerance-sized one
    assert model.discriminator.u.item() == torch.tensor(0.7).item()  # lr 0: the discriminator did not move


class GradRecorder(L.Callback):
    """Before every optimizer step: which of the module's parameters hold a gradient."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, dict[str, bool]]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        stepping = pl_module._stepping.name
        self.steps.append((stepping, {n: p.grad is not None for n, p in pl_module.named_parameters()}))


def _toy_bigan(**kwargs) -> BiGAN:
    return BiGAN(MLPGenerator(2, 2, (16, 16)), MLPEncoder(2, 2, (16, 16)), JointMLPDiscriminator(2, 2, (16, 16)),
                 **kwargs)


def _toy_data(**kwargs) -> ToyGaussiansDataModule:
    return ToyGaussiansDataModule(**{"mixture": "ring", "train_size": 256, "val_size": 64, "batch_size": 32, **kwargs})


def test_each_step_leaves_the_other_players_gradients_none(tmp_path):
    L.seed_everything(0)
    rec = GradRecorder()
    model = _toy_bigan()
    trainer = _quiet_trainer(tmp_path, max_steps=3, callbacks=[rec])
    trainer.fit(model, _toy_data())
    assert [name for name, _ in rec.steps] == ["discriminator", "generator"] * 3
    for name, has_grad in rec.steps:
        for param, flag in has_grad.items():
            mine = param.startswith("discriminator.") == (name == "discriminator")
            assert flag == mine, f"{name} step: {param} has grad {flag}"  # own params all have one, others none
    assert model.player_steps == {"generator": 3, "discriminator": 3} and trainer.global_step == 3


def test_one_optimizer_over_generator_and_encoder():
    model = _toy_bigan()
    opt_g, opt_d = model.configure_optimizers()[0]
    want = {id(p) for p in [*model.generator.parameters(), *model.encoder.parameters()]}
    assert {id(p) for g in opt_g.param_groups for p in g["params"]} == want
    assert {id(p) for g in opt_d.param_groups for p in g["params"]} == {id(p) for p in model.discriminator.parameters()}


def test_shapes_of_sample_encode_reconstruct_and_modes_restored():
    torch.manual_seed(0)
    model = _toy_bigan()
    model.train()
    x = torch.randn(5, 2)
    assert model.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)
    assert model.encode(x).shape == (5, 2)
    assert model.reconstruct(x).shape == (5, 2)
    assert all(m.training for m in model.modules())
    # reconstruct is exactly G(E(x)) in eval mode
    with torch.no_grad():
        torch.testing.assert_close(model.reconstruct(x), model.generator(model.encoder(x)), rtol=0, atol=0)
    with pytest.raises(TypeError, match="unexpected arguments"):
        model.sample(2, labels=torch.zeros(2))


def test_mismatched_code_sizes_are_named_at_construction():
    with pytest.raises(ValueError, match=r"out_dim=3 .* latent_dim is 2: set `out_dim: 2`"):
        BiGAN(MLPGenerator(2, 2, (8,)), MLPEncoder(2, 3, (8,)), JointMLPDiscriminator(2, 2, (8,)))
    with pytest.raises(ValueError, match=r"latent_dim=4 .* set `latent_dim: 2`"):
        BiGAN(MLPGenerator(2, 2, (8,)), MLPEncoder(2, 2, (8,)), JointMLPDiscriminator(2, 4, (8,)))


def test_nets_that_do_not_fit_the_data_are_named_before_training(tmp_path):
    model = BiGAN(MLPGenerator(2, 3, (8,)), MLPEncoder(3, 2, (8,)), JointMLPDiscriminator(3, 2, (8,)))
    with pytest.raises(ValueError) as err:
        _quiet_trainer(tmp_path, max_steps=1).fit(model, _toy_data())
    text = str(err.value)
    assert "generator (MLPGenerator) makes samples of shape (3,)" in text
    assert "encoder (MLPEncoder)" in text and "discriminator (JointMLPDiscriminator)" in text


def test_a_short_fit_validates_and_logs_reconstruction_error(tmp_path):
    L.seed_everything(0)
    model = _toy_bigan()
    trainer = _quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=2, log_every_n_steps=4)
    trainer.fit(model, _toy_data())
    assert trainer.global_step == 16 and model.player_steps["discriminator"] == 16
    for key in ("val/loss_dis", "val/loss_gen", "val/reconstruction_mse", "train/loss_dis", "train/loss_gen"):
        assert key in trainer.callback_metrics and torch.isfinite(trainer.callback_metrics[key]), key


class Quadratic(nn.Module):
    """``D(x, z) = w . (x, z, x^2, z^2, x z) + c``: the log-ratio family of two Gaussians on (x, z)."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_dim = 1
        self.linear = nn.Linear(5, 1)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.linear(torch.cat([x, z, x * x, z * z, x * z], dim=1)).squeeze(-1)


@pytest.mark.slow
def test_linear_toy_training_makes_the_encoder_invert_the_generator(tmp_path):
    """x ~ N(0, 2^2), G(z) = a z + b, E(x) = c x + d: the joint laws of (x, E(x)) and (G(z), z) agree only when
    a = +-2, b = d = 0 and c = 1/a, so E(G(z)) = z (BiGAN, theorem 2)."""
    L.seed_everything(0)
    x = 2.0 * torch.randn(8192, 1)
    model = BiGAN(Affine(0.5, 0.3), Affine(0.2, -0.2), Quadratic(),
                  generator_optimizer=partial(torch.optim.Adam, lr=1e-2, betas=(0.5, 0.999)),
                  discriminator_optimizer=partial(torch.optim.Adam, lr=1e-2, betas=(0.5, 0.999)),
                  generator_scheduler=partial(torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=0.05,
                                              total_iters=1500),
                  discriminator_scheduler=partial(torch.optim.lr_scheduler.LinearLR, start_factor=1.0,
                                                  end_factor=0.05, total_iters=1500))
    trainer = _quiet_trainer(tmp_path, max_steps=1500)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=256, shuffle=True))
    a, b = float(model.generator.a), float(model.generator.b)
    c, d = float(model.encoder.a), float(model.encoder.b)
    # seeds 0-4 give |a| within 1.1 % of 2, a c within 0.025 of 1 and |c b + d| <= 0.06; the start has a c = 0.1
    assert abs(a) == pytest.approx(2.0, rel=0.05)
    assert a * c == pytest.approx(1.0, abs=0.08)  # E(G(z)) = a c z + (c b + d) ~ z
    assert abs(c * b + d) < 0.12


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_parameters_identical(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_bigan.py", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    for info in ranks:
        assert info["world_size"] == 2 and info["global_step"] == 6 and info["player_steps"]["discriminator"] == 6
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    assert set(a) == set(init)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    for prefix in ("generator.", "encoder.", "discriminator."):  # every player trained
        assert max((a[k] - init[k]).abs().max().item() for k in init if k.startswith(prefix)) > 1e-4, prefix
