"""Train a toy WGAN-GP (EMA generator, historical averaging) with `strategy="ddp"` on 2 CPU processes; each rank saves its final state.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_gan.py OUT_DIR [PRECISION]``
(``PRECISION``: a Trainer precision such as ``bf16-mixed``; default 32).
"""

from functools import partial
from pathlib import Path

import lightning as L
import torch

from ddp_common import SaveFinalState, ddp_trainer, run, save_initial_state

from lightning_gen import GAN
from lightning_gen.callbacks import ToyMetricsCallback
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPDiscriminator, MLPGenerator


class SaveParameters(SaveFinalState):
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: GAN, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.first_noise = pl_module.noise(4).cpu()

    def extra(self, trainer: L.Trainer, pl_module: GAN) -> dict:
        return {
            "find_unused_parameters": trainer.strategy._ddp_kwargs.get("find_unused_parameters", False),
            "strategy": type(trainer.strategy).__name__,
            "first_noise": self.first_noise,
        }


def main(out: Path, precision: str = "32-true") -> None:
    L.seed_everything(7)
    torch.set_num_threads(1)
    model = GAN(
        MLPGenerator(latent_dim=2, output_shape=2, hidden_dims=(16, 16)),
        MLPDiscriminator(input_shape=2, hidden_dims=(16, 16)),
        loss="wasserstein",
        regularizer="gradient_penalty",
        n_critic=2,
        ema_decay=0.9,  # the EMA generator and the historical averages must stay identical on all ranks too
        historical_averaging_weight=1e-3,
        generator_optimizer=partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9)),
        discriminator_optimizer=partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9)),
    )
    save_initial_state(model, out)
    data = ToyGaussiansDataModule(mixture="ring", train_size=1024, val_size=256, batch_size=64)
    metrics = ToyMetricsCallback(num_samples=2501)  # odd: the ranks' shares differ
    trainer = ddp_trainer(
        out, [SaveParameters(out, "critic_steps"), metrics], precision=precision, max_steps=12, limit_val_batches=2,
        check_val_every_n_epoch=1000,  # no validation while fitting; trainer.validate below
    )
    trainer.fit(model, data)
    (result,) = trainer.validate(model, data)
    torch.save({"logged": result, "callback": metrics.last}, out / f"metrics_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    run(main)
