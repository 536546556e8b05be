"""What `lightning-gen` does with --ckpt_path, trainer options of manual-optimization modules, missing weights and
custom data modules (lightning_gen/cli.py), on tiny inline configs (a couple of seconds each)."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import lightning_gen
from lightning_gen.cli import DEFAULT_PREDICT_SAMPLES, GenerativeCLI, main
from lightning_gen.modules.base import NonFiniteLossError
from lightning_gen.nets import MLPDiscriminator, MLPGenerator

MLP = "lightning_gen.nets."
GAN_MODEL = {
    "class_path": "lightning_gen.WGANGP",
    "init_args": {
        "n_critic": 2,
        "gp_weight": 0.1,
        "generator": {"class_path": MLP + "MLPGenerator", "init_args": {"latent_dim": 2, "output_shape": 2,
                                                                        "hidden_dims": [16]}},
        "discriminator": {"class_path": MLP + "MLPDiscriminator", "init_args": {"input_shape": 2,
                                                                                "hidden_dims": [16]}},
    },
}
FLOW_MODEL = {
    "class_path": "lightning_gen.RealNVP",
    "init_args": {"flow": {"class_path": MLP + "VectorRealNVP",
                           "init_args": {"dim": 2, "num_couplings": 2, "hidden_dims": [16]}}},
}
# 256 points in batches of 64: 4 batches (critic micro-batches) per epoch
TOY_DATA = {"class_path": "lightning_gen.data.ToyGaussiansDataModule",
            "init_args": {"mixture": "ring", "train_size": 256, "val_size": 64, "batch_size": 64}}


def _config(tmp_path: Path, model: dict[str, Any], data: dict[str, Any] = TOY_DATA, **trainer: Any) -> Path:
    """A tiny config file: CPU, no logger, no progress bar, last.ckpt at every epoch end and at the end."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": 2, "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "limit_val_batches": 0, "default_root_dir": str(tmp_path),
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(tmp_path / "checkpoints"), "save_last": True}}],
            **trainer,
        },
        "model": model,
        "data": data,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _differences(record: list[warnings.WarningMessage]) -> list[str]:
    """The lines 'key: old in the checkpoint -> new now' of the warnings recorded."""
    return [line.strip() for w in record for line in str(w.message).splitlines() if "in the checkpoint ->" in line]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WGAN-GP run with n_critic 2 stopped at generator step 2 (4 critic steps): its last.ckpt."""
    root = tmp_path_factory.mktemp("gan_run")
    main(["fit", f"--config={_config(root, GAN_MODEL)}"])
    last = root / "checkpoints" / "last.ckpt"
    ckpt = _load(last)
    assert ckpt["global_step"] == 2 and ckpt["lightning_gen_counters"]["player_steps"]["discriminator"] == 4
    return last


def _resume_args(tmp_path: Path, gan_run: Path, *extra: str) -> list[str]:
    ckpt = tmp_path / "resume_from.ckpt"
    shutil.copy(gan_run, ckpt)
    return ["fit", f"--config={_config(tmp_path, GAN_MODEL)}", f"--ckpt_path={ckpt}", *extra]


# -- point 3: resume does what was asked ---------------------------------------------------------------------------
def test_resume_applies_a_changed_model_setting_and_lists_it(gan_run, tmp_path):
    with pytest.warns(UserWarning) as record:
        main(_resume_args(tmp_path, gan_run, "--model.n_critic=3", "--trainer.max_steps=4"))
    assert _differences(record) == ["model.n_critic: 2 in the checkpoint -> 3 now"]
    ckpt = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["n_critic"] == 3
    # 4 critic steps before the resume, then generator steps at critic steps 6 and 9 (n_critic 2 would give 8)
    assert ckpt["global_step"] == 4
    assert ckpt["lightning_gen_counters"]["player_steps"] == {"generator": 4, "discriminator": 9}


def test_resume_extends_a_run_with_max_steps_without_listing_differences(gan_run, tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        main(_resume_args(tmp_path, gan_run, "--trainer.max_steps=4"))
    assert _differences(record) == []
    ckpt = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert ckpt["lightning_gen_counters"]["player_steps"] == {"generator": 4, "discriminator": 8}


def test_resume_at_max_steps_says_there_is_nothing_to_train(gan_run, tmp_path):
    with pytest.warns(UserWarning, match=r"already at step 2 and --trainer.max_steps is 2: there is nothing left to "
                                         r"train\. Pass a larger --trainer.max_steps"):
        main(_resume_args(tmp_path, gan_run))


def test_weights_that_do_not_fit_the_configured_model_name_the_differing_setting(gan_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main([*_resume_args(tmp_path, gan_run), "--model.generator.init_args.hidden_dims=[8]"])
    assert err.value.code == 2
    text = capsys.readouterr().err
    assert "do not fit the configured model" in text
    assert "model.generator.hidden_dims: [16] in the checkpoint, [8] now" in text


def test_resume_lists_changed_trainer_options_of_a_likelihood_module_and_applies_them(tmp_path):
    # automatic optimization: Lightning's own clipping and accumulation keep working through --trainer.*
    config = _config(tmp_path, FLOW_MODEL, gradient_clip_val=10.0, accumulate_grad_batches=2)
    main(["fit", f"--config={config}"])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert _load(last)["global_step"] == 2
    assert _load(last)["lightning_gen_trainer_settings"]["gradient_clip_val"] == 10.0
    with pytest.warns(UserWarning) as record:
        cli = GenerativeCLI(args=["fit", f"--config={config}", f"--ckpt_path={last}", "--trainer.max_steps=3",
                                  "--trainer.gradient_clip_val=5.0"])
    assert _differences(record) == ["trainer.gradient_clip_val: 10.0 in the checkpoint -> 5.0 now"]
    assert cli.trainer.gradient_clip_val == 5.0 and cli.trainer.accumulate_grad_batches == 2
    assert cli.trainer.global_step == 3


# -- point 7: Lightning's trainer options on manual-optimization modules ---------------------------------------------
def test_trainer_clipping_and_accumulation_become_the_adversarial_modules_own(tmp_path):
    config = _config(tmp_path, GAN_MODEL, max_steps=1)
    cli = GenerativeCLI(args=["fit", f"--config={config}", "--trainer.gradient_clip_val=0.5",
                              "--trainer.gradient_clip_algorithm=value", "--trainer.accumulate_grad_batches=2"])
    model = cli.model
    assert (model.gradient_clip_val, model.gradient_clip_algorithm, model.accumulate_grad_batches) == (0.5, "value", 2)
    assert cli.trainer.gradient_clip_val is None and cli.trainer.accumulate_grad_batches == 1
    # 2 micro-batches per critic step, n_critic 2: one generator step after 4 batches, 2 critic steps
    assert model.player_steps == {"generator": 1, "discriminator": 2}
    hparams = _load(tmp_path / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert (hparams["gradient_clip_val"], hparams["accumulate_grad_batches"]) == (0.5, 2)


def test_trainer_and_model_clipping_that_disagree_stop_naming_the_model_option(tmp_path, capsys):
    config = _config(tmp_path, GAN_MODEL)
    with pytest.raises(SystemExit) as err:
        main(["fit", f"--config={config}", "--trainer.gradient_clip_val=0.5", "--model.gradient_clip_val=1.0"])
    assert err.value.code == 2
    text = capsys.readouterr().err
    assert "--trainer.gradient_clip_val is 0.5 but --model.gradient_clip_val is 1.0" in text
    assert "Set only --model.gradient_clip_val" in text
    assert not (tmp_path / "checkpoints").exists()


def test_non_finite_error_of_an_adversarial_module_says_where_clipping_is_set():
    gan = lightning_gen.WGANGP(generator=MLPGenerator(2, 2, [4]), discriminator=MLPDiscriminator(2, [4]))
    gan._trainer = SimpleNamespace(world_size=1, global_step=0, checkpoint_callback=None)
    with pytest.raises(NonFiniteLossError, match=r"gradient clipping \(`--model\.gradient_clip_val 1\.0`"):
        gan.check_finite(torch.tensor(float("nan")), "discriminator")


# -- point 4: predict / validate / test without weights --------------------------------------------------------------
def test_predict_without_a_checkpoint_stops_unless_untrained_is_asked_for(tmp_path, capsys):
    config = _config(tmp_path, GAN_MODEL)
    with pytest.raises(SystemExit) as err:
        main(["predict", f"--config={config}"])
    assert err.value.code == 2
    text = capsys.readouterr().err
    assert "predict needs trained weights: pass the checkpoint of a run with --ckpt_path" in text
    assert "add --untrained true" in text
    assert not (tmp_path / "samples.pt").exists()

    main(["predict", f"--config={config}", "--untrained=true", "--num_samples=10"])
    assert torch.load(tmp_path / "samples.pt", weights_only=True).shape == (10, 2)


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_without_a_checkpoint_warn_once(subcommand, tmp_path):
    config = _config(tmp_path, GAN_MODEL, limit_val_batches=1, limit_test_batches=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        main([subcommand, f"--config={config}"])
    ours = [str(w.message) for w in record if "--ckpt_path" in str(w.message)]
    assert len(ours) == 1
    assert ours[0].startswith(f"lightning-gen {subcommand}: no --ckpt_path given, so this evaluates the configured "
                              "model with untrained")


# -- point 8: checkpoint errors name the file; custom data without predict_dataloader --------------------------------
class PointsWithoutPredictLoader(L.LightningDataModule):
    """A user's data module with only a training loader."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        """Random 2-D points."""
        return DataLoader(torch.randn(64, 2), batch_size=self.batch_size)


CUSTOM_DATA = {"class_path": f"{__name__}.PointsWithoutPredictLoader", "init_args": {"batch_size": 32}}


def test_custom_data_module_without_predict_dataloader_predicts(gan_run, tmp_path, capsys):
    config = _config(tmp_path, GAN_MODEL, data=CUSTOM_DATA)
    main(["predict", f"--config={config}", f"--ckpt_path={gan_run}"])
    assert f"PointsWithoutPredictLoader has no predict_dataloader, so WGANGP draws {DEFAULT_PREDICT_SAMPLES}" in (
        capsys.readouterr().out)
    assert torch.load(tmp_path / "samples.pt", weights_only=True).shape == (DEFAULT_PREDICT_SAMPLES, 2)
    # --num_samples draws as many as asked, with this data module or a built-in one
    main(["predict", f"--config={config}", f"--ckpt_path={gan_run}", "--num_samples=37"])
    assert torch.load(tmp_path / "samples.pt", weights_only=True).shape == (37, 2)
    main(["predict", f"--config={_config(tmp_path, GAN_MODEL)}", f"--ckpt_path={gan_run}", "--num_samples=5"])
    assert torch.load(tmp_path / "samples.pt", weights_only=True).shape == (5, 2)


def _rewritten(gan_run: Path, path: Path, edit: Any) -> Path:
    ckpt = _load(gan_run)
    edit(ckpt["hyper_parameters"])
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("where", ["model", "generator"])
def test_a_class_that_cannot_be_imported_is_named_with_the_file(where, gan_run, tmp_path, capsys):
    def edit(hparams: dict[str, Any]) -> None:
        if where == "model":
            hparams["_class_path"] = "my_gans.RelativisticGAN"
        else:
            hparams["generator"]["class_path"] = "my_gans.nets.Generator"

    path = _rewritten(gan_run, tmp_path / "custom.ckpt", edit)
    class_path = "my_gans.RelativisticGAN" if where == "model" else "my_gans.nets.Generator"
    expected = (f"The checkpoint {str(path)!r} names the class {class_path!r} (for "
                f"{'model' if where == 'model' else 'model.generator'}), but its module cannot be imported "
                "(No module named 'my_gans')")
    with pytest.raises(ModuleNotFoundError) as err:
        lightning_gen.load_model(path)
    assert str(err.value).startswith(expected) and "my_gans.py" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one exception, not a chain

    with pytest.raises(SystemExit):
        main(["predict", f"--config={_config(tmp_path, GAN_MODEL)}", f"--ckpt_path={path}"])
    assert f"lightning-gen: error: --ckpt_path: {expected}" in capsys.readouterr().err


def test_a_class_missing_from_its_module_is_named(gan_run, tmp_path):
    path = _rewritten(gan_run, tmp_path / "main.ckpt", lambda h: h.update(_class_path="__main__.MyGAN"))
    with pytest.raises(ImportError, match=re.escape(
            f"{str(path)!r} names the class '__main__.MyGAN' (for model), but module '__main__' has no 'MyGAN': it "
            "was defined in a script")):
        lightning_gen.load_model(path)


def test_a_truncated_checkpoint_is_named(gan_run, tmp_path, capsys):
    path = tmp_path / "truncated.ckpt"
    data = gan_run.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = re.escape(f"Cannot read the checkpoint {str(path)!r} (") + r"[^\n]+" + re.escape(
        "). The file is truncated (e.g. a run killed while saving it) or not a Lightning checkpoint")
    with pytest.raises(RuntimeError, match=message):
        lightning_gen.load_model(path)
    with pytest.raises(SystemExit):
        main(["fit", f"--config={_config(tmp_path, GAN_MODEL)}", f"--ckpt_path={path}"])
    assert re.search("lightning-gen: error: --ckpt_path: " + message, capsys.readouterr().err)
