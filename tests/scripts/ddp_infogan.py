"""Train a toy InfoGAN (8-way and 1 continuous code) with `strategy="ddp"` on 2 CPU processes; each rank saves its
final state. Run as a script (DDP re-launches it for rank 1): ``python tests/scripts/ddp_infogan.py OUT_DIR``."""

from functools import partial
from pathlib import Path

import lightning as L
import torch

from ddp_common import SaveFinalState, ddp_trainer, run, save_initial_state

from lightning_gen import InfoGAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPGenerator, MLPInfoGANDiscriminator


class SaveState(SaveFinalState):
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: InfoGAN, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            pl_module.noise(16)
            self.first_codes = pl_module.current_codes[0].cpu()

    def extra(self, trainer: L.Trainer, pl_module: InfoGAN) -> dict:
        return {"first_codes": self.first_codes}


def main(out: Path) -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    model = InfoGAN(MLPGenerator(2 + 8 + 1, 2, (16, 16)), MLPInfoGANDiscriminator(2, 8, 1, (16, 16), (8,)),
                    generator_optimizer=adam, discriminator_optimizer=adam)
    save_initial_state(model, out)
    trainer = ddp_trainer(out, [SaveState(out)], max_steps=8)
    trainer.fit(model, ToyGaussiansDataModule(mixture="ring", train_size=1024, val_size=64, batch_size=64))


if __name__ == "__main__":
    run(main)
