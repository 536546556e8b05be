"""`lightning-gen fit/test/predict` on the three StarGAN recipes (configs/stargan/*.yaml), with small nets: MNIST
domains (real digits; skipped without them), CelebA attributes (fake CelebA files) and domain folders (fake images)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightning_gen
from lightning_gen.cli import GenerativeCLI, main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data"))

from test_images import CELEBA_VALUES, SET, write_attributes, write_celeba  # noqa: E402

SMALL_NETS = ["--model.generator.init_args.base_channels=4", "--model.generator.init_args.num_residual_blocks=1",
              "--model.discriminator.init_args.base_channels=4"]


def _args(config: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"--config={ROOT / 'configs' / 'stargan' / config}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
        "--trainer.accelerator=cpu", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}", "--model.n_critic=2", *SMALL_NETS, *extra,
    ]


def _fit(args: list[str], tmp_path: Path) -> Path:
    main(["fit", *args])
    last = next(tmp_path.rglob("last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["lightning_gen_counters"]["player_steps"]["discriminator"] == 4
    assert sorted(tmp_path.rglob("domain_translations_step2.png")), "the domain grid wrote no PNG"
    assert isinstance(lightning_gen.load_model(last), lightning_gen.StarGAN)
    return last


@pytest.mark.slow
def test_mnist_domains_recipe_fits_tests_predicts_and_loads(tmp_path, mnist_root):
    args = _args("mnist_domains.yaml", tmp_path, "--trainer.val_check_interval=4", "--data.predict_size=6")
    last = _fit(args, tmp_path)
    cli = GenerativeCLI(args=["test", *args, f"--ckpt_path={last}"])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/domain_accuracy_translated"]) <= 1.0
    assert float(metrics["test/reconstruction_l1"]) > 0
    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (6, 4, 1, 28, 28) and samples.min() >= -1 and samples.max() <= 1


def test_celeba_recipe_trains_on_attributes(tmp_path):
    root = write_celeba(tmp_path / "data", CELEBA_VALUES * 2, None)
    write_attributes(root, {f"{i + 1:06d}.jpg": SET[f"{i % 8 + 1:06d}.jpg"] for i in range(16)})
    args = _args("celeba.yaml", tmp_path, f"--data.root={root}", "--data.image_size=16", "--data.crop_size=null",
                 "--data.batch_size=4", "--data.num_workers=0", "--data.val_fraction=0.25", "--data.predict_size=3",
                 "--model.discriminator.init_args.image_size=16", "--model.discriminator.init_args.num_layers=3")
    last = _fit(args, tmp_path)
    main(["predict", *args, f"--ckpt_path={last}"])
    samples = torch.load(next(tmp_path.rglob("samples.pt")), weights_only=True)
    assert samples.shape == (3, 5, 3, 16, 16)  # each face with each of the five attributes flipped


def _domain_folders(root: Path, names: list[str]) -> Path:
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((20, 20, 3), 40 * k + 5 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_folders_recipe_trains_on_domain_folders(tmp_path):
    root = _domain_folders(tmp_path / "faces", ["angry", "happy", "sad"])
    domains = ["--model.generator.init_args.num_domains=3", "--model.discriminator.init_args.num_domains=3"]
    args = _args("folders.yaml", tmp_path, f"--data.root={root}", "--data.image_size=16", "--data.batch_size=4",
                 "--data.num_workers=0", "--data.val_fraction=0.2", "--model.discriminator.init_args.image_size=16",
                 "--model.discriminator.init_args.num_layers=3", *domains)
    model = lightning_gen.load_model(_fit(args, tmp_path))
    assert model.num_domains == 3 and not model.multi_label
    each = model.translate_to_each_domain(torch.zeros(2, 3, 16, 16))
    assert each.shape == (2, 3, 3, 16, 16) and each.abs().max() <= 1  # one column per folder


def test_folders_recipe_says_how_many_domains_to_set(tmp_path):
    root = _domain_folders(tmp_path / "faces", ["angry", "happy", "sad"])
    args = _args("folders.yaml", tmp_path, f"--data.root={root}", "--data.image_size=16", "--data.num_workers=0",
                 "--model.discriminator.init_args.image_size=16", "--model.discriminator.init_args.num_layers=3")
    with pytest.raises(ValueError, match=r"3 domains \(angry, happy, sad\) but the nets have num_domains=8: set "
                                         r"`num_domains: 3`"):
        main(["fit", *args])
