"""Shared test set-up: offline W&B, quiet Lightning, small factories."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
import torch
import yaml

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# real-feature caches and auto-trained classifiers go to a throw-away folder, never to ~/.cache
os.environ.setdefault("LIGHTNING_GEN_CACHE", tempfile.mkdtemp(prefix="lightning_gen_test_cache_"))
# Data: the data modules' default root is $LIGHTNING_GEN_DATA (lightning_gen/data/root.py); .ci/run points it at the
# MNIST digits shipped beside this repository, and a plain `pytest` in this checkout finds them there too. Tests read
# real data only through it (the `mnist_root` fixture, or recipes left at their default root) and skip without it.
_SHIPPED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHIPPED_DATA.is_dir():
    os.environ.setdefault("LIGHTNING_GEN_DATA", str(_SHIPPED_DATA))
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


METRICS_CALLBACK = "lightning_gen.callbacks.GenerativeMetricsCallback"


def real_mnist_root() -> Path:
    """The folder holding ``MNIST/raw/`` for tests: ``$LIGHTNING_GEN_DATA``; skips the test when the digits are absent."""
    from lightning_gen.data.root import DATA_ENV, default_data_root

    root = default_data_root()
    if not os.environ.get(DATA_ENV) or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST digits not found: set {DATA_ENV} to a folder holding MNIST/raw/ (now "
                    f"{os.environ.get(DATA_ENV)!r})")
    return root


@pytest.fixture
def mnist_root() -> Path:
    """The MNIST digits' root, ``$LIGHTNING_GEN_DATA``; skips the test when they are absent."""
    return real_mnist_root()


@pytest.fixture(scope="session")
def mnist_classifier_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, seeded stand-in for the MNIST recipes' classifier extractor: the recipe tests check the
    plumbing; training it (train_if_missing) and its accuracy are tested in tests/callbacks and tests/metrics."""
    from lightning_gen.nets import ImageClassifier, save_classifier

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ImageClassifier(channels=1, image_size=28)
    return save_classifier(net, tmp_path_factory.mktemp("classifier") / "mnist_classifier.pt")


def stand_in_inception_weights(tmp_path: Path) -> Path:
    """torch-fidelity's Inception-v3 with its random initialization saved as a weights file (the real weights
    cannot be downloaded here)."""
    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *args, **kwargs: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "inception_stand_in.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def shrink_recipe_metrics(
    tmp_path: Path, mnist_classifier_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Returns ``shrink(config, **metric_args) -> Path``: a copy of the recipe whose metrics callback draws a few
    samples (the stand-in classifier at ``mnist_classifier_path``; Inception from stand-in weights): the same
    callbacks and extractors, a smaller job."""

    def shrink(config: Path, **metric_args: object) -> Path:
        recipe = yaml.safe_load(config.read_text())
        (callback,) = [c for c in recipe["trainer"]["callbacks"] if c["class_path"] == METRICS_CALLBACK]
        args = callback["init_args"]
        args.update(num_samples=24, num_real=24, batch_size=12, kid_subsets=2, kid_subset_size=12, is_splits=2)
        args.update(metric_args)
        extractor = args["extractor"]
        if extractor["class_path"].endswith("ClassifierFeatureExtractor"):
            extractor["init_args"].update(checkpoint=str(mnist_classifier_path))
        else:
            assert extractor["class_path"].endswith("InceptionFeatureExtractor")
            monkeypatch.setenv("LIGHTNING_GEN_INCEPTION_WEIGHTS", str(stand_in_inception_weights(tmp_path)))
        shrunk = tmp_path / f"{config.parent.name}_{config.name}"
        shrunk.write_text(yaml.safe_dump(recipe))
        return shrunk

    return shrink


def run_script(
    script: Path, *args: str, cwd: Path, timeout: float = 300.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python script *args`` in a session of its own and return its result; past ``timeout`` seconds the whole
    process group is killed (DDP's rank 1 and loader workers included, never pytest), so the test fails rather
    than waiting on pipes that rank 1 still holds open. ``env`` adds to (or overrides) the inherited environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[test] {script.name} ran past {timeout:.0f} s and its process group was killed"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class ScriptRun(NamedTuple):
    """A finished test script: its process result (``returncode``, ``stdout``, ``stderr``) and the folder it wrote."""

    proc: subprocess.CompletedProcess
    out: Path


@pytest.fixture(scope="session")
def likelihood_ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> ScriptRun:
    """One 2-process DDP launch of tests/scripts/ddp_likelihood_families.py for the whole session (the ActNorm,
    score, guided and likelihood DDP tests share its interpreter and gloo start-up); each family's files are in
    its subfolder of ``out``. Launched only when one of those tests runs; each test checks ``proc.returncode``."""
    out = tmp_path_factory.mktemp("likelihood_ddp")
    script = Path(__file__).resolve().parent / "scripts" / "ddp_likelihood_families.py"
    return ScriptRun(run_script(script, str(out), cwd=out, timeout=300), out)
