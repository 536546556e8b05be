"""DDIM against the full ancestral chain on the MNIST DDPM recipe: classifier FID and KID, and wall time, per sampler.

    OMP_NUM_THREADS=1 python benchmarks/ddim.py --checkpoint <ddpm mnist ckpt> [--ddim-steps 10,25,50,100] [--eta 0]
        [--respaced-steps 50] [--ancestral | --no-ancestral] [--num-samples 200] [--batch 100]
        [--data ../shared/data] [--classifier checkpoints/mnist_classifier.pt]
    OMP_NUM_THREADS=1 python benchmarks/ddim.py --train-steps 600 --save checkpoints/ddpm_mnist_600.ckpt --no-ancestral

Without ``--checkpoint`` it first trains configs/ddpm/mnist.yaml (built through the ``lightning-gen`` CLI: the
recipe's U-Net, Adam(1e-3), EMA 0.995, seed 1, gradient clipping at 1) for ``--train-steps`` optimizer steps (the
recipe runs 3,000; 800 steps took 475 s on one shared CPU thread) and, with ``--save``, keeps the checkpoint so a later
run can score it with ``--checkpoint`` (loaded with ``lightning_gen.load_model``).

Every sampler draws ``--num-samples`` digits from the same x_T (each batch of ``--batch`` from a generator seeded with
the batch's index): DDIM (Song et al. 2021) at each of ``--ddim-steps`` evenly strided steps, the respaced ancestral
chain (Nichol & Dhariwal 2021, beta_tilde) at ``--respaced-steps``, and the full ancestral chain over all T = 1000
steps (Ho et al. 2020, alg. 2, the recipe's ``beta_tilde``; ``--no-ancestral`` skips it: on one shared CPU thread
it cost 3.6 ms per digit and step, 457 s for 128 digits). The samples are scored against all MNIST test digits with
the small MNIST classifier of the recipe's metrics callback (``checkpoints/mnist_classifier.pt``; trained here once,
two epochs, if missing): classifier FID (its penultimate features) and KID (unbiased; mean and std over subsets of
``--num-samples``). FID with a few hundred samples is biased upwards by the sample size, so the first line is the
floor at that size: ``--num-samples`` real training digits against the test digits. Compare samplers with each other
and with that floor, not with the recipe's 5,000-sample FID.

Measured on a shared 2-core CPU (``--train-steps 800 --save ... --ddim-steps '' --respaced-steps '' --no-ancestral``,
8 min 13 s; then ``--checkpoint ... --num-samples 128 --batch 128``, 10 min 7 s), a model at 800 of the recipe's
3,000 steps:

    samples                      steps      FID                KID   wall s    s / 100
    real train digits (n=128)        0     1.49    0.018 +-  0.043        -          -
    DDIM eta=0                      10     5.45    0.113 +-  0.037      5.5       4.29
    DDIM eta=0                      25     4.39    0.088 +-  0.036     13.4      10.43
    DDIM eta=0                      50     4.16    0.079 +-  0.034     25.5      19.93
    DDIM eta=0                     100     4.08    0.073 +-  0.032     50.9      39.76
    respaced beta_tilde             50     3.28    0.052 +-  0.036     26.2      20.45
    ancestral beta_tilde          1000     2.61    0.032 +-  0.032    456.8     356.85

DDIM improves with steps and costs the same per step as the ancestral chain; on this undertrained model and with 128
samples (KID's subset std, +-0.035, spans DDIM's 25- to 100-step differences) the 1000-step chain scores best and the
50-step respaced chain beats 50-step DDIM, unlike Song et al.'s CIFAR-10 results on fully trained models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import lightning as L
import torch
from torch import Tensor

import lightning_gen
from lightning_gen.cli import GenerativeCLI
from lightning_gen.diffusion import AncestralSampler, DDIMSampler, DiffusionSampler, RespacedSampler
from lightning_gen.metrics import ClassifierFeatureExtractor
from lightning_gen.metrics.image import frechet_distance, kernel_inception_distance

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "ddpm" / "mnist.yaml"


def build(data: Path) -> GenerativeCLI:
    """The recipe's model and data module (nothing runs)."""
    return GenerativeCLI(
        args=["--config", str(RECIPE), "--trainer.logger=false", f"--data.init_args.root={data}",
              "--data.init_args.download=false", "--data.init_args.num_workers=0"],
        run=False,
    )


def train(cli: GenerativeCLI, steps: int) -> tuple[L.Trainer, float]:
    """Fit the recipe's model for ``steps`` optimizer steps (no validation, no callbacks); return the trainer and the
    time."""
    model = cli.model
    L.seed_everything(1, verbose=False)  # the recipe's seed
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, callbacks=[],
                        gradient_clip_val=1.0, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=cli.datamodule)
    return trainer, time.perf_counter() - start


def extract(extractor: ClassifierFeatureExtractor, images: Tensor, batch: int = 1000) -> Tensor:
    """Classifier features of ``images`` in [-1, 1], ``batch`` at a time."""
    return torch.cat([extractor.extract(images[i:i + batch].clamp(-1, 1))[0] for i in range(0, len(images), batch)])


def first_images(loader: Iterable, n: Optional[int]) -> Tensor:
    """The first ``n`` (all when ``None``) images a loader yields."""
    images, count = [], 0
    for x, _ in loader:
        images.append(x)
        count += len(x)
        if n is not None and count >= n:
            break
    return torch.cat(images)[:n]


def draw(model: lightning_gen.DDPM, sampler: DiffusionSampler, n: int, batch: int) -> tuple[Tensor, float]:
    """``n`` samples with ``sampler``, ``batch`` at a time, each batch from a generator seeded with its index (x_T is
    drawn first, so every sampler starts from the same x_T), and the wall time."""
    start = time.perf_counter()
    chunks = [model.sample(min(batch, n - i), generator=torch.Generator().manual_seed(i // batch), sampler=sampler)
              for i in range(0, n, batch)]
    return torch.cat(chunks), time.perf_counter() - start


def main() -> None:
    """Train or load the model, draw with every sampler, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a DDPM MNIST checkpoint from `lightning-gen fit` or --save")
    parser.add_argument("--train-steps", type=int, default=600, help="without --checkpoint (the recipe: 3000)")
    parser.add_argument("--save", type=Path, help="where to save the model trained here")
    parser.add_argument("--ddim-steps", default="10,25,50,100")
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--respaced-steps", default="50", help="respaced beta_tilde chains ('' for none)")
    parser.add_argument("--ancestral", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--classifier", type=Path, default=ROOT / "checkpoints" / "mnist_classifier.pt")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI below gets its own arguments (LightningCLI warns when both are present)
    start = time.perf_counter()
    torch.manual_seed(0)

    cli = build(args.data)
    data = cli.datamodule
    data.setup("fit")
    data.setup("test")
    if args.checkpoint is not None:
        model = lightning_gen.load_model(args.checkpoint)
        origin = f"checkpoint {args.checkpoint} (global step {_global_step(args.checkpoint)})"
    else:
        trainer, train_s = train(cli, args.train_steps)
        model = cli.model
        origin = f"trained here: {args.train_steps} steps in {train_s:.0f} s"
        if args.save is not None:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(args.save)
            origin += f", saved to {args.save}"
    assert isinstance(model, lightning_gen.DDPM), type(model)
    model = model.cpu().eval()
    print(f"model: {origin}; T = {model.num_timesteps}, variance {model.variance}, clip {model.clip_denoised}",
          flush=True)

    extractor = ClassifierFeatureExtractor(str(args.classifier), train_if_missing=True)
    if extractor.needs_training:
        extractor.train_on(data.train_dataloader(), data.image_shape, data.num_classes)
        print(f"classifier: trained and saved to {args.classifier}", flush=True)
    real = extract(extractor, first_images(data.test_dataloader(), None))
    n = args.num_samples

    def score(name: str, steps: int, feats: Tensor, seconds: Optional[float]) -> str:
        kid, kid_std = kernel_inception_distance(real, feats, subsets=50, subset_size=n,
                                                 generator=torch.Generator().manual_seed(0))
        wall = f"{seconds:8.1f} {100 * seconds / n:10.2f}" if seconds is not None else f"{'-':>8} {'-':>10}"
        line = (f"{name:<28} {steps:>5} {float(frechet_distance(real, feats)):8.2f} "
                f"{float(kid):8.3f} +- {float(kid_std):6.3f} {wall}")
        print(line, flush=True)
        return line

    header = f"{'samples':<28} {'steps':>5} {'FID':>8} {'KID':>18} {'wall s':>8} {'s / 100':>10}"
    print(header, flush=True)
    train_feats = extract(extractor, first_images(data.train_dataloader(), n))
    lines = [header, score(f"real train digits (n={n})", 0, train_feats, None)]
    runs: list[tuple[str, DiffusionSampler]] = [
        (f"DDIM eta={args.eta:g}", DDIMSampler(int(k), eta=args.eta)) for k in args.ddim_steps.split(",") if k
    ]
    runs += [("respaced beta_tilde", RespacedSampler(int(k), "beta_tilde"))
             for k in args.respaced_steps.split(",") if k]
    if args.ancestral:
        runs.append((f"ancestral {model.variance}", AncestralSampler()))
    for name, sampler in runs:
        samples, seconds = draw(model, sampler, n, args.batch)
        steps = sampler.num_steps or model.num_timesteps
        lines.append(score(name, steps, extract(extractor, samples), seconds))

    print(f"\nclassifier FID / KID against the {len(real)} MNIST test digits, {n} samples per sampler from the same "
          f"seeded x_T; {origin}; total {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} thread(s):")
    print("\n".join(lines))


def _global_step(path: Path) -> object:
    """The optimizer step a checkpoint was saved at."""
    return torch.load(path, map_location="cpu", weights_only=False).get("global_step", "?")


if __name__ == "__main__":
    main()
