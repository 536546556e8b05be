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
def test_adversarial_autoencoder_example_is_a_three_player_game(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _run("adversarial_autoencoder.py", "--max-steps", "20", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "steps: {'autoencoder': 20, 'discriminator': 20, 'encoder': 20}" in out and "modes_covered" in out
