"""Load any model trained with `lightning-gen fit` and draw reproducible samples.

    python examples/load_and_sample.py lightning_logs/version_0/checkpoints/last.ckpt --num 2500 --out samples.pt
"""

from __future__ import annotations

import argparse

import torch

import lightning_gen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--num", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples.pt")
    args = parser.parse_args()
    model = lightning_gen.load_model(args.checkpoint)
    samples = model.sample(args.num, generator=torch.Generator().manual_seed(args.seed))
    torch.save(samples, args.out)
    print(f"{type(model).__name__}: wrote {tuple(samples.shape)} samples to {args.out}")


if __name__ == "__main__":
    main()
