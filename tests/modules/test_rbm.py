"""Tests of lightning_gen/modules/rbm.py: the CD/PCD step by hand, learning a known distribution, AIS likelihoods,
sampling, binarization, the data's pixel means, shape errors, exact resume with persistent chains, and DDP."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_script
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import RBM, NonFiniteLossError
from lightning_gen.modules.base import _RANK_BUFFERS_KEY
from lightning_gen.nets.rbm import BernoulliRBM, binary_states, exact_log_partition
from lightning_gen.schedulers import LinearLR

ROOT = Path(__file__).resolve().parents[2]


def small_rbm(num_visible: int = 6, num_hidden: int = 4, scale: float = 1.0, seed: int = 0) -> BernoulliRBM:
    """A float32 machine with N(0, scale^2) weights and biases."""
    rbm = BernoulliRBM(num_visible, num_hidden)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rbm.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return rbm


def exact_probabilities(rbm: BernoulliRBM) -> torch.Tensor:
    """``p(v)`` of every visible state (rows of ``binary_states``), float64."""
    with torch.no_grad():
        free = copy.deepcopy(rbm).double().free_energy(binary_states(rbm.num_visible, torch.float64))
    return torch.softmax(-free, 0)


def state_index(v: torch.Tensor) -> torch.Tensor:
    """The row of ``binary_states`` each binary vector is."""
    return (v.double() * 2 ** torch.arange(v.shape[1], dtype=torch.float64)).sum(1).long()


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    return L.Trainer(**{**base, **kwargs})


# -- the training step --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("persistent", [False, True])
def test_one_cd1_step_has_the_gradient_computed_by_hand(persistent):
    model = RBM(small_rbm(scale=0.5), gibbs_steps=1, persistent=persistent, persistent_chains=5)
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float() * 2 - 1  # binary, in [-1, 1]
    chains = model.persistent_chains.clone() if persistent else None
    torch.manual_seed(5)
    loss, logs = model.training_loss(x)
    loss.backward()
    # by hand, with the same draws: binarization (of binary data: no effect), h ~ p(h | v), v ~ p(v | h)
    w, b, c = (p.detach() for p in (model.rbm.weight, model.rbm.visible_bias, model.rbm.hidden_bias))
    torch.manual_seed(5)
    torch.rand(8, 6)
    v0 = (x + 1) / 2
    start = chains if persistent else v0
    h0 = (torch.rand(start.shape[0], 4) < torch.sigmoid(start @ w + c)).float()
    v1 = (torch.rand(start.shape[0], 6) < torch.sigmoid(h0 @ w.T + b)).float()
    ph0, ph1 = torch.sigmoid(v0 @ w + c), torch.sigmoid(v1 @ w + c)
    torch.testing.assert_close(model.rbm.weight.grad, -(v0.T @ ph0 / 8 - v1.T @ ph1 / len(v1)))
    torch.testing.assert_close(model.rbm.visible_bias.grad, -(v0.mean(0) - v1.mean(0)))
    torch.testing.assert_close(model.rbm.hidden_bias.grad, -(ph0.mean(0) - ph1.mean(0)))
    free = lambda v: -(v @ b) - torch.nn.functional.softplus(v @ w + c).sum(1)  # noqa: E731
    torch.testing.assert_close(loss.detach(), free(v0).mean() - free(v1).mean())
    assert set(logs) == {"loss"}  # free energy and reconstruction error only on logging batches
    if persistent:
        torch.testing.assert_close(model.persistent_chains, v1, rtol=0, atol=0)  # the chains moved on
    else:
        assert "persistent_chains" not in model.state_dict()


def test_cd_k_runs_k_gibbs_steps(monkeypatch):
    model = RBM(small_rbm(), gibbs_steps=3)
    steps = []
    original = model.rbm.gibbs
    monkeypatch.setattr(model.rbm, "gibbs", lambda v, k, generator=None: steps.append(k) or original(v, k, generator))
    model.training_loss(torch.zeros(4, 6))
    assert steps == [3]


@pytest.mark.parametrize("persistent", [False, True])
def test_training_learns_a_known_distribution(persistent, tmp_path):
    # data drawn from a 6 x 4 RBM; a 6 x 8 RBM trained by CD-1 or PCD-1 (8 epochs, learning rate decayed linearly)
    # gets close to the data in exact KL
    target = exact_probabilities(small_rbm(scale=1.0, seed=3))
    g = torch.Generator().manual_seed(0)
    data = binary_states(6)[torch.multinomial(target.float(), 4096, replacement=True, generator=g)]
    empirical = torch.bincount(state_index(data), minlength=64).double() / len(data)
    torch.manual_seed(0)
    model = RBM(BernoulliRBM(6, 8, init_std=0.1), persistent=persistent, persistent_chains=64, data_range=(0, 1),
                optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
                scheduler=lambda opt: LinearLR(opt, start_factor=1.0, end_factor=0.01))  # over the run's 512 steps

    def kl() -> float:
        q = exact_probabilities(model.rbm)
        return float((empirical * (empirical.clamp_min(1e-30).log() - q.log())).sum())

    before = kl()
    quiet_trainer(tmp_path, max_epochs=8, limit_val_batches=0).fit(
        model, DataLoader(TensorDataset(data), batch_size=64, shuffle=True))
    after = kl()
    assert before > 0.5, before
    assert 0 <= after < 0.03, after  # ~0.018 for both (sampling noise alone puts the target 0.008 away)


def test_a_non_finite_loss_stops_training(tmp_path):
    model = RBM(small_rbm())
    with torch.no_grad():
        model.rbm.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="RBM"):
        quiet_trainer(tmp_path, max_steps=2).fit(model, DataLoader(TensorDataset(torch.zeros(8, 6)), batch_size=4))


# -- the likelihood -----------------------------------------------------------------------------------------------
def test_log_prob_is_minus_the_free_energy_minus_the_ais_log_partition():
    rbm = small_rbm()
    exact = exact_log_partition(rbm)
    model = RBM(rbm, ais_num_chains=500, ais_num_betas=500, data_range=(0, 1))
    v = binary_states(6)
    log_p = model.log_prob(v)
    estimate = model.log_partition()
    assert 1e-3 < estimate.stderr < 0.03
    assert abs(estimate.log_z - exact) < 3 * estimate.stderr
    torch.testing.assert_close(log_p, -rbm.free_energy(v).detach() - estimate.log_z)
    assert abs(float(torch.logsumexp(log_p.double(), 0))) < 3 * estimate.stderr  # p sums to 1 within the error


def test_log_partition_is_seeded_cached_per_parameters_and_leaves_the_global_rng_alone(monkeypatch):
    model = RBM(small_rbm(), ais_num_chains=20, ais_num_betas=20)
    calls = []
    original = model.estimate_log_partition
    monkeypatch.setattr(model, "estimate_log_partition", lambda **kw: calls.append(1) or original(**kw))
    state = torch.get_rng_state()
    first = model.log_partition()
    assert model.log_partition() is first and len(calls) == 1
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        model.rbm.hidden_bias[0] += 0.1
    second = model.log_partition()
    assert len(calls) == 2 and second.log_z != first.log_z
    with torch.no_grad():
        model.rbm.hidden_bias[0] -= 0.1
    assert model.log_partition().log_z == first.log_z  # the same seed: the same estimate for the same parameters
    model.ais_num_betas = 30
    model.log_partition()
    assert len(calls) == 4


def test_test_logs_the_nll_from_the_ais_log_partition(tmp_path):
    rbm = small_rbm()
    model = RBM(rbm, ais_num_chains=500, ais_num_betas=500, data_range=(0, 1))
    x = (torch.rand(40, 6, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    trainer = quiet_trainer(tmp_path)
    trainer.test(model, DataLoader(TensorDataset(x), batch_size=16), verbose=False)
    m = trainer.callback_metrics
    stderr = float(m["test/log_partition_stderr"])
    expected = float(rbm.free_energy(x).detach().mean()) + exact_log_partition(rbm)
    assert 1e-3 < stderr < 0.03
    assert abs(float(m["test/nll"]) - expected) < 3 * stderr + 1e-5
    assert abs(float(m["test/log_partition"]) - exact_log_partition(rbm)) < 3 * stderr
    assert 100 < float(m["test/log_partition_ess"]) <= 500
    torch.testing.assert_close(float(m["test/free_energy"]), float(rbm.free_energy(x).detach().mean()), rtol=1e-5,
                               atol=1e-5)


# -- sampling -----------------------------------------------------------------------------------------------------
def test_samples_match_the_exact_marginals():
    # 20,000 samples after 50 Gibbs steps: Pearson's chi-squared over the 64 states at the 0.1% level on either side
    rbm = small_rbm(scale=0.7)
    p = exact_probabilities(rbm)
    n = 20_000
    assert float(p.min()) * n >= 5
    model = RBM(rbm, sampling_steps=50)  # data_range (-1, 1): samples are -1 / 1
    x = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 6) and set(x.unique().tolist()) == {-1.0, 1.0}
    counts = torch.bincount(state_index((x + 1) / 2), minlength=64).double()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert stats.chi2.ppf(0.001, 63) < chi2 < stats.chi2.ppf(0.999, 63), chi2


def test_sample_options_and_errors():
    model = RBM(BernoulliRBM((1, 3, 3), 4, init_std=1.0), sampling_steps=5)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    state = torch.get_rng_state()
    a, b = model.sample(4, generator=g()), model.sample(4, generator=g(), burn_in=5)
    assert torch.equal(a, b) and a.shape == (4, 1, 3, 3)
    assert not torch.equal(model.sample(4, generator=g(), burn_in=6), a)
    assert torch.equal(torch.get_rng_state(), state)
    model.sample_mean = True
    means = model.sample(4, generator=g())
    assert means.dtype == torch.float32 and float(means.min()) > -1 and float(means.max()) < 1
    assert len(means.unique()) > 2  # grey: p(v = 1 | h) mapped to data_range
    assert model.sample(0).shape == (0, 1, 3, 3)
    with pytest.raises(TypeError, match="unexpected"):
        model.sample(2, labels=torch.zeros(2))
    with pytest.raises(ValueError, match="burn_in"):
        model.sample(2, burn_in=0)


def test_samples_start_from_the_data_pixel_means_once_fitted():
    # W = 10 I, b = c = -5: one Gibbs step copies the start almost surely, so the samples show where chains begin
    rbm = BernoulliRBM(2, 2)
    with torch.no_grad():
        rbm.weight.copy_(10 * torch.eye(2))
        rbm.visible_bias.fill_(-5.0)
        rbm.hidden_bias.fill_(-5.0)
    model = RBM(rbm, sampling_steps=1)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    uniform = model.sample(400, generator=g()).mean(0)  # nothing fitted yet: uniform starts, mean 0 in (-1, 1)
    torch.testing.assert_close(uniform, torch.zeros(2), rtol=0, atol=0.2)
    model.visible_marginals.copy_(torch.tensor([0.0, 1.0]))
    model.marginals_fitted.fill_(True)
    assert model.base_rates() is model.visible_marginals
    torch.testing.assert_close(model.sample(400, generator=g()).mean(0), torch.tensor([-1.0, 1.0]), rtol=0, atol=0.1)


# -- data ---------------------------------------------------------------------------------------------------------
def test_binarization():
    x = torch.tensor([[-1.0, -0.2, 0.2, 1.0]]).repeat(20000, 1)
    stochastic = RBM(BernoulliRBM(4, 2))
    v = stochastic.binarize(x, generator=torch.Generator().manual_seed(0))
    assert set(v.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(v.mean(0), torch.tensor([0.0, 0.4, 0.6, 1.0]), rtol=0, atol=0.01)  # 4 sd of 20,000
    torch.testing.assert_close(stochastic.binarize(x, torch.Generator().manual_seed(0)), v)
    threshold = RBM(BernoulliRBM(4, 2), binarize="threshold")
    torch.testing.assert_close(threshold.binarize(x[:1]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    unit = RBM(BernoulliRBM(4, 2), data_range=(0, 1))
    binary = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert torch.equal(unit.binarize(binary), binary)  # binary data stays as it is
    with pytest.raises(ValueError, match="data_range"):
        stochastic.binarize(torch.full((2, 4), 255.0))
    with pytest.raises(ValueError, match="binarize"):
        RBM(BernoulliRBM(4, 2), binarize="round")
    with pytest.raises(ValueError, match="gibbs_steps"):
        RBM(BernoulliRBM(4, 2), gibbs_steps=0)
    with pytest.raises(TypeError, match="BernoulliRBM"):
        RBM(torch.nn.Linear(4, 2))


def test_the_pixel_means_are_fitted_at_each_epoch_end(tmp_path):
    x = torch.rand(50, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model = RBM(BernoulliRBM((1, 2, 2), 3), binarize="threshold")
    assert model.base_rates() is None
    quiet_trainer(tmp_path, max_epochs=1).fit(model, DataLoader(TensorDataset(x), batch_size=16))
    assert bool(model.marginals_fitted)
    torch.testing.assert_close(model.visible_marginals, (x.flatten(1) > 0).float().mean(0))


def test_a_machine_of_the_wrong_size_fails_before_training_naming_the_option(tmp_path):
    class Images(L.LightningDataModule):
        image_shape = (1, 5, 5)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.zeros(8, 1, 5, 5)), batch_size=4)

    with pytest.raises(ValueError, match=r"--model.rbm.init_args.input_shape \[1,5,5\]"):
        quiet_trainer(tmp_path, max_steps=1).fit(RBM(BernoulliRBM((1, 4, 4), 3)), datamodule=Images())


# -- checkpoints and DDP ------------------------------------------------------------------------------------------
def _fit_pcd(root: Path, epochs: int, ckpt_path: str | None = None) -> tuple[RBM, L.Trainer]:
    L.seed_everything(0)
    model = RBM(BernoulliRBM((1, 3, 3), 5, init_std=0.1), persistent=True, persistent_chains=7)
    x = torch.rand(48, 1, 3, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer = quiet_trainer(root, max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=16, shuffle=True), ckpt_path=ckpt_path)
    return model, trainer


def test_a_resumed_pcd_run_repeats_the_uninterrupted_one(tmp_path):
    straight, _ = _fit_pcd(tmp_path / "straight", 3)
    _, first = _fit_pcd(tmp_path / "first", 1)
    ckpt = tmp_path / "epoch1.ckpt"
    first.save_checkpoint(ckpt)
    resumed, _ = _fit_pcd(tmp_path / "resumed", 3, str(ckpt))
    a, b = straight.state_dict(), resumed.state_dict()
    assert set(a) == {"rbm.weight", "rbm.visible_bias", "rbm.hidden_bias", "visible_marginals", "marginals_fitted",
                      "persistent_chains"}
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    loaded = RBM.load_from_checkpoint(ckpt, rbm=BernoulliRBM((1, 3, 3), 5))
    torch.testing.assert_close(loaded.persistent_chains, torch.load(ckpt, weights_only=True)["state_dict"]
                               ["persistent_chains"], rtol=0, atol=0)


def test_ddp_two_cpu_processes_keep_parameters_identical_and_chains_per_rank(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_rbm.py", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    sys.path.insert(0, str(ROOT / "tests" / "scripts"))
    from ddp_rbm import data

    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    for name in ("rbm.weight", "rbm.visible_bias", "rbm.hidden_bias", "visible_marginals"):
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    assert (a["rbm.weight"] - init["rbm.weight"]).abs().max() > 1e-3  # it trained
    # the pixel means pool both ranks' halves of the data: those of the whole data set
    torch.testing.assert_close(a["visible_marginals"], (data().flatten(1) > 0).float().mean(0))
    for info in ranks:  # each step finds the chains where this rank's previous step left them: DDP never overwrote
        torch.testing.assert_close(info["found"][1:], info["left"][:-1], rtol=0, atol=0)
    assert not torch.equal(ranks[0]["found"][1:], ranks[1]["found"][1:])  # each rank its own chains
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for r in (0, 1):
        saved = ckpt[_RANK_BUFFERS_KEY][r]["persistent_chains"]
        torch.testing.assert_close(saved, ranks[r]["state_dict"]["persistent_chains"], rtol=0, atol=0)
        # resuming on two processes gives each rank its own chains back
        torch.testing.assert_close(ranks[r]["resumed_chains"], saved, rtol=0, atol=0)
    assert ranks[0]["global_step"] == 12 and ranks[0]["resumed_step"] == ranks[1]["resumed_step"] == 18
    assert math.isfinite(ranks[0]["test_nll"]) and ranks[0]["test_nll"] == ranks[1]["test_nll"]
