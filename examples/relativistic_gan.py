"""Subclass the GAN module to change its loss: a relativistic average GAN (Jolicoeur-Martineau 2018).

    python examples/relativistic_gan.py --max-steps 500

The same class works from YAML: `class_path: relativistic_gan.RelativisticGAN` with this folder on PYTHONPATH.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gen import GAN
from lightning_gen.callbacks import ToyMetricsCallback
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.nets import MLPDiscriminator, MLPGenerator


class RelativisticGAN(GAN):
    """RaGAN: each player asks whether real data looks more realistic than fake data on average."""

    def critic_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """-E[log sigmoid(D(x) - E D(G(z)))] - E[log sigmoid(E D(x) - D(G(z)))]."""
        r, f = self.discriminator(real), self.discriminator(fake)
        return F.softplus(-(r - f.mean())).mean() + F.softplus(f - r.mean()).mean(), {}

    def generator_loss(self, fake: Tensor) -> Tensor:
        """The same game with the roles swapped, scoring the fakes against the running step's real batch."""
        f, r = self.discriminator(fake), self.discriminator(self.current_real)
        return F.softplus(-(f - r.mean())).mean() + F.softplus(r - f.mean()).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=500)
    args = parser.parse_args()
    L.seed_everything(0)
    model = RelativisticGAN(MLPGenerator(2, 2, (128, 128)), MLPDiscriminator(2, (128, 128)))
    data = ToyGaussiansDataModule(mixture="ring", train_size=32_000)
    metrics = ToyMetricsCallback()
    trainer = L.Trainer(max_steps=args.max_steps, callbacks=[metrics], logger=False, enable_checkpointing=False)
    trainer.fit(model, data)
    trainer.validate(model, data)
    print("toy metrics:", metrics.last)


if __name__ == "__main__":
    main()
