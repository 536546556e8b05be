"""RealNVP on MNIST: test bits/dim, classifier FID at several sampling temperatures, and 8x8 sample grids.

    OMP_NUM_THREADS=1 python benchmarks/realnvp_mnist.py --checkpoint <realnvp mnist ckpt> [--temperatures 1,0.7]
        [--num-samples 2000] [--out ../bench_out/realnvp] [--name new]
    OMP_NUM_THREADS=1 python benchmarks/realnvp_mnist.py --train-steps 300 [--config configs/realnvp/mnist.yaml]
        [--set model.init_args.flow.init_args.layout=realnvp ...] [--save <ckpt>]

Without ``--checkpoint`` it first trains the recipe (``--config``, built through the ``lightning-gen`` CLI with
every ``--set key=value`` override: its flow, dequantization, optimizer and seed; gradients clipped at the recipe's
``gradient_clip_val``; no callbacks) for ``--train-steps`` optimizer steps. The model is then scored on the MNIST test
digits: bits/dim of the dequantized bound (the first ``--num-test`` digits, fixed dequantization noise, the number
``lightning-gen test`` reports as ``test/bits_per_dim``), and for each temperature the classifier FID of
``--num-samples`` samples against as many test digits drawn at random with seed 0 (the features, reference set and
seeded sample batches of the recipe's ``GenerativeMetricsCallback``, so the FID at the recipe's temperature is its
``test/fid``), the share of samples the classifier assigns to one digit with probability >= 0.9 (a proxy for
"recognisable"; the first line gives it for the real test digits), and an 8x8 grid PNG per temperature under
``--out``.

Measured on a shared 2-core CPU (other jobs running, one thread each): the recipe's 1,500 steps through
``lightning-gen fit`` (16 min 5 s with its validation and metrics callbacks), then ``--checkpoint .../last.ckpt
--temperatures 1.0,0.9,0.8,0.7,0.6`` (64 s); and the flow of earlier versions (``layout: realnvp``, 32-channel s/t nets,
no ActNorm or 1x1 convolutions: that recipe's config) trained here for 1,500 steps (14 min 44 s with the scoring):

    flow (1,500 steps)           bits/dim   t    FID    p >= 0.9
    real test digits                    -   -      -      87.4 %
    Glow layout (the recipe)        1.673  1.0    5.12    34.3 %
                                           0.9    6.23    32.6 %
                                           0.8    7.90    30.2 %
                                           0.7   10.23    28.0 %
                                           0.6   13.22    25.5 %
    earlier RealNVP layout          2.477  1.0   39.58    14.0 %
                                           0.8   71.94     2.9 %
                                           0.7   88.61     0.4 %

Lowering the temperature makes this model's digits thinner and less varied, not cleaner: FID and the share of
confidently classified samples are best at t = 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

import lightning_gen
from lightning_gen.callbacks.images import images_to_grid
from lightning_gen.cli import GenerativeCLI
from lightning_gen.metrics import ClassifierFeatureExtractor
from lightning_gen.metrics.image import frechet_distance
from lightning_gen.modules.base import evaluation_generator

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "realnvp" / "mnist.yaml"


def build(config: Path, data: Path, overrides: list[str]) -> GenerativeCLI:
    """The recipe's model and data module (nothing runs)."""
    return GenerativeCLI(
        args=["--config", str(config), "--trainer.logger=false", f"--data.init_args.root={data}",
              "--data.init_args.download=false", "--data.init_args.num_workers=0",
              *[f"--{o}" for o in overrides]],
        run=False,
    )


def train(cli: GenerativeCLI, steps: int) -> tuple[L.Trainer, float]:
    """Fit the recipe's model for ``steps`` optimizer steps (no validation, no callbacks); return the trainer and the
    time."""
    L.seed_everything(cli.config.get("seed_everything", 1), verbose=False)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, callbacks=[],
                        gradient_clip_val=cli.trainer.gradient_clip_val, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    return trainer, time.perf_counter() - start


@torch.no_grad()
def test_bits_per_dim(model: lightning_gen.RealNVP, dataset: torch.utils.data.Dataset, n: int,
                      batch: int = 250) -> float:
    """Mean bits/dim over the first ``n`` test digits, batch ``i`` dequantized with ``evaluation_generator(i)``."""
    model.eval()
    total, count = 0.0, 0
    for i, start in enumerate(range(0, n, batch)):
        x = torch.stack([dataset[j][0] for j in range(start, min(n, start + batch))])
        total += float(model.bits_per_dim(x, generator=evaluation_generator(i)).sum())
        count += len(x)
    return total / count


def samples_at(model: lightning_gen.RealNVP, temperature: float, n: int, batch: int = 500) -> Tensor:
    """``n`` samples at ``temperature``, batch ``k`` from a generator seeded with ``k`` (as the metrics callback)."""
    model.temperature = temperature
    return torch.cat([model.sample(min(batch, n - s), generator=torch.Generator().manual_seed(s // batch))
                      for s in range(0, n, batch)])


def features_and_confidence(extractor: ClassifierFeatureExtractor, images: Tensor) -> tuple[Tensor, float]:
    """Classifier features of ``images`` and the share of them classified with probability >= 0.9."""
    parts = [extractor.extract(images[i:i + 500]) for i in range(0, len(images), 500)]
    probs = torch.cat([logits for _, logits in parts]).softmax(1)
    return torch.cat([f for f, _ in parts]), float((probs.max(1).values >= 0.9).float().mean())


def main() -> None:
    """Train or load, then print bits/dim and FID per temperature; write the grids."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a RealNVP MNIST checkpoint (`lightning-gen fit`, --save)")
    parser.add_argument("--config", type=Path, default=RECIPE)
    parser.add_argument("--set", action="append", default=[], help="CLI override key=value (repeatable)")
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--save", type=Path, help="where to save the model trained here")
    parser.add_argument("--temperatures", default="1.0,0.7")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--classifier", type=Path, default=ROOT / "checkpoints" / "mnist_classifier.pt")
    parser.add_argument("--out", type=Path, default=ROOT.parent / "bench_out" / "realnvp")
    parser.add_argument("--name", default="realnvp_mnist", help="prefix of the grid PNGs")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI below gets its own arguments
    start = time.perf_counter()

    cli = build(args.config, args.data, args.set)
    data = cli.datamodule
    if args.checkpoint is not None:
        model = lightning_gen.load_model(args.checkpoint)
        origin = f"checkpoint {args.checkpoint}"
    else:
        trainer, train_s = train(cli, args.train_steps)
        model = cli.model
        origin = f"trained here: {args.train_steps} steps in {train_s:.0f} s"
        if args.save is not None:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(args.save)
            origin += f", saved to {args.save}"
    assert isinstance(model, lightning_gen.RealNVP), type(model)
    model = model.cpu().eval()
    recipe_temperature = model.temperature
    print(f"model: {origin}; recipe temperature {recipe_temperature:g}", flush=True)

    data.setup("test")
    test_set = data.test_dataloader().dataset
    bpd = test_bits_per_dim(model, test_set, min(args.num_test, len(test_set)))
    print(f"test bits/dim ({min(args.num_test, len(test_set))} digits): {bpd:.3f}", flush=True)

    extractor = ClassifierFeatureExtractor(str(args.classifier), train_if_missing=False)
    n = args.num_samples
    chosen = sorted(torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))[:n].tolist())
    real_images = torch.stack([test_set[i][0] for i in chosen])
    real, real_confident = features_and_confidence(extractor, real_images)
    print(f"real test digits ({n}): classified with p >= 0.9: {100 * real_confident:.1f} %", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from torchvision.utils import save_image

    for t in [float(v) for v in args.temperatures.split(",") if v]:
        t0 = time.perf_counter()
        fake_images = samples_at(model, t, n)
        fake, confident = features_and_confidence(extractor, fake_images)
        fid = float(frechet_distance(real, fake))
        grid = args.out / f"{args.name}_t{t:g}.png"
        save_image(images_to_grid(fake_images[:64], nrow=8), grid)
        print(f"temperature {t:4.2f}: FID {fid:7.2f}, classified with p >= 0.9: {100 * confident:5.1f} % ({n} samples, "
              f"{time.perf_counter() - t0:.0f} s), grid {grid}", flush=True)
    model.temperature = recipe_temperature
    print(f"total {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} thread(s); "
          f"{math.prod(model.data_shape)} dims")


if __name__ == "__main__":
    main()
