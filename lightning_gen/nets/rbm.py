"""The Bernoulli-Bernoulli restricted Boltzmann machine (RBM) and the exact math on its parameters.

``E(v, h) = -b^T v - c^T h - v^T W h`` over binary visible units ``v`` and hidden units ``h``; ``p(v, h) =
exp(-E(v, h)) / Z``. Summing out ``h`` gives the free energy ``F(v) = -b^T v - sum_j softplus(c_j + v^T W_j)``, so
``p(v) = exp(-F(v)) / Z``. Both conditionals factorize: ``p(h_j = 1 | v) = sigmoid(c_j + v^T W_j)`` and ``p(v_i = 1 |
h) = sigmoid(b_i + W_i h)``, which makes block Gibbs sampling (all hidden units, then all visible units) exact.

Here: :class:`BernoulliRBM` (the parameters ``W``, ``b``, ``c``, the energies and the Gibbs sampler), the exact log
partition function of a machine small enough to enumerate (:func:`exact_log_partition`), and its estimate by annealed
importance sampling (:func:`ais_log_partition`, Salakhutdinov & Murray 2008). No Lightning: the training module is
:class:`lightning_gen.RBM`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.nets.mlp import _as_shape
from lightning_gen.noise import rand
from lightning_gen.precision import full_precision

__all__ = [
    "BernoulliRBM", "LogPartitionEstimate", "ais_betas", "ais_log_partition", "base_visible_bias", "binary_states",
    "exact_log_partition",
]


def _bernoulli(probs: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Binary states drawn with ``probs`` (from ``generator`` on its device, then moved), in ``probs``' dtype."""
    return (rand(probs.shape, generator, probs.device, probs.dtype) < probs).to(probs.dtype)


class BernoulliRBM(nn.Module):
    """A restricted Boltzmann machine with binary visible and hidden units: weights ``W`` (``weight``, ``(V, H)``),
    visible biases ``b`` (``visible_bias``) and hidden biases ``c`` (``hidden_bias``).

    Visible vectors may come flat ``(B, V)`` or shaped ``(B, *input_shape)`` (images); methods that return visible
    states return them flat. ``forward`` is the free energy. Initialization follows Hinton's practical guide (2010):
    ``W ~ N(0, init_std^2)`` with ``init_std = 0.01``, zero biases.
    """

    def __init__(self, input_shape: int | Sequence[int] = (1, 28, 28), num_hidden: int = 500,
                 init_std: float = 0.01) -> None:
        """Build the machine for visible vectors of ``input_shape`` (an int for flat vectors) and ``num_hidden``
        hidden units."""
        super().__init__()
        self.input_shape = _as_shape(input_shape)
        if math.prod(self.input_shape) < 1 or num_hidden < 1:
            raise ValueError(f"an RBM needs at least one visible and one hidden unit, got input_shape "
                             f"{self.input_shape} and num_hidden {num_hidden}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.num_visible = math.prod(self.input_shape)
        self.num_hidden = int(num_hidden)
        self.weight = nn.Parameter(torch.randn(self.num_visible, self.num_hidden) * float(init_std))
        self.visible_bias = nn.Parameter(torch.zeros(self.num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(self.num_hidden))

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one visible vector as the data has it (``input_shape``)."""
        return self.input_shape

    def flat(self, v: Tensor) -> Tensor:
        """``v`` as ``(B, V)`` visible vectors; a batch of another size per example raises a ``ValueError``."""
        if v.dim() < 2 or math.prod(v.shape[1:]) != self.num_visible:
            raise ValueError(f"{type(self).__name__} has {self.num_visible} visible units (input_shape "
                             f"{self.input_shape}); got a batch of shape {tuple(v.shape)}")
        return v.flatten(1)

    def hidden_logits(self, v: Tensor) -> Tensor:
        """``c + v^T W`` per example, ``(B, H)``: the logits of ``p(h = 1 | v)`` (float32 under autocast)."""
        return full_precision(self.flat(v) @ self.weight + self.hidden_bias)

    def visible_logits(self, h: Tensor) -> Tensor:
        """``b + W h`` per example, ``(B, V)``: the logits of ``p(v = 1 | h)`` (float32 under autocast)."""
        return full_precision(h @ self.weight.T + self.visible_bias)

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """``E(v, h) = -b^T v - c^T h - v^T W h`` per example, ``(B,)``."""
        v = self.flat(v)
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((v @ self.weight) * h).sum(1)

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v) = -log sum_h exp(-E(v, h)) = -b^T v - sum_j softplus(c_j + v^T W_j)`` per example, ``(B,)``."""
        v = self.flat(v)
        return -full_precision(v @ self.visible_bias) - F.softplus(self.hidden_logits(v)).sum(1)

    def forward(self, v: Tensor) -> Tensor:
        """The free energy :meth:`free_energy` of each visible vector, ``(B,)``."""
        return self.free_energy(v)

    def sample_hidden(self, v: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """``p(h = 1 | v)`` and binary hidden states drawn from it, each ``(B, H)``."""
        probs = torch.sigmoid(self.hidden_logits(v))
        return probs, _bernoulli(probs, generator)

    def sample_visible(self, h: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """``p(v = 1 | h)`` and binary visible states drawn from it, each ``(B, V)``."""
        probs = torch.sigmoid(self.visible_logits(h))
        return probs, _bernoulli(probs, generator)

    def gibbs(self, v: Tensor, steps: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Run ``steps`` >= 1 block Gibbs steps (``h ~ p(h | v)``, then ``v ~ p(v | h)``) from visible states ``v``;
        returns the final binary visible states and the ``p(v = 1 | h)`` they were drawn from, each ``(B, V)``."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        v = self.flat(v)
        probs = v
        for _ in range(int(steps)):
            _, h = self.sample_hidden(v, generator)
            probs, v = self.sample_visible(h, generator)
        return v, probs


def binary_states(n: int, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> Tensor:
    """All ``2**n`` binary vectors of length ``n``, ``(2**n, n)``; row ``k`` holds the bits of ``k`` (unit ``i`` is
    bit ``i``)."""
    k = torch.arange(2**n, device=device)
    return ((k[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


@torch.no_grad()
def exact_log_partition(rbm: BernoulliRBM, max_states: int = 2**20) -> float:
    """``log Z`` exactly, in float64, by enumerating the smaller layer's ``2**min(V, H)`` states and summing the other
    layer out analytically; a machine with more than ``max_states`` such states raises a ``ValueError`` (use
    :func:`ais_log_partition`)."""
    v_units, h_units = rbm.num_visible, rbm.num_hidden
    n = min(v_units, h_units)
    if 2**n > max_states:
        raise ValueError(f"exact_log_partition enumerates 2**min(V, H) = 2**{n} states, more than max_states="
                         f"{max_states}; estimate log Z with ais_log_partition(rbm) instead")
    w, b, c = (p.detach().double() for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    states = binary_states(n, torch.float64, w.device)
    chunks = []
    for start in range(0, states.shape[0], 2**14):
        s = states[start:start + 2**14]
        if v_units <= h_units:  # -F(v) for every v
            chunks.append(s @ b + F.softplus(s @ w + c).sum(1))
        else:  # the same with the roles of the layers swapped: -F(h) for every h
            chunks.append(s @ c + F.softplus(s @ w.T + b).sum(1))
    return float(torch.logsumexp(torch.cat(chunks), 0))


class LogPartitionEstimate(NamedTuple):
    """An AIS estimate of ``log Z``: the value, its standard error (nats), and the runs' log importance weights.

    ``stderr`` is the delta-method error of ``log`` of the mean importance weight, ``std(w) / (mean(w) sqrt(M))``
    over the ``M`` runs. AIS is unbiased for ``Z``, so ``log_z`` is biased low by about ``stderr**2 / 2``; a low
    ``log Z`` makes every ``log p(v) = -F(v) - log Z`` too high (Salakhutdinov & Murray 2008, sec. 3). When a few runs
    carry all the weight (:attr:`effective_sample_size` near 1; ``stderr`` then nears its ceiling of about 1 nat),
    the stated error is itself unreliable: use more temperatures or runs.
    """

    log_z: float
    stderr: float
    log_weights: Tensor

    @property
    def effective_sample_size(self) -> float:
        """``(sum w)^2 / sum w^2`` over the runs: how many of them carry the estimate."""
        w = torch.exp(self.log_weights - self.log_weights.max())
        return float(w.sum() ** 2 / (w**2).sum())


def ais_betas(num_betas: int = 14500) -> Tensor:
    """``num_betas`` inverse temperatures rising from 0 to 1 (float64), spaced as in Salakhutdinov & Murray (2008):
    after 0, a fraction 500/14500 of the rest evenly in (0, 0.5], 4000/14500 in (0.5, 0.9] and the others in
    (0.9, 1] (their 14,500 temperatures)."""
    if num_betas < 2:
        raise ValueError(f"num_betas must be >= 2 (0 and 1), got {num_betas}")
    n = num_betas - 1
    first = round(n * 500 / 14500)
    second = round(n * 4000 / 14500)
    last = n - first - second
    return torch.cat([torch.zeros(1, dtype=torch.float64),
                      torch.linspace(0.0, 0.5, first + 1, dtype=torch.float64)[1:],
                      torch.linspace(0.5, 0.9, second + 1, dtype=torch.float64)[1:],
                      torch.linspace(0.9, 1.0, last + 1, dtype=torch.float64)[1:]])


def base_visible_bias(base_rates: Optional[Tensor], num_visible: int, like: Tensor, eps: float = 1e-3) -> Tensor:
    """Visible biases of the base-rate model: ``logit`` of ``base_rates`` clamped to ``[eps, 1 - eps]`` (zeros, i.e.
    uniform visible units, when ``None``)."""
    if base_rates is None:
        return like.new_zeros(num_visible)
    rates = base_rates.detach().to(device=like.device, dtype=like.dtype).reshape(-1)
    if rates.numel() != num_visible:
        raise ValueError(f"base_rates must hold one probability per visible unit ({num_visible}), got {rates.numel()}")
    return torch.logit(rates.clamp(eps, 1.0 - eps))


@torch.no_grad()
def ais_log_partition(
    rbm: BernoulliRBM,
    num_chains: int = 100,
    num_betas: int = 14500,
    generator: Optional[torch.Generator] = None,
    base_rates: Optional[Tensor] = None,
) -> LogPartitionEstimate:
    """Estimate ``log Z`` of ``rbm`` by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).

    ``num_chains`` independent runs anneal from the base-rate model ``p_0(v) = prod_i Bernoulli(v_i; base_rates_i)``
    (no weights; ``log Z_0 = sum_i softplus(b0_i) + H log 2`` with ``b0 = logit(base_rates)``; uniform when ``None``)
    to the RBM through ``p*_beta(v) = exp((1 - beta) b0^T v + beta b^T v) prod_j (1 + exp(beta (c_j + v^T W_j)))``
    at the inverse temperatures :func:`ais_betas`, each leaving ``p_beta`` invariant by one block Gibbs step. The
    paper's settings are 100 runs, 14,500 temperatures and the data's pixel means as ``base_rates``. All noise comes
    from ``generator`` (on its device) when given; the log weights add up in float64.
    """
    if num_chains < 2:
        raise ValueError(f"num_chains must be >= 2 (the standard error needs two runs), got {num_chains}")
    w, b, c = rbm.weight.detach(), rbm.visible_bias.detach(), rbm.hidden_bias.detach()
    b0 = base_visible_bias(base_rates, rbm.num_visible, b)
    betas = ais_betas(num_betas).tolist()
    v = _bernoulli(torch.sigmoid(b0).expand(num_chains, -1).contiguous(), generator)
    log_w = torch.zeros(num_chains, dtype=torch.float64, device=w.device)
    db = (b - b0).double()
    for k in range(1, len(betas)):
        previous, beta = betas[k - 1], betas[k]
        pre = v @ w + c
        pre64 = pre.double()
        # log p*_k(v_{k-1}) - log p*_{k-1}(v_{k-1}), in float64 (the two sums nearly cancel)
        log_w += (beta - previous) * (v.double() @ db) + (F.softplus(beta * pre64) - F.softplus(previous * pre64)).sum(1)
        if k < len(betas) - 1:  # T_k: one Gibbs step that leaves p_k invariant
            h = _bernoulli(torch.sigmoid(beta * pre), generator)
            v = _bernoulli(torch.sigmoid((1.0 - beta) * b0 + beta * (h @ w.T + b)), generator)
    log_z0 = float(F.softplus(b0.double()).sum()) + rbm.num_hidden * math.log(2.0)
    top = log_w.max()
    ratios = torch.exp(log_w - top)
    mean = ratios.mean()
    stderr = float(ratios.std() / (mean * math.sqrt(num_chains)))
    return LogPartitionEstimate(log_z0 + float(top + torch.log(mean)), stderr, log_w.cpu())
