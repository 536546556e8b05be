"""Fit a ScoreModel with an EMA net by DSM and by SSM with `strategy="ddp"` on 2 CPU processes; each rank saves
the initial and final weights of both and their optimizer steps.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_score.py OUT_DIR``.
The tests run its ``main`` with the other likelihood families' in one launch: ddp_likelihood_families.py
(its ``score/`` subfolder).
"""

from pathlib import Path

import lightning as L
import torch
from ddp_common import ddp_trainer, run, state_copy
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import ScoreModel
from lightning_gen.nets import MLPDenoiser


def data() -> torch.Tensor:
    """96 correlated 2-D points, the same on every rank."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(96, 2, generator=g) @ torch.tensor([[1.0, 0.5], [0.0, 0.4]])


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info = {}
    for objective in ("dsm", "ssm"):
        L.seed_everything(5)
        model = ScoreModel(MLPDenoiser(2, (16,), 8), sigma_max=2.0, num_levels=4, objective=objective,
                           ema_decay=0.9, steps_per_level=2)
        info[f"{objective}_init"] = state_copy(model)
        trainer = ddp_trainer(out, max_epochs=2)
        trainer.fit(model, DataLoader(TensorDataset(data()), batch_size=16, shuffle=True))
        info[objective] = state_copy(model)
        info[f"{objective}_steps"] = trainer.global_step
    torch.save(info, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    run(main)
