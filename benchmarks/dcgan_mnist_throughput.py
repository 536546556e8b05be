"""DCGAN MNIST training step: a hand-written PyTorch loop against `lightning_gen.GAN` under `Trainer`, side by side.

    python benchmarks/dcgan_mnist_throughput.py [--steps 40] [--repeats 8] [--device cpu|cuda] [--batch-size 128]

Both runs use the same nets (copies of one initialization), the same in-memory data (the MNIST digits of
../shared/data, or random images when absent), the same data loader, the same Adam(2e-4, (0.5, 0.999)) optimizers and
the non-saturating loss: one discriminator step then one generator step per batch. Each repeat times the two
runs back to back, alternating which goes first, after a warm-up; the script prints generator steps/s of each
and the ratio Lightning / hand loop (goal >= 0.97).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import GAN
from lightning_gen.nets import DCGANDiscriminator, DCGANGenerator

ROOT = Path(__file__).resolve().parents[1]


def load_digits(root: Path) -> tuple[torch.Tensor, str]:
    """MNIST train images in [-1, 1] as one tensor, or random images with the same shape when absent."""
    try:
        from torchvision.datasets import MNIST

        images = MNIST(str(root), train=True, download=False).data
        return images.unsqueeze(1).float().div(127.5).sub(1.0), f"MNIST digits from {root}"
    except RuntimeError:
        return torch.rand(10_000, 1, 28, 28) * 2 - 1, "random images (MNIST not found)"


def make_loader(images: torch.Tensor, batch_size: int, device: str) -> DataLoader:
    """A shuffled loader over the in-memory images, the same for both runs."""
    return DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True, drop_last=True,
                      pin_memory=device == "cuda")


def hand_loop(G: torch.nn.Module, D: torch.nn.Module, loader: DataLoader, steps: int, device: str) -> float:
    """The plain PyTorch training loop; returns generator steps per second."""
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    G.train(), D.train()
    done = 0
    _sync(device)
    start = time.perf_counter()
    while done < steps:
        for (real,) in loader:
            real = real.to(device, non_blocking=True)
            z = torch.randn(real.shape[0], G.latent_dim, device=device)
            with torch.no_grad():
                fake = G(z)
            loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            for p in D.parameters():
                p.requires_grad_(False)
            loss_g = F.softplus(-D(G(torch.randn(real.shape[0], G.latent_dim, device=device)))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for p in D.parameters():
                p.requires_grad_(True)
            done += 1
            if done == steps:
                break
    _sync(device)
    return steps / (time.perf_counter() - start)


class _Timer(L.Callback):
    """Times training from the first batch to the end of fit (start-up and teardown excluded)."""

    def __init__(self, device: str) -> None:
        self.device, self.start, self.end = device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        if batch_idx == 0 and trainer.current_epoch == 0:
            _sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        _sync(self.device)
        self.end = time.perf_counter()


def lightning_run(G: torch.nn.Module, D: torch.nn.Module, loader: DataLoader, steps: int, device: str) -> float:
    """`lightning_gen.GAN` under `Trainer` with default settings; returns generator steps per second."""
    model = GAN(G, D, loss="nonsaturating")  # default optimizers: Adam(2e-4, (0.5, 0.999)) for both nets
    timer = _Timer(device)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return steps / (timer.end - timer.start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    """Run the comparison and print steps/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    torch.manual_seed(0)
    images, source = load_digits(args.data)
    loader = make_loader(images, args.batch_size, args.device)
    G0 = DCGANGenerator(latent_dim=100, image_size=28, channels=1).to(args.device)
    D0 = DCGANDiscriminator(image_size=28, channels=1).to(args.device)
    print(f"data: {source}; device: {args.device}; batch {args.batch_size}; {args.steps} steps x {args.repeats} repeats; "
          f"torch {torch.__version__}, lightning {L.__version__}, threads {torch.get_num_threads()}")
    runs = {"hand": hand_loop, "lightning": lightning_run}
    for fn in runs.values():  # warm-up: kernels, allocator, lazy imports
        fn(copy.deepcopy(G0), copy.deepcopy(D0), loader, args.warmup, args.device)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            torch.manual_seed(r)
            rates[name].append(runs[name](copy.deepcopy(G0), copy.deepcopy(D0), loader, args.steps, args.device))
        print(f"repeat {r}: hand {rates['hand'][-1]:.2f} steps/s, lightning {rates['lightning'][-1]:.2f} steps/s, "
              f"ratio {rates['lightning'][-1] / rates['hand'][-1]:.3f}")
    hand, light = statistics.median(rates["hand"]), statistics.median(rates["lightning"])
    ratios = [b / a for a, b in zip(rates["hand"], rates["lightning"])]
    print(f"median: hand {hand:.2f} steps/s, lightning {light:.2f} steps/s, ratio lightning/hand {light / hand:.3f}; "
          f"per-repeat ratios: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
