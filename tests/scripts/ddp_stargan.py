"""Train a small StarGAN with `strategy="ddp"` on 2 CPU processes; each rank saves its final state.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_stargan.py OUT_DIR``.
"""

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ddp_common import SaveFinalState, ddp_trainer, run, save_initial_state

from lightning_gen import StarGAN
from lightning_gen.nets import StarGANDiscriminator, StarGANGenerator


def main(out: Path) -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    model = StarGAN(StarGANGenerator(3, 1, 4, num_residual_blocks=1), StarGANDiscriminator(3, 16, 1, 4, num_layers=3),
                    n_critic=2)
    save_initial_state(model, out)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
    data = DataLoader(TensorDataset(images, torch.arange(64) % 3), batch_size=8, shuffle=True)
    trainer = ddp_trainer(out, [SaveFinalState(out, "player_steps")], max_steps=3)
    trainer.fit(model, data)


if __name__ == "__main__":
    run(main)
