"""Two CPU processes under DDP: fit a toy GAN (n_critic 2, accumulation 2) with periodic checkpoints, or resume one.

Run as a script (DDP re-launches it for rank 1): ``python tests/scripts/ddp_resume.py OUT_DIR MAX_STEPS [CKPT]``.
Each rank saves its final state dict and optimizer states to ``OUT_DIR/rank{r}.pt``.
"""

import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_gen import GAN
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPDiscriminator, MLPGenerator


class SaveFinalState(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: GAN) -> None:
        torch.save({"state_dict": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                    "optimizers": [o.state_dict() for o in trainer.optimizers], "global_step": trainer.global_step,
                    "epoch": trainer.current_epoch}, self.out / f"rank{trainer.global_rank}.pt")


def main(out: Path, max_steps: int, ckpt_path: str | None) -> None:
    L.seed_everything(5)
    torch.set_num_threads(1)
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9))
    model = GAN(MLPGenerator(2, 2, (16, 16)), MLPDiscriminator(2, (16, 16)), loss="wasserstein",
                regularizer="gradient_penalty", n_critic=2, accumulate_grad_batches=2, ema_decay=0.9,
                generator_optimizer=adam, discriminator_optimizer=adam)
    data = ToyGaussiansDataModule(mixture="ring", train_size=30 * 32, val_size=64, batch_size=32)  # 15 per rank
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=max_steps, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(out), callbacks=[
                            ModelCheckpoint(dirpath=out / "ckpt", save_top_k=-1, every_n_train_steps=3),
                            SaveFinalState(out)])
    trainer.fit(model, data, ckpt_path=ckpt_path)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
