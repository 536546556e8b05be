"""How much FID and KID move with the samples: a trained image model against a fixed real set, at several sample
counts, over independent draws, beside the spreads a single evaluation reports.

    python benchmarks/fid_spread.py --checkpoint runs/.../last.ckpt [--config configs/dcgan/mnist.yaml]
        [--counts 1000 5000 10000] [--draws 5] [--bootstrap 20] [--classifier checkpoints/mnist_classifier.pt]

The real set is the recipe's test split (``LIGHTNING_GEN_DATA`` or ``--root``), embedded once with the recipe's small
classifier. For each sample count N, ``--draws`` independent sets of N samples (disjoint seeds) are scored; the script
prints FID and KID as mean +- standard deviation over the draws (the spread a user sees between runs of `test`), the
bootstrap ``fid_std`` of the first draw (``GenerativeMetricsCallback(fid_bootstrap=...)``) and its ``kid_std`` (the
spread of KID's subsets, not of the mean).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import lightning_gen
from lightning_gen.data import MNISTDataModule
from lightning_gen.metrics import ClassifierFeatureExtractor, frechet_distance, kernel_inception_distance

ROOT = Path(__file__).resolve().parents[1]


def embed(extractor: ClassifierFeatureExtractor, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Classifier features of images in [-1, 1], ``batch`` at a time."""
    return torch.cat([extractor.extract(images[i:i + batch])[0] for i in range(0, len(images), batch)])


def main() -> None:
    """Parse arguments, embed the real set once, score independent draws at each count, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", default=None, help="folder holding MNIST/ (default: LIGHTNING_GEN_DATA)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=20)
    parser.add_argument("--classifier", type=Path, default=ROOT / "checkpoints" / "mnist_classifier.pt")
    args = parser.parse_args()
    model = lightning_gen.load_model(args.checkpoint).eval()
    extractor = ClassifierFeatureExtractor(str(args.classifier))
    data = MNISTDataModule(root=args.root)
    data.setup("test")
    test = data.test_dataloader().dataset
    real = embed(extractor, torch.stack([test[i][0] for i in range(len(test))]))
    print(f"{args.checkpoint}: {len(real)} real test digits; {args.draws} independent draws per sample count")
    print(f"{'N':>6} {'FID mean +- sd over draws':>27} {'bootstrap fid_std':>18} {'KID mean +- sd over draws':>27} "
          f"{'kid_std (subsets)':>18}")
    for count in args.counts:
        fids, kids, kid_stds, boot = [], [], [], None
        for draw in range(args.draws):
            with torch.no_grad():
                samples = torch.cat([model.sample(min(500, count - i),
                                                  generator=torch.Generator().manual_seed(10_000 * draw + i))
                                     for i in range(0, count, 500)]).clamp(-1, 1)
            fake = embed(extractor, samples)
            fids.append(float(frechet_distance(real, fake)))
            kid, kid_std = kernel_inception_distance(real, fake, 100, min(1000, count),
                                                     generator=torch.Generator().manual_seed(0))
            kids.append(float(kid))
            kid_stds.append(float(kid_std))
            if draw == 0:
                g = torch.Generator().manual_seed(0)
                boot = statistics.stdev(float(frechet_distance(real, fake[torch.randint(count, (count,), generator=g)]))
                                        for _ in range(args.bootstrap))
        print(f"{count:>6} {statistics.mean(fids):>12.3f} +- {statistics.stdev(fids):<11.3f} {boot:>18.3f} "
              f"{statistics.mean(kids):>12.5f} +- {statistics.stdev(kids):<11.5f} {kid_stds[0]:>18.5f}")


if __name__ == "__main__":
    main()
