"""Train a toy InfoGAN (8-way and 1 continuous code) with `strategy="ddp"` on 2 CPU processes; each rank saves its
final state. Run as a script (DDP re-launches it for rank 1): ``python tests/scripts/ddp_infogan.py OUT_DIR``."""

import os
import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lightning_gen import InfoGAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPGenerator, MLPInfoGANDiscriminator


class SaveState(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: InfoGAN, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            pl_module.noise(16)
            self.first_codes = pl_module.current_codes[0].cpu()

    def on_train_end(self, trainer: L.Trainer, pl_module: InfoGAN) -> None:
        torch.save({"state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                    "global_step": trainer.global_step, "world_size": trainer.world_size,
                    "first_codes": self.first_codes}, self.out / f"rank{trainer.global_rank}.pt")


def main(out: Path) -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    model = InfoGAN(MLPGenerator(2 + 8 + 1, 2, (16, 16)), MLPInfoGANDiscriminator(2, 8, 1, (16, 16), (8,)),
                    generator_optimizer=adam, discriminator_optimizer=adam)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / "init.pt")
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=8, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[SaveState(out)], default_root_dir=str(out),
    )
    trainer.fit(model, ToyGaussiansDataModule(mixture="ring", train_size=1024, val_size=64, batch_size=64))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
