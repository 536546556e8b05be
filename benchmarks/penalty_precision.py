"""How far GP, DRAGAN and R1 computed under autocast (bf16, fp16 with and without a loss scale) are from fp32.

    python benchmarks/penalty_precision.py

Prints, for an MLP critic on 2-D points and a DCGAN critic on 28 px images (fixed seeds, the batches of
tests/modules/test_adversarial_precision.py), each penalty's fp32 value and the relative error of each precision.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from lightning_gen.losses import dragan_penalty, gradient_penalty, r1_penalty
from lightning_gen.nets import DCGANDiscriminator, MLPDiscriminator

SETTINGS: list[tuple[str, torch.dtype, Optional[float]]] = [
    ("bf16", torch.bfloat16, None), ("fp16", torch.float16, None),
    ("fp16 scale 2^16", torch.float16, 2.0**16), ("fp16 scale 2^10", torch.float16, 2.0**10),
]


def critic_and_batch(kind: str) -> tuple[nn.Module, Tensor, Tensor]:
    """A seeded critic with a real and a fake batch."""
    torch.manual_seed(0)
    if kind == "mlp":
        return MLPDiscriminator(2, (64, 64)), torch.randn(256, 2), torch.randn(256, 2)
    return DCGANDiscriminator(image_size=28, channels=1), torch.randn(32, 1, 28, 28), torch.randn(32, 1, 28, 28)


def relative_errors(penalty: Callable[..., Tensor], kind: str) -> tuple[float, list[float]]:
    """The fp32 value and the relative error of every setting."""
    critic, real, fake = critic_and_batch(kind)
    ref = float(penalty(critic, real, fake, generator=torch.Generator().manual_seed(1)).detach())
    errors = []
    for _, dtype, scale in SETTINGS:
        with torch.autocast("cpu", dtype=dtype):
            value = float(penalty(critic, real, fake, generator=torch.Generator().manual_seed(1), grad_scale=scale).detach())
        errors.append(abs(value - ref) / abs(ref))
    return ref, errors


def main() -> None:
    """Print one row per critic and penalty."""
    print(f"{'critic':>6} {'penalty':>17} {'fp32':>9} " + " ".join(f"{name:>16}" for name, _, _ in SETTINGS))
    for kind in ("mlp", "dcgan"):
        for penalty in (gradient_penalty, dragan_penalty, r1_penalty):
            ref, errors = relative_errors(penalty, kind)
            print(f"{kind:>6} {penalty.__name__:>17} {ref:>9.4g} " + " ".join(f"{e:>16.1e}" for e in errors))


if __name__ == "__main__":
    main()
