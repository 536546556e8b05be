"""Training throughput of every family: a hand-written PyTorch loop against our module under `Trainer`, side by side.

    python benchmarks/throughput.py [--families dcgan_mnist wgan_gp_toy vae_mnist realnvp_mnist ddpm_mnist]
                                    [--steps 30] [--warmup 5] [--repeats 5] [--device cpu|cuda] [--variants ...]

Each family is built from its shipped recipe (``configs/...``: the same nets, optimizers, batch size and module
features: EMA, schedules, image pools, logging cadence ``log_every_n_steps`` to a CSV logger, finite-loss checks), then timed as:

- ``hand``: a plain loop over the recipe's own training loader with copies of the same nets and optimizers and the
  same loss math (the likelihood families call the module's ``training_loss``, CycleGAN its ``generator_loss`` and
  ``discriminator_loss``; the GAN games are written out with the pure losses of ``lightning_gen.losses``), with the
  recipe's schedules and EMA;
- ``lightning``: the hand loop's step as the ``training_step`` of a bare ``LightningModule`` under the same
  ``Trainer`` (manual optimization, the step's own optimizers): the cost of Lightning's loop alone, so that
  ``eager / lightning`` is the cost of our module's features (and, for the likelihood families, of Lightning's
  automatic optimization);
- ``eager``: the recipe's module under ``Trainer`` (no callbacks but a timer, no checkpoints, no validation);
- ``compiled``: the same with ``--model.compile true``; one instance is reused (its weights reset before each run)
  so that the graphs compiled in the warm-up serve the timed runs;
- ``bf16``: the same under ``precision="bf16-mixed"``;
- ``channels_last`` (ask for it with ``--variants``): ``eager`` with every 4-D weight in ``torch.channels_last``
  memory format (convolutions then run channels-last).

Steps are generator steps for the games (``n_critic`` critic batches each) and optimizer steps otherwise. The
variants run back to back in one process, in an order that rotates each repeat, after a warm-up; the script prints
steps/s per repeat, then per variant the median steps/s and the median (min-max) of its per-repeat ratios to the
hand loop and to the bare Lightning loop. Data: ``$LIGHTNING_GEN_DATA`` (or ``--data``) must hold MNIST for the MNIST recipes; CycleGAN runs at
64 px (load 72, random crop and flip, the recipe's 4 loader workers) on random image folders.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

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
    "cyclegan_64": "configs/cyclegan/folders.yaml",
}
# CycleGAN at 64 px (resize to 72, random 64 crop and flip, as the recipe at 286 -> 256) on random image folders
CYCLEGAN_64 = ("--data.image_size=64", "--data.load_size=72", "--data.val_fraction=0")


def _random_folders(root: Path, n: int = 64, size: int = 80) -> tuple[Path, Path]:
    """Two folders of ``n`` random RGB images (the timing does not depend on their content)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for name in ("A", "B"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator)
            Image.fromarray(pixels.numpy()).save(root / name / f"{k}.png")
    return root / "A", root / "B"


def build(recipe: str, device: str, *overrides: str) -> GenerativeCLI:
    """The recipe's model and data module, as `lightning-gen fit --config <recipe>` builds them (no trainer run)."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    return GenerativeCLI(run=False, args=[
        f"--config={ROOT / recipe}", "--trainer.logger=false", "--trainer.callbacks=[]",
        f"--trainer.accelerator={accelerator}", "--trainer.enable_progress_bar=false", *overrides,
    ])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- hand loops: one step function per kind, run by a plain loop or inside a bare LightningModule ---------------------
Step = Callable[[Any], bool]  # takes one loader batch; True when it took a step that counts (generator/optimizer step)


def game_step(model: Any, device: str, steps: int) -> Step:
    """A GAN game written out, one loader batch per call: a critic step (with the recipe's gradient penalty), and
    after every ``n_critic`` of them a generator step; the recipe's optimizers and schedules (sized for ``steps``)."""
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
    critic_steps = [0]
    G.train(), D.train()

    def step(batch: Any) -> bool:
        real = batch_data(batch).to(device, non_blocking=True)
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
        critic_steps[0] += 1
        if critic_steps[0] % n_critic:
            return False
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
        return True
    return step


def image_to_image_step(model: Any, device: str, steps: int) -> Step:
    """CycleGAN written out with the module's own loss functions: the generators' step with the discriminators
    frozen, then the discriminators' step on pooled fakes; the recipe's optimizers and schedules."""
    model = model.to(device)
    model.train()
    players = model.players
    opt = {name: players[name].optimizer(players[name].parameters()) for name in ("generator", "discriminator")}
    scheduler = {name: players[name].scheduler(o) if players[name].scheduler is not None else None
                 for name, o in opt.items()}
    for s in scheduler.values():
        if getattr(s, "needs_run_length", False):
            s.set_run_length(steps)
    frozen = players["discriminator"].parameters()  # the list, taken while they all require grad

    def step(batch: Any) -> bool:
        a, b = batch["a"].to(device, non_blocking=True), batch["b"].to(device, non_blocking=True)
        for p in frozen:
            p.requires_grad_(False)
        loss_g, _, (fake_a, fake_b) = model.generator_loss(a, b)
        opt["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["generator"].step()
        for p in frozen:
            p.requires_grad_(True)
        loss_d, _ = model.discriminator_loss(a, b, fake_a, fake_b)
        opt["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["discriminator"].step()
        for s in scheduler.values():
            if s is not None:
                s.step()
        return True
    return step


def single_step(model: Any, device: str, steps: int) -> Step:
    """A likelihood family written out: ``training_loss``, backward, the optimizer step and the EMA update when the
    module keeps one."""
    model = model.to(device)
    model.train()
    optimizer = model.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    ema = getattr(model, "denoiser_ema", None)

    def step(batch: Any) -> bool:
        loss, _ = model.training_loss(batch_data(batch).to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(model.denoiser)
        return True
    return step


STEPS = {"translation": image_to_image_step, "game": game_step, "single": single_step}


def hand_loop(step: Step, loader: Any, steps: int, device: str) -> float:
    """The plain loop: loader batches, epoch after epoch, into ``step`` until it took ``steps`` steps; steps/s."""
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    done = 0
    _sync(device)
    start = time.perf_counter()
    while done < steps:
        done += step(next(batches))
    _sync(device)
    return steps / (time.perf_counter() - start)


class BareLightning(L.LightningModule):
    """The hand loop's step as the ``training_step`` of a bare LightningModule (manual optimization, the step's own
    torch optimizers): what Lightning's loop alone costs (batch fetching and transfer, hooks, progress tracking)."""

    def __init__(self, step: Step, steps: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.step, self.left = step, steps

    def training_step(self, batch: Any, batch_idx: int) -> None:  # noqa: D102
        self.left -= self.step(batch)
        if self.left <= 0:
            self.trainer.should_stop = True

    def configure_optimizers(self) -> None:  # noqa: D102
        return None


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


def trainer_run(model: Any, loader: Any, steps: Optional[int], device: str, precision: str, log_every: int) -> float:
    """The module under ``Trainer`` with the recipe's logging cadence to a CSV logger; returns steps/s. ``steps``:
    ``max_steps``, or ``None`` for a :class:`BareLightning` module, which stops itself (its global step stays 0)."""
    timer = _Timer(device)
    run_steps = steps if steps is not None else model.left
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps or -1, max_epochs=-1,
            precision=precision,
            logger=CSVLogger(tmp), log_every_n_steps=log_every, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[timer], default_root_dir=tmp,
        )
        trainer.fit(model, train_dataloaders=loader)
    return run_steps / (timer.end - timer.start)


def variants(family: str, device: str, requested: list[str], scratch: Path) -> dict[str, Callable[[int], float]]:
    """The timed runs of one family: name -> run(steps) -> steps/s (each run starts from the same initial nets)."""
    overrides: tuple[str, ...] = ()
    if family == "cyclegan_64":
        root_a, root_b = _random_folders(scratch / "cyclegan")
        overrides = (*CYCLEGAN_64, f"--data.root_a={root_a}", f"--data.root_b={root_b}")
    cli = build(RECIPES[family], device, *overrides)
    model0, data = cli.model, cli.datamodule
    data.prepare_data()
    data.setup("fit")
    loader = data.train_dataloader()
    log_every = cli.trainer.log_every_n_steps
    kind = "translation" if hasattr(model0, "translate") else "game" if hasattr(model0, "players") else "single"
    runs: dict[str, Callable[[int], float]] = {}
    if "hand" in requested:
        runs["hand"] = lambda steps: hand_loop(STEPS[kind](copy.deepcopy(model0), device, steps), loader, steps, device)
    if "lightning" in requested:
        runs["lightning"] = lambda steps: trainer_run(
            BareLightning(STEPS[kind](copy.deepcopy(model0), device, steps), steps), loader, None, device, "32-true",
            log_every)
    if "eager" in requested:
        runs["eager"] = lambda steps: trainer_run(copy.deepcopy(model0), loader, steps, device, "32-true", log_every)
    if "bf16" in requested:
        runs["bf16"] = lambda steps: trainer_run(copy.deepcopy(model0), loader, steps, device, "bf16-mixed", log_every)
    if "channels_last" in requested:
        runs["channels_last"] = lambda steps: trainer_run(
            copy.deepcopy(model0).to(memory_format=torch.channels_last), loader, steps, device, "32-true", log_every)
    if "compiled" in requested:
        if hasattr(model0, "nets_to_compile"):  # every GenerativeModule (the named games take it via **kwargs)
            compiled = build(RECIPES[family], device, *overrides, "--model.compile=true").model
            initial = copy.deepcopy(model0.state_dict())

            def compiled_run(steps: int) -> float:
                # the same instance each time: a copy would be compiled anew (its own graphs) inside the timed run
                compiled.load_state_dict(initial)
                return trainer_run(compiled, loader, steps, device, "32-true", log_every)
            runs["compiled"] = compiled_run
        else:
            print(f"  {family}: {type(model0).__name__} has no `compile` option; no compiled column")
    return runs


def main() -> None:
    """Time every requested family and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--variants", nargs="+", default=["hand", "lightning", "eager", "compiled", "bf16"],
                        choices=["hand", "lightning", "eager", "compiled", "bf16", "channels_last"])
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
    scratch = Path(tempfile.mkdtemp(prefix="lightning_gen_throughput_"))
    for family in args.families:
        runs = variants(family, args.device, args.variants, scratch)
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
            table.append((family, name, statistics.median(rates[name]),
                          _ratio(rates, name, "hand"), _ratio(rates, name, "lightning")))
    print(f"\n{'family':<16}{'variant':<14}{'steps/s':>10}   {'to hand: median (min-max)':<28}to lightning: median (min-max)")
    for family, name, median, to_hand, to_lightning in table:
        print(f"{family:<16}{name:<14}{median:>10.2f}   {to_hand:<28}{to_lightning}")


def _ratio(rates: dict[str, list[float]], name: str, base: str) -> str:
    """Median (min-max) of the per-repeat ratios of variant ``name`` to variant ``base``."""
    if base not in rates:
        return "-"
    if name == base:
        return "1"
    ratios = [v / b for v, b in zip(rates[name], rates[base])]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"

if __name__ == "__main__":
    main()
