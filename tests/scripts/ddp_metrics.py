"""Fit and test a blob sampler with GenerativeMetricsCallback under `strategy="ddp"` on 2 CPU processes.

Run as a script (DDP re-launches it for rank 1): ``python tests/scripts/ddp_metrics.py OUT_DIR``. Each rank saves the
values the callback computed after the training epoch and after ``test``, and what it logged.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_common import run  # noqa: E402
from metrics_fakes import BlobImages, BlobSampler  # noqa: E402

from lightning_gen.callbacks import GenerativeMetricsCallback  # noqa: E402
from lightning_gen.metrics import (  # noqa: E402
    ClassifierFeatureExtractor,
    FeatureExtractor,
    PrecisionRecall,
    SlicedWassersteinDistance,
)

# 250 samples in chunks of 64: four chunks of unequal size, two per rank
CALLBACK_KWARGS = dict(num_samples=250, num_real=290, batch_size=64, kid_subsets=5, kid_subset_size=200,
                       is_splits=2)


def make_callback(cache_dir: Path, classifier: Path) -> GenerativeMetricsCallback:
    """The callback of the DDP run and of the single-process reference: a small classifier as extractor, trained
    at set-up when ``classifier`` does not exist yet (under DDP: by rank 0, weights sent to rank 1)."""
    return GenerativeMetricsCallback(
        extractor=ClassifierFeatureExtractor(str(classifier), train_if_missing=True, epochs=2),
        metrics=["fid", "kid", "inception_score", "precision_recall"],
        cache_dir=cache_dir,
        **CALLBACK_KWARGS,
    )


def swd_samples() -> tuple[torch.Tensor, torch.Tensor]:
    """101 real and 101 generated 3-D points (an odd count, so the ranks' shares differ)."""
    g = torch.Generator().manual_seed(11)
    return torch.randn(101, 3, generator=g), torch.randn(101, 3, generator=g) * 1.5 + 0.5


def precision_recall_metric() -> PrecisionRecall:
    """Improved precision/recall with the identity as feature extractor."""
    return PrecisionRecall(extractor=FeatureExtractor(nn.Flatten(), num_features=3), k=3)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(3)
    callback = make_callback(out / "cache", out / "classifier.pt")
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_train_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback], default_root_dir=str(out),
    )
    trainer.fit(BlobSampler(shift=1.5), BlobImages())
    fit_values = dict(callback.last)
    fit_logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    (test_logged,) = trainer.test(BlobSampler(shift=1.5), BlobImages(), verbose=False)
    fingerprint = callback.extractor.fingerprint()
    # the sliced Wasserstein metric: each rank adds its share (51 and 50 of 101 samples); states are concatenated
    real, fake = swd_samples()
    swd = SlicedWassersteinDistance(num_projections=64, seed=0)
    swd.update(real[trainer.global_rank::2], real=True)
    swd.update(fake[trainer.global_rank::2], real=False)
    swd_value = float(swd.compute())
    # the precision/recall metric likewise, on the same points squashed into [-1, 1] as 3 x 1 x 1 "images"
    pr = precision_recall_metric()
    pr.update(torch.tanh(real)[trainer.global_rank::2, :, None, None], real=True)
    pr.update(torch.tanh(fake + 1.0)[trainer.global_rank::2, :, None, None], real=False)
    pr_value = [float(v) for v in pr.compute()]
    torch.save({"fit": fit_values, "fingerprint": fingerprint, "swd": swd_value, "precision_recall": pr_value, "fit_logged": fit_logged, "test": dict(callback.last), "test_logged": test_logged,
                "world_size": trainer.world_size}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    run(main)
