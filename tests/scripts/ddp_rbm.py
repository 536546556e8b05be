"""Train a PCD RBM with `strategy="ddp"` on 2 CPU processes, checkpoint it, resume it and test it; each rank saves
its state, its chains as each training step found and left them, the chains it got back on resuming, and the test
NLL.

Run as a script (DDP re-launches the script for rank 1): ``python tests/scripts/ddp_rbm.py OUT_DIR``.
"""

import os
import sys
from pathlib import Path

import lightning as L
import torch
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
    return L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=epochs, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks, default_root_dir=str(out))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(7)
    rbm = model()
    if os.environ.get("LOCAL_RANK", "0") == "0":
        torch.save({k: v.clone() for k, v in rbm.state_dict().items()}, out / "init.pt")
    loader = lambda: DataLoader(TensorDataset(data()), batch_size=8, shuffle=True)  # noqa: E731
    first = trainer(out, 2, [])
    first.fit(rbm, loader())
    first.save_checkpoint(out / "last.ckpt")  # collective: every rank's chains
    info = {"state_dict": {k: v.detach().clone() for k, v in rbm.state_dict().items()},
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
    main(Path(sys.argv[1]))
    # gloo's worker threads can abort the interpreter's exit (SIGABRT) unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
