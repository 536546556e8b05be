"""Tests for lightning_gen/modules/infogan.py: the generator's input, fixed codes, Q's players, the information
term falling from log k on the toy ring, the recipe through `lightning-gen`, and DDP."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_script

from lightning_gen import InfoGAN
from lightning_gen.callbacks import CodeGridCallback, CodeMetricsCallback
from lightning_gen.cli import main
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.losses import categorical_code_loss
from lightning_gen.nets import (
    DCGANGenerator,
    DCGANInfoGANDiscriminator,
    MLPDiscriminator,
    MLPGenerator,
    MLPInfoGANDiscriminator,
)

ROOT = Path(__file__).resolve().parents[2]


def make_infogan(k: int = 8, m: int = 2, noise: int = 2, hidden: int = 32, **kwargs) -> InfoGAN:
    """A small InfoGAN for 2-D toy data."""
    kwargs.setdefault("generator_optimizer", partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999)))
    kwargs.setdefault("discriminator_optimizer", partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999)))
    return InfoGAN(MLPGenerator(noise + k + m, 2, (hidden, hidden)),
                   MLPInfoGANDiscriminator(2, k, m, (hidden, hidden), (hidden,)), **kwargs)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_q_head_is_trained_by_the_generator_player_and_the_trunk_by_the_discriminator():
    model = make_infogan()
    d = model.discriminator
    gen, dis = _ids(model.players["generator"].parameters()), _ids(model.players["discriminator"].parameters())
    assert gen == _ids(model.generator.parameters()) | _ids(d.q_head.parameters())
    assert dis == _ids(d.trunk.parameters()) | _ids(d.score.parameters())
    assert not gen & dis and gen | dis == _ids(model.parameters())
    assert (model.num_categories, model.num_continuous, model.noise_dim) == (8, 2, 2)


def test_generator_input_is_noise_then_one_hot_then_continuous_codes():
    model = make_infogan(k=5, m=3, noise=4)
    z = model.noise(64, torch.Generator().manual_seed(0))
    categorical, continuous = model.current_codes
    assert z.shape == (64, 4 + 5 + 3) == (64, model.latent_dim)
    torch.testing.assert_close(z[:, 4:9], torch.nn.functional.one_hot(categorical, 5).float(), rtol=0, atol=0)
    torch.testing.assert_close(z[:, 9:], continuous, rtol=0, atol=0)
    assert float(continuous.min()) >= -1 and float(continuous.max()) <= 1 and float(continuous.abs().max()) > 0.8
    assert set(categorical.tolist()) == set(range(5))


def _inputs_of_sample(model: InfoGAN, *args, **kwargs) -> torch.Tensor:
    seen = []
    handle = model.generator.register_forward_pre_hook(lambda net, inputs: seen.append(inputs[0].clone()))
    try:
        model.sample(*args, **kwargs)
    finally:
        handle.remove()
    return seen[0]


def test_sample_with_codes_fixes_them_and_keeps_the_noise():
    model = make_infogan(k=4, m=2, noise=3)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    free = _inputs_of_sample(model, 6, generator=g())
    fixed = _inputs_of_sample(model, 6, generator=g(), codes={"categorical": 2, "continuous": torch.tensor([0.5, -2.0])})
    torch.testing.assert_close(fixed[:, :3], free[:, :3], rtol=0, atol=0)  # same noise
    assert fixed[:, 3:7].tolist() == [[0.0, 0.0, 1.0, 0.0]] * 6
    assert fixed[:, 7:].tolist() == [[0.5, -2.0]] * 6
    # per-sample categorical codes; the continuous ones left out stay the free draw's
    per = _inputs_of_sample(model, 6, generator=g(), codes={"categorical": torch.tensor([0, 1, 2, 3, 0, 1])})
    assert per[:, 3:7].argmax(1).tolist() == [0, 1, 2, 3, 0, 1] and per[:, 3:7].sum(1).tolist() == [1.0] * 6
    torch.testing.assert_close(per[:, 7:], free[:, 7:], rtol=0, atol=0)
    assert model.sample(6, generator=g(), codes={"categorical": 2}).shape == (6, 2)
    with pytest.raises(ValueError, match="unknown code names"):
        model.sample(2, codes={"style": 1})
    with pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        model.sample(2, codes={"categorical": 4})
    with pytest.raises(ValueError, match="shape"):
        model.sample(2, codes={"continuous": torch.zeros(3)})
    with pytest.raises(TypeError, match="unexpected arguments"):
        model.sample(2, labels=torch.zeros(2, dtype=torch.long))


def test_infer_codes_reads_q_in_eval_mode():
    model = make_infogan(k=3, m=2)
    x = torch.randn(10, 2)
    codes = model.infer_codes(x, batch_size=4)
    out = model.discriminator.q(x)
    assert codes["categorical"].tolist() == out.logits.argmax(1).tolist()
    torch.testing.assert_close(codes["probabilities"].sum(1), torch.ones(10))
    torch.testing.assert_close(codes["continuous"], out.means.detach())
    assert model.discriminator.training  # restored


def test_bad_builds_are_refused():
    with pytest.raises(ValueError, match="InfoGAN discriminator"):
        InfoGAN(MLPGenerator(10, 2), MLPDiscriminator(2))
    with pytest.raises(ValueError, match="latent_dim"):
        InfoGAN(MLPGenerator(8, 2), MLPInfoGANDiscriminator(2, 8, 0))
    with pytest.raises(ValueError, match="historical_averaging_weight"):
        make_infogan(historical_averaging_weight=0.1)


def test_uninformed_q_gives_a_cross_entropy_near_log_k():
    """At initialization Q's logits are small: the categorical term is log k (plus a small positive excess)."""
    torch.manual_seed(0)
    model = make_infogan(k=8, m=0)
    with torch.no_grad():
        fake = model.generator(model.noise(4096))
        ce = float(categorical_code_loss(model.discriminator.q(fake).logits, model.current_codes[0]))
    assert math.log(8) - 0.01 < ce < math.log(8) + 0.05


class _Recorder(L.Callback):
    def __init__(self) -> None:
        self.ce: list[float] = []
        self.bound: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ce.append(float(trainer.callback_metrics["train/info_categorical"]))
        self.bound.append(float(trainer.callback_metrics["train/mi_bound"]))


def test_short_fit_on_the_ring_learns_the_code(tiny_trainer_kwargs):
    L.seed_everything(0)
    torch.set_num_threads(1)
    model = make_infogan(k=8, m=0, hidden=64)
    rec, metrics = _Recorder(), CodeMetricsCallback(num_samples=800)
    data = ToyGaussiansDataModule(mixture="ring", train_size=128 * 150, val_size=512, batch_size=128)
    trainer = L.Trainer(max_steps=150, log_every_n_steps=1, num_sanity_val_steps=0, callbacks=[rec, metrics],
                        **tiny_trainer_kwargs)
    trainer.fit(model, data)
    trainer.validate(model, data, verbose=False)
    first, last = sum(rec.ce[:5]) / 5, sum(rec.ce[-10:]) / 10
    assert math.log(8) - 0.05 < first < math.log(8) + 0.1  # uninformed Q: CE = log k
    assert last < 0.5 * first  # the information term falls
    assert max(rec.bound) <= math.log(8) and rec.bound[-1] > 0.5 * math.log(8)  # bound in (log k / 2, log k]
    assert set(metrics.last) == {"val/code_accuracy", "val/sample_code_purity", "val/sample_code_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.last.values())


def test_recipe_runs_through_the_cli_and_draws_the_code_pictures(tmp_path):
    main([
        "fit", f"--config={ROOT / 'configs' / 'infogan' / 'toy_ring.yaml'}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=20", "--trainer.check_val_every_n_epoch=1", "--trainer.log_every_n_steps=5",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp_path}",
        "--data.train_size=640", "--data.val_size=256", "--data.batch_size=64",
    ])
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert ckpt["global_step"] == 20
    metrics = sorted(tmp_path.rglob("metrics.csv"))[-1].read_text()
    for key in ("val/code_accuracy", "val/sample_code_purity", "train/info_categorical", "train/mi_bound",
                "val/mi_bound", "val/modes_covered"):
        assert key in metrics, key
    assert sorted(p.name for p in tmp_path.rglob("codes_step*.png")) == ["codes_step20.png"]


def test_code_grid_rows_are_categories_and_columns_sweep_one_continuous_code():
    torch.manual_seed(0)
    model = InfoGAN(DCGANGenerator(latent_dim=6 + 3 + 2, image_size=28, channels=1, base_channels=4),
                    DCGANInfoGANDiscriminator(28, 1, 4, num_categories=3, num_continuous=2, hidden_dim=16, q_hidden_dim=8))
    grid = CodeGridCallback(continuous_index=1, steps=5, sweep=(-2.0, 2.0))
    z = grid.grid_inputs(model)
    assert z.shape == (15, 11)
    assert (z[:, :6] == z[:1, :6]).all()  # one noise vector
    assert z[:, 6:9].argmax(1).tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert z[:, 9].tolist() == [0.0] * 15 and z[:, 10].tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0] * 3
    image = grid.image(model)
    assert image.shape == (3 * 30 + 2, 5 * 30 + 2, 3) and image.dtype.name == "uint8"


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_parameters(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_infogan.py", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert ranks[0]["world_size"] == 2 and ranks[0]["global_step"] == 8
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    moved = {name: (a[name] - init[name]).abs().max().item() for name in init}
    for part in ("generator.", "discriminator.trunk.", "discriminator.score.", "discriminator.q_head."):
        assert max(v for k, v in moved.items() if k.startswith(part)) > 1e-4, part
    assert not torch.equal(ranks[0]["first_codes"], ranks[1]["first_codes"])  # ranks draw their own codes
