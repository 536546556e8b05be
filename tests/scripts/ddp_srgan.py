"""Train a tiny SRGAN (x2 on 16 px blob images) with `strategy="ddp"` on 2 CPU processes; each rank saves its state.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_srgan.py OUT_DIR``.
"""

import os
import sys
from pathlib import Path

import lightning as L
import torch

from lightning_gen import SRGAN
from lightning_gen.data import SuperResolutionDataModule
from lightning_gen.nets import SRGANDiscriminator, SRResNetGenerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics_fakes import BlobImages  # noqa: E402


class SaveParameters(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: SRGAN) -> None:
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
    model = SRGAN(SRResNetGenerator(1, channels=4, num_blocks=1, scale=2),
                  SRGANDiscriminator(1, base_channels=4, num_stages=2, hidden_dim=8),
                  adversarial_weight=0.1)  # a larger weight, so the adversarial gradients matter in 6 steps
    if os.environ.get("LOCAL_RANK", "0") == "0":
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / "init.pt")
    data = SuperResolutionDataModule(BlobImages(train_size=256, test_size=32, batch_size=16), scale=2)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[SaveParameters(out)], default_root_dir=str(out),
    )
    trainer.fit(model, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
