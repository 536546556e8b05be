"""Train a small StarGAN with `strategy="ddp"` on 2 CPU processes; each rank saves its final state.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_stargan.py OUT_DIR``.
"""

import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import StarGAN
from lightning_gen.nets import StarGANDiscriminator, StarGANGenerator


class SaveParameters(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: StarGAN) -> None:
        info = {
            "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            "global_step": trainer.global_step,
            "player_steps": pl_module.player_steps,
            "world_size": trainer.world_size,
        }
        torch.save(info, self.out / f"rank{trainer.global_rank}.pt")


def main(out: Path) -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    model = StarGAN(StarGANGenerator(3, 1, 4, num_residual_blocks=1), StarGANDiscriminator(3, 16, 1, 4, num_layers=3),
                    n_critic=2)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / "init.pt")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
    data = DataLoader(TensorDataset(images, torch.arange(64) % 3), batch_size=8, shuffle=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[SaveParameters(out)], default_root_dir=str(out),
    )
    trainer.fit(model, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
