"""Shared test set-up: offline W&B, quiet Lightning, small factories."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# real-feature caches and auto-trained classifiers go to a throw-away folder, never to ~/.cache
os.environ.setdefault("LIGHTNING_GEN_CACHE", tempfile.mkdtemp(prefix="lightning_gen_test_cache_"))
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@pytest.fixture
def tiny_trainer_kwargs(tmp_path):
    """Trainer arguments for fast, quiet CPU runs writing under a temporary folder."""
    return dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
