"""Tests of lightning_gen/nets/rbm.py on machines small enough to enumerate: free energy, exact log Z, AIS, Gibbs."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from lightning_gen.nets.rbm import (
    BernoulliRBM,
    ais_betas,
    ais_log_partition,
    base_visible_bias,
    binary_states,
    exact_log_partition,
)


def small_rbm(num_visible: int = 6, num_hidden: int = 4, scale: float = 1.0, seed: int = 0,
              input_shape: tuple[int, ...] | None = None) -> BernoulliRBM:
    """A float64 machine with N(0, scale^2) weights and biases (a far from uniform distribution)."""
    rbm = BernoulliRBM(input_shape or num_visible, num_hidden).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rbm.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return rbm


def joint_energies(rbm: BernoulliRBM) -> torch.Tensor:
    """``E(v, h)`` for every visible state (rows) and hidden state (columns), by the energy's definition."""
    vs = binary_states(rbm.num_visible, torch.float64)
    hs = binary_states(rbm.num_hidden, torch.float64)
    w, b, c = rbm.weight, rbm.visible_bias, rbm.hidden_bias
    return -(vs @ b)[:, None] - (hs @ c)[None, :] - vs @ w @ hs.T


def exact_visible_marginal(rbm: BernoulliRBM) -> torch.Tensor:
    """``p(v)`` for every visible state, from the joint energies."""
    with torch.no_grad():
        return torch.softmax(torch.logsumexp(-joint_energies(rbm), 1), 0)


def test_binary_states_enumerate_every_vector_once():
    s = binary_states(4)
    assert s.shape == (16, 4)
    assert len({tuple(row.tolist()) for row in s}) == 16
    torch.testing.assert_close(s[5], torch.tensor([1.0, 0.0, 1.0, 0.0]))  # 5 = 0b0101, unit i is bit i


def test_energy_matches_its_definition():
    rbm = small_rbm()
    vs = binary_states(6, torch.float64)
    h = binary_states(4, torch.float64)[torch.arange(64) % 16]
    expected = joint_energies(rbm)[torch.arange(64), torch.arange(64) % 16]
    torch.testing.assert_close(rbm.energy(vs, h), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("input_shape", [None, (2, 3)])
def test_free_energy_matches_brute_force_marginalisation_over_hidden_states(input_shape):
    rbm = small_rbm(input_shape=input_shape)
    vs = binary_states(6, torch.float64)
    expected = -torch.logsumexp(-joint_energies(rbm), 1)  # F(v) = -log sum_h exp(-E(v, h)), all 16 h
    shaped = vs.view(64, *input_shape) if input_shape else vs
    torch.testing.assert_close(rbm.free_energy(shaped), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rbm(shaped), expected, rtol=1e-12, atol=1e-12)


def test_conditionals_are_the_joint_distributions_conditionals():
    rbm = small_rbm()
    joint = torch.softmax(-joint_energies(rbm).flatten(), 0).view(64, 16)
    vs, hs = binary_states(6, torch.float64), binary_states(4, torch.float64)
    with torch.no_grad():
        p_h_given_v = joint / joint.sum(1, keepdim=True)  # (64, 16)
        torch.testing.assert_close(rbm.sample_hidden(vs)[0], p_h_given_v @ hs, rtol=1e-10, atol=1e-12)
        p_v_given_h = (joint / joint.sum(0, keepdim=True)).T  # (16, 64)
        torch.testing.assert_close(rbm.sample_visible(hs)[0], p_v_given_h @ vs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 4), (3, 7)])
def test_exact_log_partition_sums_every_joint_state(shape):
    rbm = small_rbm(*shape)  # (3, 7) enumerates the visible layer, (6, 4) the hidden one
    expected = float(torch.logsumexp(-joint_energies(rbm).detach().flatten(), 0))
    assert exact_log_partition(rbm) == pytest.approx(expected, rel=0, abs=1e-10)


def test_exact_log_partition_refuses_machines_too_large_to_enumerate():
    with pytest.raises(ValueError, match="ais_log_partition"):
        exact_log_partition(BernoulliRBM(30, 40), max_states=2**20)


def test_ais_betas_follow_the_papers_schedule():
    betas = ais_betas(14500)
    assert betas.shape == (14500,) and betas[0] == 0 and betas[-1] == 1
    assert bool((betas[1:] > betas[:-1]).all())
    assert int((betas <= 0.5).sum()) == 501 and int((betas <= 0.9).sum()) == 4501  # 500, then 4000, then 9999
    torch.testing.assert_close(ais_betas(2), torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        ais_betas(1)


@pytest.mark.parametrize("base", ["uniform", "data"])
def test_ais_matches_the_exact_log_partition_within_its_stated_error(base):
    rbm = small_rbm()
    exact = exact_log_partition(rbm)
    rates = exact_visible_marginal(rbm) @ binary_states(6, torch.float64) if base == "data" else None
    est = ais_log_partition(rbm, num_chains=1000, num_betas=1000, generator=torch.Generator().manual_seed(1),
                            base_rates=rates)
    assert 1e-4 < est.stderr < 0.02  # a tight estimate, so the check below has teeth
    assert abs(est.log_z - exact) < 3 * est.stderr, (est.log_z, exact, est.stderr)
    assert est.log_weights.shape == (1000,) and 100 < est.effective_sample_size <= 1000


def test_ais_stated_error_is_the_spread_of_repeated_estimates():
    # 40 independent short runs: the standard deviation of their estimates matches the error each one states
    rbm = small_rbm()
    estimates = [ais_log_partition(rbm, num_chains=50, num_betas=50, generator=torch.Generator().manual_seed(s))
                 for s in range(40)]
    values = torch.tensor([e.log_z for e in estimates], dtype=torch.float64)
    stated = sum(e.stderr for e in estimates) / len(estimates)
    spread = float(values.std())
    assert 0.6 * stated < spread < 1.6 * stated, (spread, stated)
    assert abs(float(values.mean()) - exact_log_partition(rbm)) < 3 * spread / math.sqrt(40)


def test_ais_is_seeded_and_leaves_the_global_rng_alone():
    rbm = small_rbm()
    state = torch.get_rng_state()
    a = ais_log_partition(rbm, 20, 30, generator=torch.Generator().manual_seed(3))
    b = ais_log_partition(rbm, 20, 30, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.log_z == b.log_z and torch.equal(a.log_weights, b.log_weights)
    with pytest.raises(ValueError, match="num_chains"):
        ais_log_partition(rbm, num_chains=1)


def test_base_visible_bias_is_the_clamped_logit_of_the_rates():
    like = torch.zeros(3)
    torch.testing.assert_close(base_visible_bias(torch.tensor([0.5, 0.0, 0.9]), 3, like),
                               torch.tensor([0.0, math.log(1e-3 / (1 - 1e-3)), math.log(9.0)]))
    torch.testing.assert_close(base_visible_bias(None, 3, like), like)
    with pytest.raises(ValueError, match="one probability per visible unit"):
        base_visible_bias(torch.full((4,), 0.5), 3, like)


def test_gibbs_samples_match_the_exact_marginals():
    # 20,000 independent chains of 50 block Gibbs steps from uniform states; Pearson's chi-squared test of the 64
    # visible states' counts against the exact p(v), at the 0.1% level on either side (63 degrees of freedom)
    rbm = small_rbm(scale=0.7)
    p = exact_visible_marginal(rbm)
    n = 20_000
    assert float(p.min()) * n >= 5  # every expected count large enough for the chi-squared approximation
    g = torch.Generator().manual_seed(0)
    start = (torch.rand(n, 6, generator=g, dtype=torch.float64) < 0.5).double()
    state = torch.get_rng_state()
    with torch.no_grad():
        v, probs = rbm.gibbs(start, 50, generator=g)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(v.unique().tolist()) <= {0.0, 1.0} and probs.shape == (n, 6)
    index = (v * 2 ** torch.arange(6, dtype=torch.float64)).sum(1).long()  # the row of binary_states(6)
    counts = torch.bincount(index, minlength=64).double()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert stats.chi2.ppf(0.001, 63) < chi2 < stats.chi2.ppf(0.999, 63), chi2


def test_a_batch_of_the_wrong_size_names_the_input_shape():
    rbm = BernoulliRBM((1, 4, 4), 3)
    assert rbm.data_shape == (1, 4, 4) and rbm.num_visible == 16
    assert rbm.weight.shape == (16, 3) and float(rbm.weight.std()) < 0.03  # N(0, 0.01^2), Hinton's guide
    assert float(rbm.visible_bias.abs().sum() + rbm.hidden_bias.abs().sum()) == 0
    with pytest.raises(ValueError, match=r"16 visible units \(input_shape \(1, 4, 4\)\)"):
        rbm.free_energy(torch.zeros(2, 1, 5, 5))
    with pytest.raises(ValueError, match="steps"):
        rbm.gibbs(torch.zeros(2, 16), 0)
