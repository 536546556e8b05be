"""Training throughput of every family: a hand-written PyTorch loop against our module under `Trainer`, side by side.

    python benchmarks/throughput.py [--families dcgan_mnist wgan_gp_toy vae_mnist realnvp_mnist ddpm_mnist]
                                    [--steps 30] [--warmup 5] [--repeats 5] [--device cpu|cuda] [--variants ...]

Each family is built from its shipped recipe (``configs/...``: the same nets, optimizers, batch size and module
features: EMA, schedules, logging cadence ``log_every_n_steps`` to a CSV logger, finite-loss checks), then timed as:

- ``hand``: a plain loop over the recipe's own training loader with copies of the same nets and optimizers and the
  same loss math (the likelihood families call the module's ``training_loss``; the games are written out with the
  pure losses of ``lightning_gen.losses``), with the recipe's schedules and EMA;
- ``eager``: the recipe's module under ``Trainer`` (no callbacks but a timer, no checkpoints, no validation);
- ``compiled``: the same with ``--model.compile true`` (when the module has that option);
- ``bf16``: the same under ``precision="bf16-mixed"``.

Steps are generator steps for the games (``n_critic`` critic batches each) and optimizer steps otherwise. The
variants run back to back in one process, in an order that rotates each repeat, after a warm-up; the script prints
steps/s per repeat, then per variant the median steps/s and the median (min-max) of its per-repeat ratio to the
hand loop. Data: ``$LIGHTNING_GEN_DATA`` (or ``--data``) must hold MNIST for the MNIST recipes.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_gen.cli import GenerativeCLI
from lightning_gen.losses import gradient_penalty
from lightning_gen.modules import batch_data

ROOT = Path(__file__).resolve().parents[1]

RECIPES = {
    "dcgan_mnist": "configs/dcgan/mnist.yaml",
    "wgan_gp_toy": "configs/wgan_gp/toy_ring.yaml",
    "vae_mnist": "configs/vae/mnist.yaml",
    "realnvp_mnist": "configs/realnvp/mnist.yaml",
    "ddpm_mnist": "configs/ddpm/mnist.yaml",
}


def build(recipe: str, device: str, *overrides: str) -> GenerativeCLI:
    """The recipe's model and data module, as `lightning-gen fit --config <recipe>` builds them (no trainer run)."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    return GenerativeCLI(run=False, args=[
        f"--config={ROOT / recipe}", "--trainer.logger=false", "--trainer.callbacks=[]",
        f"--trainer.accelerator={accelerator}", "--trainer.enable_progress_bar=false", *overrides,
    ])


def _infinite(loader: Any, device: str):
    """Batches of the loader, epoch after epoch, moved to ``device``."""
    for _ in itertools.count():
        for batch in loader:
            yield batch_data(batch).to(device, non_blocking=True), batch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- hand loops -------------------------------------------------------------------------------------------------------
def hand_game(model: Any, loader: Any, steps: int, device: str) -> float:
    """A GAN game written out: ``n_critic`` critic steps (with the recipe's gradient penalty), one generator step, the
    recipe's optimizers and schedules (sized for ``steps``). Returns generator steps/s."""
    G, D = model.generator.to(device), model.discriminator.to(device)
    players = model.players
    opt_g = players["generator"].optimizer(G.parameters())
    opt_d = players["discriminator"].optimizer(D.parameters())
    n_critic = int(model.n_critic)
    scheduler = {}
    for name, optimizer, per in (("generator", opt_g, 1), ("discriminator", opt_d, n_critic)):
        factory = players[name].scheduler
        scheduler[name] = factory(optimizer) if factory is not None else None
        if getattr(scheduler[name], "needs_run_length", False):  # a schedule that follows the run: this run's length
            scheduler[name].set_run_length(steps * per)
    loss = model.loss
    gp_weight = float(model.hparams.get("gp_weight") or 0.0)
    latent = G.latent_dim
    batches = _infinite(loader, device)
    G.train(), D.train()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        for _ in range(n_critic):
            real, _ = next(batches)
            with torch.no_grad():
                fake = G(torch.randn(real.shape[0], latent, device=device))
            loss_d = loss.discriminator_loss(D(real), D(fake))
            if gp_weight:
                loss_d = loss_d + gp_weight * gradient_penalty(D, real, fake)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if scheduler["discriminator"] is not None:
                scheduler["discriminator"].step()
        for p in D.parameters():
            p.requires_grad_(False)
        loss_g = loss.generator_loss(D(G(torch.randn(real.shape[0], latent, device=device))))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if scheduler["generator"] is not None:
            scheduler["generator"].step()
        for p in D.parameters():
            p.requires_grad_(True)
    _sync(device)
    return steps / (time.perf_counter() - start)


def hand_single(model: Any, loader: Any, steps: int, device: str) -> float:
    """A likelihood family written out: ``training_loss``, backward, the optimizer step and the EMA update when the
    module keeps one. Returns optimizer steps/s."""
    model = model.to(device)
    model.train()
    optimizer = model.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    ema = getattr(model, "denoiser_ema", None)
    batches = _infinite(loader, device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        data, _ = next(batches)
        loss, _ = model.training_loss(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(model.denoiser)
    _sync(device)
    return steps / (time.perf_counter() - start)


# -- module under Trainer ---------------------------------------------------------------------------------------------
class _Timer(L.Callback):
    """Times training from its first batch to the end of fit (start-up and teardown excluded)."""

    def __init__(self, device: str) -> None:
        self.device, self.start, self.end = device, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0:
            _sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        _sync(self.device)
        self.end = time.perf_counter()


def trainer_run(model: Any, loader: Any, steps: int, device: str, precision: str, log_every: int) -> float:
    """The module under ``Trainer`` with the recipe's logging cadence to a CSV logger; returns steps/s."""
    timer = _Timer(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps, precision=precision,
            logger=CSVLogger(tmp), log_every_n_steps=log_every, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[timer], default_root_dir=tmp,
        )
        trainer.fit(model, train_dataloaders=loader)
    return steps / (timer.end - timer.start)


def variants(family: str, device: str, requested: list[str]) -> dict[str, Callable[[int], float]]:
    """The timed runs of one family: name -> run(steps) -> steps/s (each run starts from the same initial nets)."""
    cli = build(RECIPES[family], device)
    model0, data = cli.model, cli.datamodule
    data.prepare_data()
    data.setup("fit")
    loader = data.train_dataloader()
    log_every = cli.trainer.log_every_n_steps
    game = hasattr(model0, "players")
    runs: dict[str, Callable[[int], float]] = {}
    if "hand" in requested:
        def hand(steps: int) -> float:
            model = copy.deepcopy(model0)
            if game:
                return hand_game(model, loader, steps, device)
            return hand_single(model, loader, steps, device)
        runs["hand"] = hand
    if "eager" in requested:
        runs["eager"] = lambda steps: trainer_run(copy.deepcopy(model0), loader, steps, device, "32-true", log_every)
    if "bf16" in requested:
        runs["bf16"] = lambda steps: trainer_run(copy.deepcopy(model0), loader, steps, device, "bf16-mixed", log_every)
    if "compiled" in requested:
        if "compile" in inspect.signature(type(model0).__init__).parameters:
            compiled = build(RECIPES[family], device, "--model.compile=true").model
            compiled.load_state_dict(model0.state_dict())
            runs["compiled"] = lambda steps: trainer_run(copy.deepcopy(compiled), loader, steps, device, "32-true",
                                                         log_every)
        else:
            print(f"  {family}: {type(model0).__name__} has no `compile` option; no compiled column")
    return runs


def main() -> None:
    """Time every requested family and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--variants", nargs="+", default=["hand", "eager", "compiled", "bf16"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=None, help="sets LIGHTNING_GEN_DATA for the MNIST recipes")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the recipes are parsed from `build`'s own arguments
    if args.data is not None:
        os.environ["LIGHTNING_GEN_DATA"] = str(args.data)
    os.environ.setdefault("WANDB_MODE", "disabled")
    L.seed_everything(0, verbose=False)
    print(f"device {args.device}; {args.steps} steps x {args.repeats} repeats after {args.warmup} warm-up steps; "
          f"torch {torch.__version__}, lightning {L.__version__}, threads {torch.get_num_threads()}")
    table = []
    for family in args.families:
        runs = variants(family, args.device, args.variants)
        for run in runs.values():  # warm-up: kernels, allocator, lazy imports, compilation
            run(args.warmup)
        rates: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for r in range(args.repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                torch.manual_seed(r)
                rates[name].append(runs[name](args.steps))
            print(f"{family} repeat {r}: " + ", ".join(f"{n} {rates[n][-1]:.2f}" for n in names) + " steps/s")
        for name in names:
            median = statistics.median(rates[name])
            if "hand" in rates and name != "hand":
                ratios = [v / h for v, h in zip(rates[name], rates["hand"])]
                ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
            else:
                ratio = "1" if name == "hand" else "-"
            table.append((family, name, median, ratio))
    print(f"\n{'family':<16}{'variant':<10}{'steps/s':>10}   ratio to hand: median (min-max)")
    for family, name, median, ratio in table:
        print(f"{family:<16}{name:<10}{median:>10.2f}   {ratio}")


if __name__ == "__main__":
    main()
