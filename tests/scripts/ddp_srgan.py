"""Train a tiny SRGAN (x2 on 16 px blob images) with `strategy="ddp"` on 2 CPU processes; each rank saves its state.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_srgan.py OUT_DIR``.
"""

import sys
from pathlib import Path

import lightning as L
import torch

from lightning_gen import SRGAN
from lightning_gen.data import SuperResolutionDataModule
from lightning_gen.nets import SRGANDiscriminator, SRResNetGenerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import SaveFinalState, ddp_trainer, run, save_initial_state  # noqa: E402
from metrics_fakes import BlobImages  # noqa: E402


def main(out: Path) -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    model = SRGAN(SRResNetGenerator(1, channels=4, num_blocks=1, scale=2),
                  SRGANDiscriminator(1, base_channels=4, num_stages=2, hidden_dim=8),
                  adversarial_weight=0.1)  # a larger weight, so the adversarial gradients matter in 6 steps
    save_initial_state(model, out)
    data = SuperResolutionDataModule(BlobImages(train_size=256, test_size=32, batch_size=16), scale=2)
    trainer = ddp_trainer(out, [SaveFinalState(out, "player_steps")], max_steps=6)
    trainer.fit(model, data)


if __name__ == "__main__":
    run(main)
