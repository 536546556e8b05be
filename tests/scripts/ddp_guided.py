"""Train a GuidedDDPM with `strategy="ddp"` on 2 CPU processes; each rank saves its weights, the fraction of its
training labels replaced by the null label per step, and samples drawn from a seeded generator after training.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_guided.py OUT_DIR``.
The tests run its ``main`` with the other likelihood families' in one launch: ddp_likelihood_families.py
(its ``guided/`` subfolder).
"""

from functools import partial
from pathlib import Path

import lightning as L
import torch
from ddp_common import ddp_trainer, run, save_initial_state, state_copy
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import GuidedDDPM
from lightning_gen.nets import MLPDenoiser


class RecordingDenoiser(MLPDenoiser):
    """An MLP denoiser that records which of its labels are the null label."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor = None) -> torch.Tensor:
        if self.training:
            self.dropped.append(labels == self.num_classes)
        return super().forward(x, t, labels)


def data() -> TensorDataset:
    """96 points of 3 classes (Gaussians at three corners), the same on every rank."""
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(96) % 3
    centers = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])
    return TensorDataset(centers[labels] + 0.1 * torch.randn(96, 2, generator=g), labels)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(7)
    net = RecordingDenoiser(2, (16, 16), 8, num_classes=3)
    net.dropped = []
    # a larger step than the default, so six steps move every weight visibly
    model = GuidedDDPM(net, num_timesteps=50, label_dropout=0.1, guidance_scale=2.0, ema_decay=0.9,
                       optimizer=partial(torch.optim.Adam, lr=1e-2))
    save_initial_state(model, out)
    trainer = ddp_trainer(out, max_steps=6)
    trainer.fit(model, DataLoader(data(), batch_size=16, shuffle=True))
    info = {"state_dict": state_copy(model),
            "global_step": trainer.global_step, "dropped": torch.cat(net.dropped),
            "samples": model.sample(8, generator=torch.Generator().manual_seed(0))}
    torch.save(info, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    run(main)
