"""Train the VAE and DDPM (with EMA) cases of resume_case.py, a score model and a guided DDPM (with EMA), a denoising
autoencoder and three RealNVP flows (one with spline couplings, one with Glow's ActNorm and 1x1 convolutions, on
images) on 2 CPU processes, first under ``strategy="ddp"``, then sharded (``ModelParallelStrategy``: FSDP2
``fully_shard`` per net, gloo), from the same seed; each rank saves the full (gathered) state of both runs, and the
sharded run's checkpoint (a full state dict, written by rank 0; the VAE's also as the strategy's default folder of
shards). The DDPM checkpoint is then resumed for 10 more steps under both strategies. A sharded DDPM run with a toy
scatter plot and toy metrics (sampling is collective there) logs to ``OUT/pictures/version_0``. Run as a script
(Lightning re-launches it for rank 1): ``python tests/scripts/fsdp_likelihood.py OUT_DIR``. Also refused under
sharding, each with its error saved: the RBM, a GAN and the strategy's default (tensor-parallel) layout
(``OUT/refused_<case>_rank<r>.txt``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.tensor import DTensor

from torch.utils.data import TensorDataset

from ddp_common import run
from resume_case import CASES, _toy

from lightning_gen import RBM, DenoisingAutoencoder, GuidedDDPM, RealNVP, ScoreModel
from lightning_gen.callbacks import ToyMetricsCallback, ToyScatterCallback
from lightning_gen.nets import BernoulliRBM, ImageRealNVP, MLPDecoder, MLPDenoiser, MLPEncoder, VectorRealNVP

STEPS = 20
MODELS = {
    **CASES,
    "score": lambda: ScoreModel(MLPDenoiser(2, (16,), 8), sigma_max=2.0, num_levels=4, ema_decay=0.9,
                                steps_per_level=2),
    # the toy ring's batches are (point, mode index): the guided DDPM's 8 classes
    "guided": lambda: GuidedDDPM(MLPDenoiser(2, (16,), 8, num_classes=8), num_timesteps=50, ema_decay=0.9),
    # fits its code Gaussian over every rank's codes at the end of training (collective encoder calls)
    "dae": lambda: DenoisingAutoencoder(MLPEncoder(2, 2, (16,)), MLPDecoder(2, 2, (16,)), noise_std=0.2,
                                        data_range=None),
    "realnvp": lambda: RealNVP(VectorRealNVP(2, num_couplings=4, hidden_dims=(16,))),
    "spline": lambda: RealNVP(VectorRealNVP(2, num_couplings=4, hidden_dims=(16,), coupling="spline", num_bins=4)),
    # Glow's layers on 1 x 4 x 4 images: ActNorm's data-dependent init (pooled over the ranks) and 1x1 convolutions
    # stay whole, the coupling nets are sharded
    "glow": lambda: RealNVP(ImageRealNVP(1, 4, num_scales=1, hidden_channels=4, num_blocks=1, actnorm=True,
                                         permutation="conv1x1", layout="glow", steps_per_scale=2)),
}


def _images() -> L.LightningDataModule:
    """256 images 1 x 4 x 4 in [-1, 1], the same on every rank, 8 per rank and batch."""
    x = torch.rand(256, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return L.LightningDataModule.from_datasets(TensorDataset(x), batch_size=8)


def sharded(**kwargs) -> ModelParallelStrategy:
    """Every process data-parallel (these families do no tensor parallelism), full-state-dict checkpoints."""
    return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, save_distributed_checkpoint=False,
                                 **kwargs)


CLIP = 0.5


class ClipRecorder(L.Callback):
    """Counts the steps whose gradient norm (before clipping, all parameters) exceeded ``CLIP``: the clip acted."""

    clipped = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        grads = [p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                 for p in pl_module.parameters() if p.grad is not None]
        if float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))) > CLIP:
            ClipRecorder.clipped += 1


class SaveGathered(L.Callback):
    """Each rank saves the module's full state (sharded tensors gathered: a collective) to ``OUT/<name>_rank<r>.pt``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
                 for k, v in pl_module.state_dict().items()}
        sharded = sorted(k for k, v in pl_module.state_dict().items() if isinstance(v, DTensor))
        torch.save({"state_dict": state, "sharded": sharded, "global_step": trainer.global_step,
                    "clipped_steps": ClipRecorder.clipped},
                   self.path.with_name(f"{self.path.name}_rank{trainer.global_rank}.pt"))


def _fit(model: L.LightningModule, strategy, out: Path, name: str, ckpt_path: Optional[Path] = None,
         max_steps: int = STEPS, clip: Optional[float] = CLIP) -> L.Trainer:
    ClipRecorder.clipped = 0
    # gradient clipping as the recipes do, over sharded and whole gradients together (tight enough to act)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=max_steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(out),
                        gradient_clip_val=clip, callbacks=[SaveGathered(out / name), ClipRecorder()])
    trainer.fit(model, _images() if name.startswith("glow") else _toy(2), ckpt_path=ckpt_path)
    return trainer


def main(out: Path) -> None:
    torch.set_num_threads(1)
    for case in ("vae", "ddpm", "score", "guided", "dae", "realnvp", "spline", "glow"):
        L.seed_everything(5)
        _fit(MODELS[case](), "ddp", out, f"{case}_ddp")
        L.seed_everything(5)
        trainer = _fit(MODELS[case](), sharded(), out, f"{case}_sharded")
        trainer.save_checkpoint(out / f"{case}_sharded.ckpt")
        if case == "vae":  # the strategy's default: a folder of per-rank shards (torch.distributed.checkpoint)
            trainer.strategy._save_distributed_checkpoint = True
            trainer.save_checkpoint(out / "vae_distributed.ckpt")
    for name, strategy in (("ddp", "ddp"), ("sharded", sharded())):  # both resume the sharded run's checkpoint
        L.seed_everything(5)
        _fit(CASES["ddpm"](), strategy, out, f"ddpm_resumed_{name}", out / "ddpm_sharded.ckpt", STEPS + 10)
    # sampling is collective under sharding: the pictures rank 0 logs are drawn on every rank, the metrics too
    L.seed_everything(5)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=sharded(), max_steps=16, check_val_every_n_epoch=1,
                        limit_val_batches=2, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        logger=CSVLogger(out, name="pictures", version=0),
                        callbacks=[ToyScatterCallback(every_n_epochs=1, num_samples=200),
                                   ToyMetricsCallback(num_samples=501)])
    trainer.fit(CASES["ddpm"](), _toy(2))
    rbm = RBM(BernoulliRBM(2, 6))  # refused when the nets would be sharded, before any batch
    for case, model in (("rbm", rbm), ("gan", CASES["gan"]())):
        try:
            _fit(model, sharded(), out, f"{case}_sharded", clip=None)  # the games clip per player themselves
        except NotImplementedError as err:
            (out / f"refused_{case}_rank{torch.distributed.get_rank()}.txt").write_text(str(err))
    try:  # the strategy's default layout: the processes of a node tensor-parallel, fed the same batches
        _fit(CASES["vae"](), ModelParallelStrategy(), out, "vae_default_layout")
    except NotImplementedError as err:
        (out / f"refused_tensor_parallel_rank{torch.distributed.get_rank()}.txt").write_text(str(err))


if __name__ == "__main__":
    run(main)
