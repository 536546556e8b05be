"""Train a PCD RBM with `strategy="ddp"` on 2 CPU processes, checkpoint it, resume it and test it; each rank saves
its state, its chains as each training step found and left them, the chains it got back on resuming, and the test
NLL.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_rbm.py OUT_DIR``.
"""

from pathlib import Path

import lightning as L
import torch
from ddp_common import ddp_trainer, run, save_initial_state, state_copy
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import RBM
from lightning_gen.nets import BernoulliRBM


def data() -> torch.Tensor:
    """96 grey 4 x 4 images in [-1, 1], the same on every rank."""
    return torch.rand(96, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1


class RecordingRBM(RBM):
    """An RBM that records its persistent chains as each training step finds them and as it leaves them."""

    def training_loss(self, data: torch.Tensor) -> tuple:
        if not hasattr(self, "found"):
            self.found, self.left = [], []
        self.found.append(self.persistent_chains.clone())  # inside DDP's forward: after any buffer broadcast
        out = super().training_loss(data)
        self.left.append(self.persistent_chains.clone())
        return out


def model() -> RecordingRBM:
    return RecordingRBM(BernoulliRBM((1, 4, 4), 6, init_std=0.1), persistent=True, persistent_chains=5,
                        binarize="threshold", ais_num_chains=10, ais_num_betas=20)


class ChainsAtStart(L.Callback):
    """Record the persistent chains a fit starts from."""

    def on_train_start(self, trainer: L.Trainer, pl_module: RBM) -> None:
        self.chains = pl_module.persistent_chains.detach().clone()


def trainer(out: Path, epochs: int, callbacks: list) -> L.Trainer:
    return ddp_trainer(out, callbacks, max_epochs=epochs)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(7)
    rbm = model()
    save_initial_state(rbm, out)
    loader = lambda: DataLoader(TensorDataset(data()), batch_size=8, shuffle=True)  # noqa: E731
    first = trainer(out, 2, [])
    first.fit(rbm, loader())
    first.save_checkpoint(out / "last.ckpt")  # collective: every rank's chains
    info = {"state_dict": state_copy(rbm),
            "global_step": first.global_step, "found": torch.stack(rbm.found), "left": torch.stack(rbm.left)}
    start = ChainsAtStart()
    resumed = model()
    second = trainer(out, 3, [start])
    second.fit(resumed, loader(), ckpt_path=str(out / "last.ckpt"))
    info.update(resumed_chains=start.chains, resumed_step=second.global_step)
    second.test(resumed, DataLoader(TensorDataset(data()), batch_size=16), verbose=False)
    info["test_nll"] = float(second.callback_metrics["test/nll"])
    torch.save(info, out / f"rank{first.global_rank}.pt")


if __name__ == "__main__":
    run(main)
