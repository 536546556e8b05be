"""A new adversarial family in one file: the adversarial autoencoder (Makhzani et al. 2016) on AdversarialModule.

    python examples/adversarial_autoencoder.py            # 2,000 steps; --max-steps N to change

Three players share the plumbing of :class:`lightning_gen.AdversarialModule` (DDP averaging, accumulation,
clipping, one loss scaler each under ``16-mixed``, counters, checkpoints): the autoencoder (encoder + decoder)
minimizes the reconstruction error, a discriminator tells prior codes ``z ~ N(0, I)`` from the encoder's codes, and
the encoder, as a generator of codes, fools it. This file holds only the game: its losses and the order of its steps.
The same class works from YAML (``class_path: adversarial_autoencoder.AdversarialAutoencoder`` with this folder on
``PYTHONPATH``), under ``--trainer.precision 16-mixed`` and ``--trainer.strategy ddp`` alike.

What to expect on the 8-mode ring at the defaults (2,000 steps, 2-D codes; 25 s on one CPU thread): the autoencoder
reconstructs held-out points closely (MSE below 0.02; measured 0.0021 with seed 0, 0.0075 with seed 1), and decoded
prior samples spread over the whole ring (reverse KL between 0.1 and 1, where 0 means all eight modes evenly and
ln 8 = 2.08 one mode; measured 0.43 and 0.59). But they lie on a continuous curve through and between the modes, so
almost none fall within the toy protocol's 3-std (0.03) radius of a mode: ``modes_covered`` stays at 0 or 1 and
``hq_percent`` below 5 (measured 0 and 0.56, 0 and 0.76). A continuous prior decodes onto a continuous curve; this
file shows the API of a new family, not a mode-covering recipe. The script prints these expectations next to what
it got.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen import AdversarialModule
from lightning_gen.callbacks import ToyMetricsCallback
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.losses import get_adversarial_loss
from lightning_gen.modules import batch_data, eval_mode
from lightning_gen.modules.base import reject_unexpected_arguments
from lightning_gen.nets import MLPDecoder, MLPDiscriminator, MLPEncoder
from lightning_gen.noise import randn
from lightning_gen.precision import full_precision


class AdversarialAutoencoder(AdversarialModule):
    """Adversarial autoencoder: reconstruction, then the code discriminator's step, then the encoder's step."""

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, discriminator: nn.Module, lr: float = 1e-3, **plumbing: Any
    ) -> None:
        """Build the game from an encoder ``x -> z``, a decoder ``z -> x`` (with ``latent_dim``) and a critic on codes."""
        super().__init__(**plumbing)
        self.save_init_hyperparameters(["encoder", "decoder", "discriminator"])
        self.encoder, self.decoder, self.discriminator = encoder, decoder, discriminator
        self.loss = get_adversarial_loss("nonsaturating")
        adam = partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.9))
        self.add_player("autoencoder", [encoder, decoder], adam, counts_global_step=True)
        self.add_player("discriminator", [discriminator], adam)
        self.add_player("encoder", [encoder], adam)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Reconstruction phase, then the regularization phase (discriminator, then encoder), as in sec. 2."""
        x = batch_data(batch)
        reconstruction = F.mse_loss(full_precision(self.decoder(self.encoder(x))), x)
        self.player_backward("autoencoder", reconstruction)
        self.player_step("autoencoder")

        codes = self.encoder(x).detach()
        prior = randn(codes.shape, device=self.device)
        loss_d = self.loss.discriminator_loss(self.discriminator(prior), self.discriminator(codes))
        self.player_backward("discriminator", loss_d)
        self.player_step("discriminator")

        with self.frozen("discriminator"):
            loss_e = self.loss.generator_loss(self.discriminator(self.encoder(x)))
            self.player_backward("encoder", loss_e)
        self.player_step("encoder")

        if self.should_log(batch_idx):
            self.log_dict({"train/reconstruction": reconstruction.detach(), "train/loss_dis": loss_d.detach(),
                           "train/loss_enc": loss_e.detach(), **self.plumbing_logs()}, batch_size=x.shape[0])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Held-out reconstruction error, ``val/reconstruction`` (the toy metrics come from the callback)."""
        x = batch_data(batch)
        with eval_mode(self.encoder, self.decoder):
            error = F.mse_loss(full_precision(self.decoder(self.encoder(x))), x)
        self.log("val/reconstruction", error, batch_size=x.shape[0], sync_dist=True)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None, **condition: Any) -> Tensor:
        """Decode codes drawn from the prior N(0, I)."""
        reject_unexpected_arguments(self, condition)
        z = randn((num_samples, self.decoder.latent_dim), generator, self.device)
        with eval_mode(self.decoder):
            return full_precision(self.decoder(z))


# What the defaults give (see the module docstring): (name, low, high) of each figure the script prints.
EXPECTED = (("reconstruction MSE", 0.0, 0.02), ("reverse KL", 0.1, 1.0), ("modes_covered", 0, 1),
            ("hq_percent", 0.0, 5.0))


def report(figures: dict[str, float], max_steps: int) -> str:
    """The figures next to what the defaults should give, and whether each is in its expected range."""
    lines = [f"after {max_steps} steps (the expected ranges are those of the default 2000 steps):"]
    for name, low, high in EXPECTED:
        verdict = "ok" if low <= figures[name] <= high else "OUTSIDE"
        lines.append(f"  {name:<20} {figures[name]:<8.4g}  expected {low:g} to {high:g}   {verdict}")
    return "\n".join(lines)


def main() -> None:
    """Train on the 8-mode ring and print the reconstruction error and toy metrics of decoded prior samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    L.seed_everything(args.seed)
    model = AdversarialAutoencoder(MLPEncoder(2, 2, (128, 128), activation="relu"),
                                   MLPDecoder(2, 2, (128, 128), activation="relu"), MLPDiscriminator(2, (128, 128)))
    metrics = ToyMetricsCallback()
    trainer = L.Trainer(max_steps=args.max_steps, precision=args.precision, callbacks=[metrics], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    data = ToyGaussiansDataModule(mixture="ring", train_size=32_000, batch_size=256)
    trainer.fit(model, data)
    results = trainer.validate(model, data)[0]
    print("steps:", model.player_steps)
    figures = {"reconstruction MSE": results["val/reconstruction"], "reverse KL": metrics.last["reverse_kl"],
               "modes_covered": metrics.last["modes_covered"], "hq_percent": metrics.last["hq_percent"]}
    print(report(figures, args.max_steps))


if __name__ == "__main__":
    main()
