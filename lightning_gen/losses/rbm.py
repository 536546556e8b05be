"""The contrastive-divergence surrogate loss of restricted Boltzmann machines as a pure function."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["contrastive_divergence_loss"]


def contrastive_divergence_loss(free_energy: Callable[[Tensor], Tensor], data: Tensor, model_samples: Tensor) -> Tensor:
    """``mean F(data) - mean F(model_samples)``, the samples held constant: a surrogate whose gradient is minus the
    (persistent) contrastive-divergence estimate of the log-likelihood gradient.

    ``d log p(v) / d theta = -dF(v)/d theta + E_model[dF/d theta]``; CD-k (Hinton 2002) takes the model expectation
    over samples after ``k`` Gibbs steps from the data, PCD (Tieleman 2008) over persistent chains. Minimizing this
    loss therefore ascends that estimate. The samples are detached, so no gradient flows through the chain. The value
    is a free-energy gap, not a likelihood: it says little about training progress.
    """
    return free_energy(data).mean() - free_energy(model_samples.detach()).mean()
