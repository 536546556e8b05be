"""Tests for lightning_gen/losses/adversarial.py: each loss against a hand computation, stability, and lookup."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from lightning_gen.losses import adversarial as adv
from lightning_gen.losses import (
    get_adversarial_loss,
    hinge_loss_dis,
    hinge_loss_gen,
    least_squares_loss_dis,
    least_squares_loss_gen,
    minimax_loss_dis,
    minimax_loss_gen,
    nonsaturating_loss_dis,
    nonsaturating_loss_gen,
    relativistic_average_loss_dis,
    relativistic_average_loss_gen,
    relativistic_loss_dis,
    relativistic_loss_gen,
    wasserstein_loss_dis,
    wasserstein_loss_gen,
)

# Small logits spanning both signs and the hinge/least-squares kinks; the real and fake batches differ in size on
# purpose (a loss must average each batch on its own, not stack them).
REAL = [-1.5, -0.25, 0.0, 0.7, 1.0, 2.5]
FAKE = [-2.0, -1.0, 0.3, 1.2]


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


# Hand computations in float64 numpy, written from the papers' formulas (not from the softplus identities the
# package uses), so a sign or a log(1 - D) / log D swap in the package cannot cancel out.
def _ref_dis(kind: str, r: np.ndarray, f: np.ndarray) -> float:
    if kind in ("minimax", "nonsaturating"):
        return -np.mean(np.log(_sigmoid(r))) - np.mean(np.log(1.0 - _sigmoid(f)))
    if kind == "wasserstein":
        return np.mean(f) - np.mean(r)
    if kind == "hinge":
        return np.mean(np.maximum(0.0, 1.0 - r)) + np.mean(np.maximum(0.0, 1.0 + f))
    if kind == "least_squares":
        return 0.5 * np.mean((r - 1.0) ** 2) + 0.5 * np.mean(f**2)
    raise AssertionError(kind)


def _ref_gen(kind: str, f: np.ndarray) -> float:
    if kind == "minimax":
        return np.mean(np.log(1.0 - _sigmoid(f)))
    if kind == "nonsaturating":
        return -np.mean(np.log(_sigmoid(f)))
    if kind in ("wasserstein", "hinge"):
        return -np.mean(f)
    if kind == "least_squares":
        return 0.5 * np.mean((f - 1.0) ** 2)
    raise AssertionError(kind)


PAIRS = {
    "minimax": (minimax_loss_gen, minimax_loss_dis),
    "nonsaturating": (nonsaturating_loss_gen, nonsaturating_loss_dis),
    "wasserstein": (wasserstein_loss_gen, wasserstein_loss_dis),
    "hinge": (hinge_loss_gen, hinge_loss_dis),
    "least_squares": (least_squares_loss_gen, least_squares_loss_dis),
}


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dis_loss_matches_hand_computation(kind, dtype):
    """``<kind>_loss_dis`` equals the paper's formula evaluated in float64 numpy, and is a 0-d tensor."""
    _, dis = PAIRS[kind]
    out = dis(torch.tensor(REAL, dtype=dtype), torch.tensor(FAKE, dtype=dtype))
    assert out.shape == () and out.dtype == dtype
    expected = torch.tensor(_ref_dis(kind, np.array(REAL), np.array(FAKE)), dtype=dtype)
    assert_close(out, expected)


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gen_loss_matches_hand_computation(kind, dtype):
    """``<kind>_loss_gen`` equals the paper's formula evaluated in float64 numpy, and is a 0-d tensor."""
    gen, _ = PAIRS[kind]
    out = gen(torch.tensor(FAKE, dtype=dtype))
    assert out.shape == () and out.dtype == dtype
    assert_close(out, torch.tensor(_ref_gen(kind, np.array(FAKE)), dtype=dtype))


def test_minimax_exact_values():
    """Closed forms: logits (0, ln3) on real and (0, -ln3) on fake give D = (1/2, 3/4) and (1/2, 1/4)."""
    r = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    f = torch.tensor([0.0, -math.log(3.0)], dtype=torch.float64)
    # -[log .5 + log .75]/2 - [log .5 + log .75]/2 = -log(3/8) = log(8/3)
    assert_close(minimax_loss_dis(r, f), torch.tensor(math.log(8.0 / 3.0), dtype=torch.float64))
    # mean(log(1 - D(f))) = [log .5 + log .75] / 2
    assert_close(minimax_loss_gen(f), torch.tensor(0.5 * math.log(0.375), dtype=torch.float64))
    # an undecided discriminator (all logits 0) pays log 4 = -V(D, G) at the game's equilibrium (Goodfellow, thm 1)
    z = torch.zeros(5, dtype=torch.float64)
    assert_close(minimax_loss_dis(z, z), torch.tensor(math.log(4.0), dtype=torch.float64))


def test_losses_vanish_at_their_optimum():
    """Hinge and least-squares discriminator losses are 0 at (and beyond) their targets, positive just short of them."""
    r, f = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -4.0])
    assert hinge_loss_dis(r, f).item() == 0.0
    assert hinge_loss_dis(r - 0.5, f).item() == pytest.approx(0.25, abs=1e-7)  # relu(1 - 0.5) + relu(1 - 2.5), halved
    assert least_squares_loss_dis(torch.ones(3), torch.zeros(3)).item() == 0.0
    assert least_squares_loss_gen(torch.ones(3)).item() == 0.0
    assert least_squares_loss_gen(torch.zeros(3)).item() == pytest.approx(0.5, abs=1e-7)


def test_losses_accept_column_shaped_outputs():
    """Scores of shape (B, 1) give the same scalar as (B,)."""
    r, f = torch.tensor(REAL), torch.tensor(FAKE)
    for gen, dis in PAIRS.values():
        assert_close(dis(r[:, None], f[:, None]), dis(r, f))
        assert_close(gen(f[:, None]), gen(f))


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_big_logits_give_finite_values_and_gradients(kind):
    """Logits of +-200 (where sigmoid underflows to 0/1 in float32) still give finite losses and gradients."""
    gen, dis = PAIRS[kind]
    r = torch.tensor([200.0, -200.0], requires_grad=True)
    f = torch.tensor([200.0, -200.0], requires_grad=True)
    loss = dis(r, f) + gen(f)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(r.grad).all() and torch.isfinite(f.grad).all()


def test_minimax_big_logits_exact():
    """softplus identities: -log sigmoid(-200) = 200 and -log sigmoid(200) = 0 to float32 precision."""
    r = torch.tensor([200.0, -200.0])
    f = torch.tensor([200.0, -200.0])
    # real: (0 + 200)/2, fake: (200 + 0)/2
    assert_close(minimax_loss_dis(r, f), torch.tensor(200.0))
    assert_close(nonsaturating_loss_gen(f), torch.tensor(100.0))
    assert_close(minimax_loss_gen(f), torch.tensor(-100.0))
    # a confidently right discriminator pays ~0 (e^-100 ~ 4e-44), not NaN
    assert_close(minimax_loss_dis(torch.tensor([100.0]), torch.tensor([-100.0])), torch.tensor(0.0), atol=1e-30, rtol=0)


def test_nonsaturating_generator_keeps_its_gradient_when_d_rejects_fakes():
    """Goodfellow 2014, sec. 3: at fake logit a << 0, d(minimax gen)/da = -sigmoid(a) ~ 0 but d(ns gen)/da ~ -1."""
    a = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    (g_mm,) = torch.autograd.grad(minimax_loss_gen(a), a)
    (g_ns,) = torch.autograd.grad(nonsaturating_loss_gen(a), a)
    assert_close(g_mm, -torch.sigmoid(a.detach()))  # -4.5e-5
    assert_close(g_ns, -torch.sigmoid(-a.detach()))  # -0.99995
    assert abs(g_mm.item()) < 1e-4 and abs(g_ns.item() + 1.0) < 1e-4


def test_nonsaturating_dis_equals_minimax_dis():
    """The non-saturating game changes only the generator's loss."""
    r, f = torch.randn(7, generator=torch.Generator().manual_seed(0)), torch.randn(5, generator=torch.Generator().manual_seed(1))
    assert_close(nonsaturating_loss_dis(r, f), minimax_loss_dis(r, f), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("minimax", "minimax"),
        ("saturating", "minimax"),
        ("nonsaturating", "nonsaturating"),
        ("non_saturating", "nonsaturating"),
        ("Non-Saturating", "nonsaturating"),
        ("wasserstein", "wasserstein"),
        ("WGAN", "wasserstein"),
        ("hinge", "hinge"),
        ("least_squares", "least_squares"),
        ("least-squares", "least_squares"),
        ("least squares", "least_squares"),
        ("lsgan", "least_squares"),
    ],
)
def test_get_adversarial_loss_resolves_names_and_aliases(name, kind):
    """Names are case-, dash- and space-insensitive; aliases map to the right (gen, dis) pair."""
    loss = get_adversarial_loss(name)
    assert loss.name == kind
    assert (loss.gen, loss.dis) == PAIRS[kind]


RELATIVISTIC = {"relativistic": (relativistic_loss_gen, relativistic_loss_dis),
                "relativistic_average": (relativistic_average_loss_gen, relativistic_average_loss_dis)}


def test_registry_holds_exactly_the_seven_games():
    """One entry per game, keyed by its canonical name."""
    assert sorted(adv.ADVERSARIAL_LOSSES) == sorted({**PAIRS, **RELATIVISTIC})
    assert all(loss.name == key for key, loss in adv.ADVERSARIAL_LOSSES.items())


def test_get_adversarial_loss_unknown_name_lists_known_ones():
    """An unknown name raises ValueError whose message names every known loss."""
    with pytest.raises(ValueError, match="Unknown adversarial loss 'relativistc'") as info:
        get_adversarial_loss("relativistc")
    for name in {**PAIRS, **RELATIVISTIC}:
        assert name in str(info.value)


# -- relativistic losses (Jolicoeur-Martineau 2018), hand-computed from the paper's formulas -------------------------
R_PAIRED, F_PAIRED = np.array([-1.5, -0.25, 0.0, 0.7]), np.array([-2.0, -1.0, 0.3, 1.2])


def _ref_relativistic(kind: str, player: str, r: np.ndarray, f: np.ndarray, target: float = 1.0) -> float:
    def bce(p: np.ndarray, t: float) -> np.ndarray:
        return -(t * np.log(p) + (1.0 - t) * np.log(1.0 - p))

    if kind == "relativistic":  # RSGAN, eqs. 7 and 8: sigmoid(C(x_r) - C(x_f)) over pairs
        d = _sigmoid(r - f) if player == "dis" else _sigmoid(f - r)
        return float(np.mean(bce(d, target)))
    # RaGAN, sec. 4.3: D(x_r) = sigmoid(C(x_r) - E C(x_f)), D(x_f) = sigmoid(C(x_f) - E C(x_r))
    d_real, d_fake = _sigmoid(r - f.mean()), _sigmoid(f - r.mean())
    if player == "dis":
        return float(np.mean(bce(d_real, target)) + np.mean(bce(d_fake, 0.0)))
    return float(np.mean(bce(d_fake, 1.0)) + np.mean(bce(d_real, 0.0)))


@pytest.mark.parametrize("target", [1.0, 0.9])
@pytest.mark.parametrize("kind", sorted(RELATIVISTIC))
def test_relativistic_losses_match_hand_computation(kind, target):
    gen, dis = RELATIVISTIC[kind]
    r, f = torch.tensor(R_PAIRED, dtype=torch.float64), torch.tensor(F_PAIRED, dtype=torch.float64)
    assert dis(r, f, real_target=target).item() == pytest.approx(_ref_relativistic(kind, "dis", R_PAIRED, F_PAIRED, target), rel=1e-12)
    assert gen(f, r).item() == pytest.approx(_ref_relativistic(kind, "gen", R_PAIRED, F_PAIRED), rel=1e-12)


def test_relativistic_average_accepts_unpaired_batches_and_rsgan_refuses_them():
    r, f = torch.tensor(REAL), torch.tensor(FAKE)
    expected = _ref_relativistic("relativistic_average", "dis", np.array(REAL), np.array(FAKE))
    assert relativistic_average_loss_dis(r, f).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        relativistic_loss_dis(r, f)


def test_loss_attributes_say_what_a_module_needs():
    losses = adv.ADVERSARIAL_LOSSES
    assert {n for n, l in losses.items() if l.needs_real_scores} == {"relativistic", "relativistic_average"}
    assert {n for n, l in losses.items() if l.estimates_wasserstein} == {"wasserstein"}
    assert {n for n, l in losses.items() if l.half_weighted} == {"least_squares"}
    assert {n for n, l in losses.items() if not l.smoothable} == {"wasserstein", "hinge"}
    with pytest.raises(ValueError, match="needs the real batch's scores"):
        losses["relativistic_average"].generator_loss(torch.zeros(3))
    with pytest.raises(ValueError, match="label smoothing does not apply to the 'hinge' loss"):
        losses["hinge"].discriminator_loss(torch.zeros(3), torch.zeros(3), real_target=0.9)


def test_loss_methods_upcast_low_precision_scores_only():
    loss = adv.ADVERSARIAL_LOSSES["nonsaturating"]
    half = torch.tensor(REAL, dtype=torch.bfloat16)
    assert loss.generator_loss(half).dtype == torch.float32
    assert loss.discriminator_loss(half, half, real_target=0.9).dtype == torch.float32
    assert loss.generator_loss(torch.tensor(REAL, dtype=torch.float64)).dtype == torch.float64
