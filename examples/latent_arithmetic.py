"""Latent arithmetic on a trained model: move digits from one class to another by adding class-mean differences.

    python examples/latent_arithmetic.py runs/bigan/checkpoints/last.ckpt --source 1 --target 7 --out arithmetic.png
    python examples/latent_arithmetic.py <vae or autoencoder checkpoint> --data /path/holding/MNIST --num 8

The "vector arithmetic" and "feature manipulation" of the lecture notes (Radford et al. 2016): with an encoder
(BiGAN's ``E``, an autoencoder's encoder, a VAE's posterior mean) each held-out digit ``x`` gets a code ``E(x)``, and
each class ``c`` a mean code ``m_c``. The script decodes, for ``--num`` digits of class ``--source``:

- row 1: the digits ``x``;
- row 2: their reconstructions ``G(E(x))``;
- row 3: ``G(E(x) - m_source + m_target)``, the digits moved to ``--target`` in code space;
- row 4: ``G(m_source + t (m_target - m_source))``, the walk between the two class means, ``t`` from 0 to 1.

It also prints a round-trip check that needs no classifier: the moved codes are decoded and encoded again, and the
script counts how many land nearest to ``m_target`` among the class means (and, for comparison, how many of the
original digits' codes lie nearest to ``m_source``). A model whose codes ignore the class scores near 1/10 on both.

Data: MNIST's test digits from ``--data`` (a folder holding ``MNIST/raw/``; default ``$LIGHTNING_GEN_DATA``),
mapped to the data range the model was trained on ([-1, 1] for the shipped MNIST recipes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from torch import Tensor

import lightning_gen
from lightning_gen.callbacks.images import grid_to_uint8, images_to_grid
from lightning_gen.data import MNISTDataModule


def encode(model: Any, x: Tensor) -> Tensor:
    """The code of each image: ``model.encode(x)``, or its mean when the encoder returns a distribution (VAE)."""
    if not hasattr(model, "encode"):
        raise TypeError(
            f"{type(model).__name__} has no encoder; latent arithmetic by class means needs one (BiGAN, Autoencoder, "
            "VAE, DenoisingAutoencoder)"
        )
    with torch.no_grad():
        codes = model.encode(x.to(model.device))
    return (codes[0] if isinstance(codes, tuple) else codes).float().cpu()


def decode(model: Any, z: Tensor) -> Tensor:
    """Images for codes ``z`` (``model.generate``: eval mode, no gradients)."""
    return model.generate(z.to(model.device)).float().cpu()


def class_means(codes: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The mean code of each class, ``(num_classes, latent_dim)``; every class must occur."""
    missing = [c for c in range(num_classes) if not bool((labels == c).any())]
    if missing:
        raise ValueError(f"no held-out example of classes {missing}: use more digits (--pool)")
    return torch.stack([codes[labels == c].mean(0) for c in range(num_classes)])


def nearest_class(codes: Tensor, means: Tensor) -> Tensor:
    """Index of the nearest class mean (Euclidean) for each code."""
    return torch.cdist(codes, means).argmin(1)


def arithmetic(model: Any, images: Tensor, labels: Tensor, source: int, target: int, num: int,
               num_classes: int = 10) -> dict[str, Any]:
    """The four rows of the grid and the round-trip scores (see the module docstring)."""
    codes = encode(model, images)
    means = class_means(codes, labels, num_classes)
    picked = (labels == source).nonzero().flatten()[:num]
    x, z = images[picked], codes[picked]
    moved = z - means[source] + means[target]
    t = torch.linspace(0, 1, len(picked)).unsqueeze(1)
    walk = means[source] + t * (means[target] - means[source])
    moved_images = decode(model, moved)
    return {
        "rows": [x, decode(model, z), moved_images, decode(model, walk)],
        "moved_to_target": float((nearest_class(encode(model, moved_images), means) == target).float().mean()),
        "originals_at_source": float((nearest_class(z, means) == source).float().mean()),
        "chance": 1.0 / num_classes,
    }


def save_rows(rows: list[Tensor], data_range: tuple[float, float], path: Path) -> None:
    """Write the rows (each ``(n, C, H, W)`` in ``data_range``) as one PNG grid, one row each."""
    lo, hi = data_range
    images = torch.cat([2 * (r - lo) / (hi - lo) - 1 for r in rows])  # images_to_grid takes [-1, 1]
    Image.fromarray(grid_to_uint8(images_to_grid(images, nrow=rows[0].shape[0]))).save(path)


def mnist_test_digits(root: Optional[str], pool: int, data_range: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """``pool`` MNIST test digits drawn at random (seed 0; the files may be sorted by class) in ``data_range``, and
    their labels."""
    if root is None:
        raise SystemExit("set --data or LIGHTNING_GEN_DATA to a folder holding MNIST/raw/ (the t10k files)")
    data = MNISTDataModule(root=root, batch_size=1000)
    data.prepare_data()
    data.setup("test")
    batches = list(data.test_dataloader())
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    picked = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:pool]
    images, labels = images[picked], labels[picked]
    lo, hi = data_range
    return lo + (hi - lo) * (images + 1) / 2, labels  # the data module gives [-1, 1]


def main() -> None:
    """Parse arguments, run the arithmetic on MNIST test digits, write the grid and print the scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--source", type=int, default=1)
    parser.add_argument("--target", type=int, default=7)
    parser.add_argument("--num", type=int, default=8, help="digits moved (grid columns)")
    parser.add_argument("--pool", type=int, default=2000, help="held-out digits the class means are taken over")
    parser.add_argument("--data", default=os.environ.get("LIGHTNING_GEN_DATA"))
    parser.add_argument("--out", type=Path, default=Path("latent_arithmetic.png"))
    args = parser.parse_args()
    model = lightning_gen.load_model(args.checkpoint).eval()
    data_range = tuple(getattr(model, "data_range", None) or (-1.0, 1.0))
    images, labels = mnist_test_digits(args.data, args.pool, data_range)
    result = arithmetic(model, images, labels, args.source, args.target, args.num)
    save_rows(result["rows"], data_range, args.out)
    print(f"{type(model).__name__}: {args.source} -> {args.target} over {args.pool} test digits; grid in {args.out}")
    print(f"  moved codes, decoded and re-encoded, nearest to the target's mean: {result['moved_to_target']:.2f}")
    print(f"  original codes nearest to their own class mean:                 {result['originals_at_source']:.2f}")
    print(f"  (chance: {result['chance']:.2f})")


if __name__ == "__main__":
    main()
