"""Score matching (NCSN) on MNIST: classifier FID / KID of annealed Langevin samples, with and without the final
Tweedie denoising step, at a few steps per level, and a sample grid.

    OMP_NUM_THREADS=1 python benchmarks/score.py --checkpoint <score mnist ckpt> [--steps-per-level 5,20]
        [--num-samples 250] [--batch 125] [--grid out.png] [--data ../shared/data]
        [--classifier checkpoints/mnist_classifier.pt]

The checkpoint comes from ``lightning-gen fit --config configs/score/mnist.yaml`` (loaded with
``lightning_gen.load_model``; its EMA net samples). Each setting draws ``--num-samples`` digits (each batch of
``--batch`` from a generator seeded with the batch's index, so every setting starts from the same noise); the
chain runs once per setting and the undenoised and denoised samples are both scored (the Tweedie step
``x + sigma_min^2 s(x, sigma_min)`` costs one more net call). Scores use the small MNIST classifier of the recipe's
metrics callback (``checkpoints/mnist_classifier.pt``; trained here once if missing) against all MNIST test digits:
FID on its penultimate features and KID (mean +- std over subsets). FID with a few hundred samples is biased upwards
by the sample size: the first row is the floor at that size (as many real training digits). The toy recipes are
measured by ``benchmarks/toy_recipes.py configs/score/toy_grid.yaml`` (modes, % high quality, reverse KL).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

import lightning_gen
from lightning_gen.cli import GenerativeCLI
from lightning_gen.diffusion import AnnealedLangevinSampler
from lightning_gen.metrics import ClassifierFeatureExtractor
from lightning_gen.metrics.image import frechet_distance, kernel_inception_distance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from ddim import extract, first_images  # noqa: E402  (the same feature and data helpers as the DDIM benchmark)

RECIPE = ROOT / "configs" / "score" / "mnist.yaml"


def draw(model: lightning_gen.ScoreModel, steps: int, n: int, batch: int) -> tuple[Tensor, Tensor, float]:
    """``n`` samples by annealed Langevin dynamics with ``steps`` per level, before and after the final denoising
    step (from the same chains), and the wall time."""
    raw, denoised = [], []
    chain = AnnealedLangevinSampler(model.step_size, steps, final_denoise=False, clip_denoised=False)  # all set: used as is
    start = time.perf_counter()
    for i in range(0, n, batch):
        g = torch.Generator().manual_seed(i // batch)
        x = model.sample(min(batch, n - i), generator=g, sampler=chain) / model.data_scale  # unclamped, model space
        raw.append((x * model.data_scale).clamp(-1, 1))
        with torch.no_grad():  # the recipe's own last step: Tweedie at sigma_min, then the clamp
            level = torch.zeros(len(x), dtype=torch.long)
            x0 = chain.denoise(model.score(x, level, model.sampling_net), x)
        denoised.append((x0 * model.data_scale).clamp(-1, 1))
    return torch.cat(raw), torch.cat(denoised), time.perf_counter() - start


def main() -> None:
    """Load the model, draw with every setting, print one table, save a grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--steps-per-level", default="5,20")
    parser.add_argument("--num-samples", type=int, default=250)
    parser.add_argument("--batch", type=int, default=125)
    parser.add_argument("--grid", type=Path, default=Path("/work/bench_out/score/mnist_samples.png"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--classifier", type=Path, default=ROOT / "checkpoints" / "mnist_classifier.pt")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    start = time.perf_counter()
    cli = GenerativeCLI(args=["--config", str(RECIPE), "--trainer.logger=false", f"--data.init_args.root={args.data}",
                              "--data.init_args.download=false", "--data.init_args.num_workers=0"], run=False)
    data = cli.datamodule
    data.setup("fit")
    data.setup("test")
    model = lightning_gen.load_model(args.checkpoint).cpu().eval()
    assert isinstance(model, lightning_gen.ScoreModel), type(model)
    step = torch.load(args.checkpoint, map_location="cpu", weights_only=False).get("global_step", "?")
    print(f"model: {args.checkpoint} (step {step}); {model.ladder}; step_size {model.step_size:g}", flush=True)

    extractor = ClassifierFeatureExtractor(str(args.classifier), train_if_missing=True)
    if extractor.needs_training:
        extractor.train_on(data.train_dataloader(), data.image_shape, data.num_classes)
    real = extract(extractor, first_images(data.test_dataloader(), None))
    n = args.num_samples

    def score(name: str, images: Tensor, seconds: float | None) -> str:
        feats = extract(extractor, images)
        kid, kid_std = kernel_inception_distance(real, feats, subsets=50, subset_size=n,
                                                 generator=torch.Generator().manual_seed(0))
        wall = f"{seconds:8.1f}" if seconds is not None else f"{'-':>8}"
        line = f"{name:<36} {float(frechet_distance(real, feats)):8.2f} {float(kid):8.3f} +- {float(kid_std):6.3f} {wall}"
        print(line, flush=True)
        return line

    header = f"{'samples':<36} {'FID':>8} {'KID':>18} {'wall s':>8}"
    print(header, flush=True)
    lines = [header, score(f"real train digits (n={n})", first_images(data.train_dataloader(), n), None)]
    grid = None
    for steps in [int(k) for k in args.steps_per_level.split(",") if k]:
        raw, denoised, seconds = draw(model, steps, n, args.batch)
        calls = steps * model.ladder.num_levels
        lines.append(score(f"Langevin {steps}/level ({calls} calls)", raw, seconds))
        lines.append(score(f"  + Tweedie denoising ({calls + 1} calls)", denoised, None))
        grid = denoised[:64]
    if grid is not None:
        from lightning_gen.callbacks.images import grid_to_uint8, images_to_grid
        from PIL import Image

        args.grid.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid_to_uint8(images_to_grid(grid, 8))).save(args.grid)
        print(f"grid of the last setting's denoised samples: {args.grid}")
    print(f"\nclassifier FID / KID against the {len(real)} MNIST test digits, {n} samples per setting from the same "
          f"seeded noise; total {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} thread(s):")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
