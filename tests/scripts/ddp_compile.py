"""Fit a toy WGAN-GP (2 critic steps per generator step) and a VAE with `strategy="ddp"` on 2 CPU processes, eager and
with ``compile={"backend": "aot_eager"}``; each rank saves the final weights, whether the nets were compiled and the
TorchDynamo counts after every training batch.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_compile.py OUT_DIR``.
"""

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ddp_common import ddp_trainer, run

from lightning_gen import VAE, WGANGP
from lightning_gen.modules.compile import compile_counts, is_compiled
from lightning_gen.nets import MLPDecoder, MLPDiscriminator, MLPEncoder, MLPGenerator


class CountCompiles(L.Callback):
    """The process's TorchDynamo counts after each training batch."""

    def __init__(self) -> None:
        self.counts: list[dict[str, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counts.append(compile_counts())


def data() -> torch.Tensor:
    """128 points of a ring-like 2-D set, the same on every rank."""
    g = torch.Generator().manual_seed(3)
    angle = torch.rand(128, generator=g) * 6.2832
    return torch.stack([angle.cos(), angle.sin()], 1) * 2 + 0.1 * torch.randn(128, 2, generator=g)


def models(compile: Any) -> dict[str, L.LightningModule]:
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.9))
    torch.manual_seed(0)
    return {
        "gan": WGANGP(MLPGenerator(2, 2, (16,)), MLPDiscriminator(2, (16,)), n_critic=2, generator_optimizer=adam,
                      discriminator_optimizer=adam, compile=compile),
        "vae": VAE(MLPEncoder(2, 4, (16,)), MLPDecoder(2, 2, (16,)), likelihood="gaussian", data_range=None,
                   compile=compile),
    }


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info: dict[str, Any] = {}
    for mode, option in (("eager", False), ("compiled", {"backend": "aot_eager"})):
        for name, model in models(option).items():
            L.seed_everything(5, verbose=False)
            counter = CountCompiles()
            trainer = ddp_trainer(out, [counter], max_steps=4)
            # 64 points per rank, 16 a batch: 4 batches per epoch (the GAN's 4 generator steps take 2 epochs)
            trainer.fit(model, DataLoader(TensorDataset(data()), batch_size=16, shuffle=True))
            info[f"{mode}/{name}"] = {
                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "compiled": [is_compiled(net) for net in model.nets_to_compile()],
                "counts": counter.counts,
            }
    torch.save(info, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    run(main)
