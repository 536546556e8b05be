"""Sharded training (``ModelParallelStrategy`` with FSDP2 ``fully_shard`` per net) of the single-objective families on
2 CPU processes (gloo): tests/scripts/fsdp_likelihood.py trains the VAE, a denoising autoencoder, DDPM, guided DDPM
and a score model (the last three with EMA) and three RealNVP flows (one with spline couplings, one with Glow's
ActNorm and 1x1 convolutions) under DDP and sharded from the same seed; sharded training must end where DDP ends,
its full-state-dict checkpoint must load into a plain model (a folder of shards too), resuming it must go on as DDP
does, and pictures and metrics must sample on every rank. RealNVP shards only its coupling nets. The RBM, the
adversarial games and a tensor-parallel layout are refused with errors that say what to use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import ScriptRun, run_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fsdp_likelihood.py"


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory: pytest.TempPathFactory) -> ScriptRun:
    out = tmp_path_factory.mktemp("fsdp")
    return ScriptRun(run_script(SCRIPT, str(out), cwd=out, timeout=300), out)


def _load(run: ScriptRun, name: str) -> list[dict]:
    assert run.proc.returncode == 0, run.proc.stdout[-3000:] + run.proc.stderr[-3000:]
    return [torch.load(run.out / f"{name}_rank{r}.pt", weights_only=False) for r in (0, 1)]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{what}: {key}")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["vae", "ddpm", "score", "guided", "dae", "realnvp", "spline", "glow"])
def test_sharded_training_ends_where_ddp_ends_with_every_net_sharded(case, sharded_runs):
    """Same seed, same per-rank shards and noise: gathered sharded weights (the DDPM's EMA too) equal DDP's."""
    ddp, sharded = _load(sharded_runs, f"{case}_ddp"), _load(sharded_runs, f"{case}_sharded")
    for rank in (0, 1):
        assert sharded[rank]["global_step"] == ddp[rank]["global_step"] == 20
        _assert_same(ddp[rank]["state_dict"], sharded[rank]["state_dict"], f"{case} rank {rank}")
    # both clipped gradients at a norm of 0.5, and the clip acted on most steps (its norm covers every gradient)
    assert sharded[0]["clipped_steps"] == ddp[0]["clipped_steps"] >= 10
    params = sharded[0]["sharded"]
    if case in ("vae", "dae"):  # every net's parameters are sharded
        assert {k.split(".")[0] for k in params} == {"encoder", "decoder"}
    elif case in ("realnvp", "spline", "glow"):  # coupling nets sharded; coupling scales, ActNorm, 1x1 convs whole
        whole = [k for k in sharded[0]["state_dict"] if k not in params]
        assert params and all(".net." in k for k in params)
        assert any(k.endswith(".scale") for k in whole) == (case != "spline")  # spline couplings have no scale
        assert case != "spline" or all(k.endswith(".mask") for k in whole)
        if case == "glow":
            assert any(k.endswith(".log_scale") for k in whole) and any(k.endswith(".lower") for k in whole)
    else:  # the net and its EMA copy, sharded alike
        net = {"ddpm": "denoiser", "guided": "denoiser", "score": "net"}[case]
        assert {k.split(".")[0] for k in params} == {net, f"{net}_ema"}
    if case == "vae":  # the VAE's own output log-variance stays whole (its gradients averaged by the module)
        assert "decoder_logvar" not in params and "decoder_logvar" in sharded[0]["state_dict"]
    if case == "dae":  # the code Gaussian is fitted over every rank's codes at the end of training (equal to DDP's)
        state = sharded[0]["state_dict"]
        assert bool(state["latent_fitted"]) and float(state["latent_mean"].abs().sum()) > 0
    init = _initial_state(case)
    assert any(not torch.equal(init[k], sharded[0]["state_dict"][k]) for k in params)  # it really trained


def _initial_state(case: str) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(SCRIPT.parent))
    import lightning as L
    from fsdp_likelihood import MODELS

    L.seed_everything(5)
    return MODELS[case]().state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["vae", "ddpm"])
def test_a_sharded_checkpoint_holds_the_full_state_dict_and_loads_into_a_plain_model(case, sharded_runs):
    gathered = _load(sharded_runs, f"{case}_sharded")[0]["state_dict"]
    checkpoint = torch.load(sharded_runs.out / f"{case}_sharded.ckpt", weights_only=False)
    sys.path.insert(0, str(SCRIPT.parent))
    from resume_case import CASES

    model = CASES[case]()
    model.load_state_dict(checkpoint["state_dict"])  # plain tensors, full shapes: no process group needed
    _assert_same(gathered, model.state_dict(), f"{case} checkpoint")
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)


@pytest.mark.slow
def test_resuming_a_sharded_checkpoint_goes_on_as_ddp_resuming_it(sharded_runs):
    ddp, sharded = _load(sharded_runs, "ddpm_resumed_ddp"), _load(sharded_runs, "ddpm_resumed_sharded")
    for rank in (0, 1):
        assert ddp[rank]["global_step"] == sharded[rank]["global_step"] == 30
        _assert_same(ddp[rank]["state_dict"], sharded[rank]["state_dict"], f"resumed rank {rank}")


@pytest.mark.slow
@pytest.mark.parametrize("case, words", [
    ("rbm", ["RBM cannot be sharded", "Gibbs", "strategy: ddp", "docs/scaling.md"]),
    ("gan", ["GAN", "ModelParallelStrategy", "strategy: ddp", "docs/scaling.md"]),
    ("tensor_parallel", ["tensor-parallel", "tensor_parallel_size=1", "data_parallel_size"]),
])
def test_what_cannot_be_sharded_is_refused_with_what_to_use(case, words, sharded_runs):
    assert sharded_runs.proc.returncode == 0, sharded_runs.proc.stderr[-3000:]
    for rank in (0, 1):
        message = (sharded_runs.out / f"refused_{case}_rank{rank}.txt").read_text()
        assert all(word in message for word in words), message


@pytest.mark.slow
def test_pictures_and_metrics_sample_on_every_rank_under_sharding_and_are_logged_once(sharded_runs):
    """Sampling gathers each sharded net on every rank together, so a rank-0 picture is drawn on all ranks (drawn on
    rank 0 alone it would wait for ever); the EMA copy, left gathered by sampling, is resharded before its update."""
    assert sharded_runs.proc.returncode == 0, sharded_runs.proc.stderr[-3000:]
    run = sharded_runs.out / "pictures" / "version_0"
    assert sorted(p.name for p in (run / "images").iterdir()) == ["toy_samples_step15.png", "toy_samples_step16.png"]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/modes_covered", "val/hq_percent", "val/reverse_kl"} <= set(header)


@pytest.mark.slow
def test_a_sharded_checkpoint_folder_loads_with_its_weights_gathered(sharded_runs):
    """``ModelParallelStrategy``'s default checkpoint is a folder of per-rank shards (Lightning's
    consolidate_checkpoint reads only FSDPStrategy's): read_checkpoint and ``VAE.load`` gather it in one process."""
    from lightning_gen import VAE
    from lightning_gen.modules.base import is_sharded_checkpoint, read_checkpoint

    folder = sharded_runs.out / "vae_distributed.ckpt"
    assert is_sharded_checkpoint(folder) and not is_sharded_checkpoint(sharded_runs.out / "vae_sharded.ckpt")
    full = torch.load(sharded_runs.out / "vae_sharded.ckpt", weights_only=False)["state_dict"]
    gathered = read_checkpoint(folder)
    assert gathered["global_step"] == 20
    _assert_same(full, gathered["state_dict"], "gathered shards")
    sys.path.insert(0, str(SCRIPT.parent))
    from fsdp_likelihood import MODELS

    nets = MODELS["vae"]()
    model = VAE.load(folder, encoder=nets.encoder, decoder=nets.decoder)
    _assert_same(full, model.state_dict(), "VAE.load of the folder")


def test_a_folder_without_a_sharded_checkpoint_is_refused_with_what_to_pass(tmp_path):
    from lightning_gen.modules.base import read_checkpoint

    with pytest.raises(IsADirectoryError, match="folder without a sharded checkpoint.*meta.pt"):
        read_checkpoint(tmp_path)



@pytest.mark.slow
@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_the_cli_evaluates_a_sharded_folder_anywhere_but_resumes_it_only_sharded(subcommand, sharded_runs):
    """``lightning-gen test/validate/predict --ckpt_path <folder of shards>`` on one device or DDP gets the weights
    gathered into one file; ``fit`` cannot restore sharded optimizer states there, so it stops with what to do."""
    from types import SimpleNamespace

    from lightning_gen.cli import GenerativeCLI, UsageError

    folder = sharded_runs.out / "vae_distributed.ckpt"
    cli = SimpleNamespace(subcommand=subcommand, config_init={subcommand: {"ckpt_path": str(folder)}},
                          trainer=SimpleNamespace(strategy=object()))  # neither ModelParallelStrategy nor FSDP
    if subcommand == "fit":
        with pytest.raises(UsageError, match="sharded checkpoint folder.*save_distributed_checkpoint false"):
            GenerativeCLI._gather_sharded_checkpoint(cli)
        return
    GenerativeCLI._gather_sharded_checkpoint(cli)
    gathered = Path(cli.config_init["test"]["ckpt_path"])
    assert gathered.is_file() and gathered != folder
    full = torch.load(sharded_runs.out / "vae_sharded.ckpt", weights_only=False)
    _assert_same(full["state_dict"], torch.load(gathered, weights_only=False)["state_dict"], "gathered file")
