"""The scripts in examples/ run as documented (shortened)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

from lightning_gen.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")


@pytest.mark.slow
def test_load_and_sample_example_writes_reproducible_samples(tmp_path, monkeypatch):
    cli_main(["fit", f"--config={ROOT / 'configs/gan/toy_ring.yaml'}", f"--trainer.default_root_dir={tmp_path}",
              "--trainer.max_steps=3", "--data.train_size=512", "--data.batch_size=64", "--trainer.logger=false"])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    _run("load_and_sample.py", str(ckpt), "--num", "50", "--out", str(tmp_path / "a.pt"), monkeypatch=monkeypatch)
    _run("load_and_sample.py", str(ckpt), "--num", "50", "--out", str(tmp_path / "b.pt"), monkeypatch=monkeypatch)
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert a.shape == (50, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_adversarial_autoencoder_example_gives_the_figures_it_promises(tmp_path, monkeypatch, capsys):
    """At its default settings (2,000 steps, about 25 s on one CPU thread) the example prints what its docstring
    promises: close reconstructions, samples spread over the ring (reverse KL 0.1 to 1) but between the modes."""
    monkeypatch.chdir(tmp_path)
    _run("adversarial_autoencoder.py", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "steps: {'autoencoder': 2000, 'discriminator': 2000, 'encoder': 2000}" in out
    report = out[out.index("after 2000 steps"):].splitlines()[1:5]
    figures = {" ".join(line.split()[:-6]): float(line.split()[-6]) for line in report}
    assert 0.0 < figures["reconstruction MSE"] < 0.02
    assert 0.1 < figures["reverse KL"] < 1.0
    assert 0 <= figures["modes_covered"] <= 1
    assert 0.0 <= figures["hq_percent"] < 5.0
    assert all(line.endswith(" ok") for line in report), report


def test_adversarial_autoencoder_report_flags_figures_outside_the_promise(monkeypatch):
    script = runpy.run_path(str(ROOT / "examples" / "adversarial_autoencoder.py"))
    inside = {"reconstruction MSE": 0.002, "reverse KL": 0.4, "modes_covered": 0.0, "hq_percent": 0.5}
    assert script["report"](inside, 2000).count(" ok") == 4
    outside = {**inside, "reverse KL": 2.08}  # every sample in one mode
    lines = script["report"](outside, 2000).splitlines()
    assert lines[2].split()[:3] == ["reverse", "KL", "2.08"] and lines[2].endswith("OUTSIDE")


def test_latent_arithmetic_moves_codes_by_the_class_mean_difference(tmp_path):
    """On an autoencoder whose encoder is the identity on 2-D points and whose decoder is the identity, the moved codes
    are exactly ``x - m_source + m_target``, the walk runs from one class mean to the other, and the round trip lands
    every moved point nearest to the target's mean when the classes are well separated."""
    script = runpy.run_path(str(ROOT / "examples" / "latent_arithmetic.py"))

    class Identity(torch.nn.Module):
        latent_dim = 2

        def forward(self, x):
            return x.reshape(x.shape[0], -1)

    from lightning_gen import Autoencoder

    model = Autoencoder(Identity(), Identity(), data_range=None)
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(50)
    points = centers[labels] + 0.5 * torch.randn(150, 2, generator=generator)
    out = script["arithmetic"](model, points, labels, source=1, target=2, num=5, num_classes=3)
    x, recon, moved, walk = out["rows"]
    means = torch.stack([points[labels == c].mean(0) for c in range(3)])
    torch.testing.assert_close(x, points[labels == 1][:5])
    torch.testing.assert_close(recon, x)
    torch.testing.assert_close(moved, x - means[1] + means[2])
    torch.testing.assert_close(walk[0], means[1])
    torch.testing.assert_close(walk[-1], means[2])
    assert out["moved_to_target"] == 1.0 and out["originals_at_source"] == 1.0 and out["chance"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"no held-out example of classes \[2\]"):
        script["arithmetic"](model, points[:100], labels[:100], source=1, target=0, num=5, num_classes=3)


def test_latent_arithmetic_writes_its_grid_for_an_mnist_model(tmp_path, monkeypatch, capsys):
    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST digits not found in ../shared/data")
    cli_main(["fit", f"--config={ROOT / 'configs/autoencoder/mnist.yaml'}", f"--trainer.default_root_dir={tmp_path}",
              "--trainer.max_steps=2", "--trainer.logger=false", f"--data.root={root}", "--trainer.callbacks=[]",
              "--trainer.limit_val_batches=0"])
    ckpt = next(tmp_path.rglob("*.ckpt"))
    _run("latent_arithmetic.py", str(ckpt), "--data", str(root), "--pool", "500", "--num", "6",
         "--out", str(tmp_path / "grid.png"), monkeypatch=monkeypatch)
    from PIL import Image

    width, height = Image.open(tmp_path / "grid.png").size
    assert (width, height) == (2 + 6 * 30, 2 + 4 * 30)  # 6 columns, 4 rows of 28 px with 2 px padding
    out = capsys.readouterr().out
    assert "Autoencoder: 1 -> 7 over 500 test digits" in out and "(chance: 0.10)" in out
