"""x4 super-resolution of MNIST digits (7 -> 28 px): PSNR and SSIM of bicubic upsampling, SRResNet and SRGAN.

    OMP_NUM_THREADS=1 LIGHTNING_GEN_DATA=/work/shared/data python benchmarks/super_resolution.py \
        [--srresnet-steps 3000] [--srgan-steps 2000] [--max-minutes 10] [--channels 32] [--blocks 8] \
        [--srgan-init srresnet|scratch] [--out runs/bench_super_resolution]

Trains ``configs/srresnet/mnist.yaml`` (pixel MSE) and then ``configs/srgan/mnist.yaml`` (pixel MSE + 1e-3
adversarial) through the CLI's parser, with the generator shrunk to ``--channels`` x ``--blocks`` residual blocks
(and the discriminator's base channels to ``--channels``) so each fits a CPU budget; each run stops at its step
count or after ``--max-minutes`` of wall time, whichever comes first. SRGAN starts from the trained SRResNet
generator as in the paper (sec. 3.2; ``--srgan-init scratch`` starts it from random weights). The low-resolution
inputs are the antialiased bicubic downsampling of the digits (the data module's pairs).

Measured on the test split (the t10k digits) with torchmetrics' ``PeakSignalNoiseRatio`` (per image, averaged) and
``StructuralSimilarityIndexMeasure`` on images mapped to [0, 1] (``data_range=1``): bicubic upsampling of the inputs,
SRResNet and SRGAN, side by side, with each run's steps and wall time.

Measured with the defaults (``OMP_NUM_THREADS=1 LIGHTNING_GEN_DATA=/work/shared/data python
benchmarks/super_resolution.py``; that copy of MNIST holds 10,000 training and 5,000 test digits; 2 shared CPU
cores, one thread):

    method                                    PSNR (dB)     SSIM   steps  fit wall (s)
    bicubic                                       14.51   0.5231       0             0
    SRResNet (pixel MSE)                          21.43   0.9274    3000           231
    SRGAN (MSE + 1e-3 adv, from SRResNet)         21.17   0.9219    2000           338

SRGAN trades a little PSNR/SSIM for the adversarial term, as in the paper's table (it is not optimized for them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lightning_gen.cli import GenerativeCLI
from lightning_gen.data import MNISTDataModule, SuperResolutionDataModule
from lightning_gen.nets import bicubic_upsample

ROOT = Path(__file__).resolve().parents[1]
SCALE = 4


def fit(family: str, steps: int, minutes: float, out: Path, channels: int, blocks: int,
        init: dict[str, torch.Tensor] | None = None) -> tuple[torch.nn.Module, int, float]:
    """Fit ``configs/<family>/mnist.yaml`` (small nets) for ``steps`` or ``minutes``; returns the model, the generator
    steps reached and the wall time of the fit."""
    args = [
        f"--config={ROOT / 'configs' / family / 'mnist.yaml'}", f"--trainer.default_root_dir={out / family}",
        f"--trainer.max_steps={steps}", f"--trainer.max_time=00:00:{int(minutes)}:{int(minutes % 1 * 60):02d}",
        "--trainer.accelerator=cpu", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={out / family}", "--trainer.enable_progress_bar=false",
        f"--model.generator.init_args.channels={channels}", f"--model.generator.init_args.num_blocks={blocks}",
    ]
    if family == "srgan":
        args += [f"--model.discriminator.init_args.base_channels={channels}"]
    cli = GenerativeCLI(args=args, run=False)
    if init is not None:
        cli.model.generator.load_state_dict(init)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.model, cli.trainer.global_step, time.perf_counter() - start


@torch.no_grad()
def measure(upscale: Callable[[torch.Tensor], torch.Tensor], data: SuperResolutionDataModule) -> tuple[float, float]:
    """PSNR (dB) and SSIM on the test pairs, images mapped to [0, 1]."""
    psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
    for batch in data.test_dataloader():
        fake, real = (upscale(batch["a"]).float() + 1) / 2, (batch["b"] + 1) / 2
        psnr.update(fake.clamp(0, 1), real)
        ssim.update(fake.clamp(0, 1), real)
    return float(psnr.compute()), float(ssim.compute())


def main() -> None:
    """Train both models and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--srresnet-steps", type=int, default=3000)
    parser.add_argument("--srgan-steps", type=int, default=2000)
    parser.add_argument("--max-minutes", type=float, default=10.0, help="wall-time cap of each fit")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--srgan-init", choices=["srresnet", "scratch"], default="srresnet")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_super_resolution"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = SuperResolutionDataModule(MNISTDataModule(batch_size=250), scale=SCALE)
    data.setup("test")
    rows = [("bicubic", *measure(lambda a: bicubic_upsample(a, SCALE), data), 0, 0.0)]
    srresnet, steps, wall = fit("srresnet", args.srresnet_steps, args.max_minutes, args.out, args.channels,
                                args.blocks)
    rows.append(("SRResNet (pixel MSE)", *measure(srresnet.upscale, data), steps, wall))
    init = {k: v.detach().clone() for k, v in srresnet.generator.state_dict().items()}
    srgan, steps, wall = fit("srgan", args.srgan_steps, args.max_minutes, args.out, args.channels, args.blocks,
                             init if args.srgan_init == "srresnet" else None)
    label = "SRGAN (MSE + 1e-3 adv" + (", from SRResNet)" if args.srgan_init == "srresnet" else ", from scratch)")
    rows.append((label, *measure(srgan.upscale, data), steps, wall))

    n = sum(b["b"].shape[0] for b in data.test_dataloader())
    print(f"\nx{SCALE} MNIST ({28 // SCALE} -> 28 px), {n} test digits; generator {args.channels} channels x "
          f"{args.blocks} blocks; PSNR/SSIM on [0, 1] images")
    print(f"{'method':40s} {'PSNR (dB)':>10s} {'SSIM':>8s} {'steps':>7s} {'fit wall (s)':>13s}")
    for name, p, s, k, w in rows:
        print(f"{name:40s} {p:10.2f} {s:8.4f} {k:7d} {w:13.0f}")


if __name__ == "__main__":
    main()
