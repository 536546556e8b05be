"""Does StarGAN learn the domains' true transforms? Train the MNIST-domains recipe, then score translations exactly.

    OMP_NUM_THREADS=1 python benchmarks/stargan.py [--steps 2000] [--data ../shared/data] [--out runs/bench_stargan]

Trains ``configs/stargan/mnist_domains.yaml`` (domains identity, rot90, invert, thicken) through ``lightning-gen fit``
for ``--steps`` generator steps (CSV logger), loads ``last.ckpt`` with :func:`lightning_gen.load_model`, and scores on
held-out test digits (each shown in its own domain, as in training), side by side:

* the L1 between ``translate(x, k)`` and the true transform of the digit into domain ``k``, per (source, target)
  pair, for the trained generator, for the same nets with freshly drawn weights (before training), and for copying
  the input unchanged (the "do nothing" baseline);
* the accuracy of a separately trained domain classifier (``ImageClassifier``, three epochs on the training split's
  domain images) on the translations, labelled with their target domains; and on real held-out domain images;
* whether a translation keeps the digit: the accuracy of a digit classifier (``ImageClassifier`` trained for two
  epochs on the training digits shown in every domain) on the translations, against the same classifier on the
  true transforms (its ceiling).

``--checkpoint <last.ckpt>`` skips training and scores that checkpoint. The shared MNIST's test digits are sorted by
class, so the scored digits are a seeded random subset (``--test-digits``, 0: all).

Writes ``<out>/stargan_translations.png`` (one row per test digit: input, then each domain; then the true
transforms) and ``<out>/stargan_results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

import lightning_gen
from lightning_gen.callbacks import images_to_grid
from lightning_gen.cli import main as cli_main
from lightning_gen.data import MNISTDomainsDataModule
from lightning_gen.metrics.classifier import classifier_accuracy, train_classifier
from lightning_gen.nets import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "stargan" / "mnist_domains.yaml"


def _train(steps: int, out: Path, data: str) -> tuple[lightning_gen.StarGAN, Path, float]:
    """Fit the recipe for ``steps`` generator steps under ``out``; return the module, its checkpoint, the wall time."""
    start = time.perf_counter()
    cli_main(["fit", f"--config={CONFIG}", f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={out}",
              "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
              "--trainer.enable_progress_bar=false", f"--data.root={data}"])
    wall = time.perf_counter() - start
    last = max(out.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    model = lightning_gen.load_model(last)
    assert isinstance(model, lightning_gen.StarGAN)
    return model.eval(), last, wall


def _untrained(ckpt: Path) -> lightning_gen.StarGAN:
    """The same nets with freshly drawn weights (PyTorch's default initialisation, seed 1): the 'before' model."""
    torch.manual_seed(1)
    fresh = lightning_gen.load_model(ckpt)
    for net in (fresh.generator, fresh.discriminator):
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return fresh.eval()


@torch.no_grad()
def _translations(model: lightning_gen.StarGAN, x: Tensor, chunk: int = 500) -> Tensor:
    """``(N, K, 1, H, W)``: every input translated into every domain."""
    return torch.cat([model.translate_to_each_domain(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def _l1_matrix(out: Tensor, truth: Tensor, source: Tensor, k: int) -> list[list[float]]:
    """Mean L1 per (source domain, target domain) pair."""
    err = (out - truth).abs().flatten(2).mean(2)  # (N, K)
    return [[float(err[source == s, t].mean()) for t in range(k)] for s in range(k)]


def _summary(matrix: list[list[float]]) -> dict[str, float]:
    k = len(matrix)
    off = [matrix[s][t] for s in range(k) for t in range(k) if s != t]
    return {"mean_all_pairs": sum(map(sum, matrix)) / k**2, "mean_other_domain": sum(off) / len(off)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default="runs/bench_stargan")
    parser.add_argument("--test-digits", type=int, default=0, help="a seeded random subset of the test digits (0: all)")
    parser.add_argument("--checkpoint", default=None, help="score this last.ckpt instead of training")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    if args.checkpoint:
        ckpt, wall = Path(args.checkpoint), float("nan")
        model = lightning_gen.load_model(ckpt).eval()
        args.steps = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    else:
        model, ckpt, wall = _train(args.steps, out, args.data)
    domains = list(yaml.safe_load(CONFIG.read_text())["data"]["init_args"]["domains"])
    dm = MNISTDomainsDataModule(root=args.data, domains=domains, batch_size=256)
    dm.setup("fit")
    digits, source, classes = dm.held_out("test")
    if args.test_digits:  # the test digits may be sorted by class: a random subset, not the first ones
        pick = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[: args.test_digits]
        digits, source, classes = digits[pick], source[pick], classes[pick]
    k = len(domains)
    x = dm.transform(digits, source)
    truth = torch.stack([dm.transform(digits, t) for t in range(k)], 1)  # (N, K, 1, H, W)

    trained = _translations(model, x)
    before = _translations(_untrained(ckpt), x)
    copied = x.unsqueeze(1).expand_as(truth)
    l1 = {name: _l1_matrix(o, truth, source, k) for name, o in
          (("trained", trained), ("untrained", before), ("copy_input", copied))}

    torch.manual_seed(0)
    classifier = ImageClassifier(28, 1, num_classes=k)
    train_classifier(classifier, dm.train_dataloader(), epochs=3, log=None)
    real_acc = classifier_accuracy(classifier, DataLoader(TensorDataset(x, source), batch_size=500))
    targets = torch.arange(k).repeat(len(x), 1)  # (N, K)
    other = targets != source.unsqueeze(1)

    def accuracy(images: Tensor) -> tuple[float, float]:
        with torch.no_grad():
            pred = torch.cat([classifier(images.flatten(0, 1)[i:i + 1000]).argmax(1)
                              for i in range(0, images.shape[0] * k, 1000)]).view(-1, k)
        hit = (pred == targets).float()
        return float(hit.mean()), float(hit[other].mean())

    # does a translation keep the digit? a digit classifier that reads digits in every domain
    train_digits, _, train_classes = dm.held_out("train")
    every_domain = torch.cat([dm.transform(train_digits, t) for t in range(k)])
    torch.manual_seed(0)
    digit_net = ImageClassifier(28, 1, num_classes=10)
    train_classifier(digit_net, DataLoader(TensorDataset(every_domain, train_classes.repeat(k)), batch_size=128,
                                           shuffle=True), epochs=2, log=None)

    def keeps_digit(images: Tensor) -> float:
        with torch.no_grad():
            flat = images.flatten(0, 1)
            pred = torch.cat([digit_net(flat[i:i + 1000]).argmax(1) for i in range(0, len(flat), 1000)])
        return float((pred == classes.repeat_interleave(k)).float().mean())

    results = {
        "steps": args.steps, "train_seconds": round(wall, 1), "config": str(CONFIG.relative_to(ROOT)),
        "domains": domains, "test_digits": len(x),
        "l1": {name: {**_summary(m), "per_pair": m} for name, m in l1.items()},
        "domain_classifier": {
            "real_held_out": real_acc,
            "trained_translations_all/other": accuracy(trained),
            "untrained_translations_all/other": accuracy(before),
        },
        "digit_classifier": {"true_transforms": keeps_digit(truth), "trained_translations": keeps_digit(trained),
                             "untrained_translations": keeps_digit(before), "copy_input": keeps_digit(copied)},
    }
    (out / "stargan_results.json").write_text(json.dumps(results, indent=1))
    show = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:8]
    rows = torch.cat([x[show].unsqueeze(1), trained[show], x[show].unsqueeze(1), truth[show]], 1)  # input|G input|truth
    grid = images_to_grid(rows.flatten(0, 1), nrow=rows.shape[1])
    from torchvision.utils import save_image

    save_image(grid, out / "stargan_translations.png")
    print(f"trained {args.steps} generator steps in {wall:.0f} s ({CONFIG.relative_to(ROOT)}, OMP_NUM_THREADS=1); "
          f"scored on {len(x)} test digits")
    for name in ("untrained", "copy_input", "trained"):
        s = results["l1"][name]
        print(f"L1 to the true transform, {name:10s}: all pairs {s['mean_all_pairs']:.4f}, "
              f"into another domain {s['mean_other_domain']:.4f}")
    print("per (source row, target column), trained:")
    for s, row in zip(domains, l1["trained"]):
        print(f"  {s:9s} " + " ".join(f"{v:.3f}" for v in row))
    dc = results["domain_classifier"]
    print(f"domain classifier: real held-out {100 * dc['real_held_out']:.2f} %; on translations (all / into another "
          f"domain): trained {100 * dc['trained_translations_all/other'][0]:.2f} / "
          f"{100 * dc['trained_translations_all/other'][1]:.2f} %, untrained "
          f"{100 * dc['untrained_translations_all/other'][0]:.2f} / {100 * dc['untrained_translations_all/other'][1]:.2f} %")
    dg = results["digit_classifier"]
    print(f"digit kept (digit classifier on the images): true transforms {100 * dg['true_transforms']:.2f} %, "
          f"trained {100 * dg['trained_translations']:.2f} %, untrained {100 * dg['untrained_translations']:.2f} %, "
          f"input copied {100 * dg['copy_input']:.2f} %")
    print(f"grid: {out / 'stargan_translations.png'}; numbers: {out / 'stargan_results.json'}")


if __name__ == "__main__":
    main()
