"""The single-objective families under DDP (tests/scripts/ddp_likelihood.py, 2 CPU processes, gloo; launched once
with the other likelihood families by the ``likelihood_ddp_runs`` fixture)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def test_ddp_two_cpu_processes_pool_the_code_statistics_and_keep_ranks_identical(likelihood_ddp_runs):
    # each rank sees half the data; the fitted code Gaussian must be that of all codes, the same on both ranks
    script = Path(__file__).resolve().parents[1] / "scripts" / "ddp_likelihood.py"
    proc, runs = likelihood_ddp_runs
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(runs / "likelihood" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    sys.path.insert(0, str(script.parent))
    from ddp_likelihood import autoencoder, data

    with torch.no_grad():
        codes = autoencoder().encoder(data()).double()
    for info in ranks:
        torch.testing.assert_close(info["latent_mean"].double(), codes.mean(0), rtol=0, atol=1e-5)
        cov = info["latent_scale_tril"].double() @ info["latent_scale_tril"].double().T
        torch.testing.assert_close(cov, torch.cov(codes.T), rtol=0, atol=1e-4)
    for model in ("vae", "realnvp", "ddpm"):  # weights (and the DDPM's EMA) stay identical on both ranks
        for name, value in ranks[0][model].items():
            torch.testing.assert_close(value, ranks[1][model][name], rtol=0, atol=0, msg=f"{model}.{name}")
    assert any("ema" in name for name in ranks[0]["ddpm"])
    assert ranks[0]["stopped"] and ranks[1]["stopped"]  # a NaN on one rank stops all of them, none hangs
