"""Fit a Glow-style RealNVP (ActNorm and 1x1 convolutions) with `strategy="ddp"` on 2 CPU processes for one step
with SGD(lr=0), so that each rank's final parameters are those ActNorm's data-dependent init gave them; each rank
saves its final state (``rank<r>.pt``).

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_actnorm.py OUT_DIR``.
The tests run its ``main`` with the other likelihood families' in one launch: ddp_likelihood_families.py
(its ``actnorm/`` subfolder).
"""

from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from ddp_common import SaveFinalState, ddp_trainer, run

from lightning_gen import RealNVP
from lightning_gen.nets import ImageRealNVP


def data() -> torch.Tensor:
    """8 images 1 x 4 x 4, the same on every rank; the even ones (rank 0's share under the DistributedSampler)
    have mean about 3 and std 5, the odd ones (rank 1's) mean about 0 and std 1."""
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    x[0::2] = 5 * x[0::2] + 3
    return x


def model() -> RealNVP:
    """The same flow on every rank (seed 5); SGD(lr=0) keeps every parameter where its init left it."""
    torch.manual_seed(5)
    flow = ImageRealNVP(1, 4, num_scales=1, hidden_channels=4, num_blocks=1, actnorm=True, permutation="conv1x1",
                        layout="glow", steps_per_scale=2)
    return RealNVP(flow, optimizer=partial(torch.optim.SGD, lr=0.0))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    trainer = ddp_trainer(out, [SaveFinalState(out)], max_steps=1)
    trainer.fit(model(), DataLoader(TensorDataset(data()), batch_size=4))  # 4 per rank: all 8 in the one step


if __name__ == "__main__":
    run(main)
