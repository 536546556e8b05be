"""Fit an Autoencoder (frozen encoder: SGD with lr 0), a VAE, a RealNVP and a DDPM with an EMA denoiser with
`strategy="ddp"` on 2 CPU processes; each rank saves the autoencoder's fitted code Gaussian and the other models'
final weights, and whether a NaN loss on one rank alone stopped both ranks.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_likelihood.py OUT_DIR``.
The tests run its ``main`` with the other likelihood families' in one launch: ddp_likelihood_families.py
(its ``likelihood/`` subfolder).
"""

from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ddp_common import ddp_trainer, run

from lightning_gen import DDPM, VAE, Autoencoder, RealNVP
from lightning_gen.nets import MLPDecoder, MLPDenoiser, MLPEncoder, VectorRealNVP


def data() -> torch.Tensor:
    """96 correlated 3-D points, the same on every rank."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(96, 3, generator=g) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.4], [0.0, 0.0, 0.3]])


def autoencoder() -> Autoencoder:
    """A linear autoencoder built from seed 11 (the test rebuilds the same encoder)."""
    torch.manual_seed(11)
    return Autoencoder(MLPEncoder(3, 2, ()), MLPDecoder(2, 3, ()), data_range=None,
                       optimizer=partial(torch.optim.SGD, lr=0.0))


def trainer(out: Path) -> L.Trainer:
    return ddp_trainer(out, max_epochs=2)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    loader = DataLoader(TensorDataset(data()), batch_size=16)  # Lightning adds a DistributedSampler: 48 per rank
    ae = autoencoder()
    t = trainer(out)
    t.fit(ae, loader)
    info = {"latent_mean": ae.latent_mean, "latent_scale_tril": ae.latent_scale_tril}
    L.seed_everything(5)
    models = {
        "vae": VAE(MLPEncoder(3, 4, (8,)), MLPDecoder(2, 3, (8,)), likelihood="gaussian", data_range=None),
        "realnvp": RealNVP(VectorRealNVP(3, 2, (8,))),
        "ddpm": DDPM(MLPDenoiser(3, (16,), 8), num_timesteps=25, ema_decay=0.9),
    }
    for name, model in models.items():
        trainer(out).fit(model, DataLoader(TensorDataset(data()), batch_size=16, shuffle=True))
        info[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # a NaN in one rank's share of the data only (sample 1): both ranks must stop with the error, neither hang nor crash
    poisoned = data().clone()
    poisoned[1, 0] = float("nan")
    info["stopped"] = False
    try:
        trainer(out).fit(VAE(MLPEncoder(3, 4, ()), MLPDecoder(2, 3, ()), likelihood="gaussian", data_range=None),
                         DataLoader(TensorDataset(poisoned), batch_size=16))
    except FloatingPointError:
        info["stopped"] = True
    torch.save(info, out / f"rank{t.global_rank}.pt")


if __name__ == "__main__":
    run(main)
