"""Train a toy BiGAN with `strategy="ddp"` on 2 CPU processes; each rank saves its final state.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_bigan.py OUT_DIR``.
"""

from functools import partial
from pathlib import Path

import lightning as L
import torch

from ddp_common import SaveFinalState, ddp_trainer, run, save_initial_state

from lightning_gen import BiGAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import JointMLPDiscriminator, MLPEncoder, MLPGenerator


def main(out: Path) -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    model = BiGAN(MLPGenerator(2, 2, (16, 16)), MLPEncoder(2, 2, (16, 16)), JointMLPDiscriminator(2, 2, (16, 16)),
                  generator_optimizer=adam, discriminator_optimizer=adam)
    save_initial_state(model, out)
    data = ToyGaussiansDataModule(mixture="ring", train_size=1024, val_size=128, batch_size=64)
    trainer = ddp_trainer(out, [SaveFinalState(out, "player_steps")], max_steps=6)
    trainer.fit(model, data)


if __name__ == "__main__":
    run(main)
