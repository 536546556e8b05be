"""The ``lightning-gen`` command: LightningCLI over every generative module and data module."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader

import lightning_gen.callbacks  # noqa: F401  (makes callback class paths resolvable)
import lightning_gen.data  # noqa: F401
import lightning_gen.loggers  # noqa: F401  (lightning_gen.loggers.WandbLogger)
import lightning_gen.nets  # noqa: F401
from lightning_gen.callbacks.predictions import SampleWriter
from lightning_gen.callbacks.progress import StepProgressBar, run_summary
from lightning_gen.modules.adversarial import AdversarialModule
from lightning_gen.modules.base import (
    TRAINER_SETTINGS_KEY, GenerativeModule, import_checkpoint_classes, is_sharded_checkpoint, read_checkpoint,
    trainer_settings,
)

__all__ = ["DEFAULT_PREDICT_SAMPLES", "GenerativeCLI", "SaveAndLogConfigCallback", "UsageError", "main"]

DEFAULT_PREDICT_SAMPLES = 1000  # `predict` draws this many when the data module has no predict_dataloader
# trainer options that manual-optimization modules take as their own arguments, with the trainer's defaults
_MANUAL_OPTIMIZATION_OPTIONS = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "accumulate_grad_batches": 1}


class UsageError(ValueError):
    """A command that cannot do what it was asked; ``lightning-gen`` prints the message (no traceback), exits 2."""


class SaveAndLogConfigCallback(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the log dir (as Lightning does) and also sends it, as a nested
    dict under the key ``"config"``, to every logger of the trainer through ``log_hyperparams`` (W&B run config,
    CSV/TensorBoard ``hparams.yaml``, ...). With no logger only the file is written."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Log the full config to each attached logger (called on rank zero only)."""
        if not trainer.loggers:
            return
        # the same serialisation as config.yaml (class paths, paths as strings, None values kept), as a nested dict
        config = json.loads(self.parser.dump(self.config, format="json", skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class GenerativeCLI(LightningCLI):
    """LightningCLI in subclass mode for models (any :class:`GenerativeModule`) and data modules.

    ``--ckpt_path``: the settings you give win. ``fit``, ``validate``, ``test`` and ``predict`` build the model from
    your config and command line (Lightning's CLI would silently replace the whole model config with the
    checkpoint's hyperparameters), then load the checkpoint's weights (and, for ``fit``, its optimizer states and
    counters) into it. Any model setting that differs from the checkpoint's is listed in one warning (checkpoint
    value -> this run's value), and so, for ``fit``, are the trainer options that change a training step
    (``accumulate_grad_batches``, ``gradient_clip_val``, ``gradient_clip_algorithm``, ``precision``). A resumed run
    with changed settings does not repeat the uninterrupted one. ``--trainer.max_steps`` extends a run; a
    ``max_steps`` the checkpoint has already reached is reported. If the weights do not fit the configured model,
    the error lists the differing settings. Checkpoint errors (missing, truncated, a class that cannot be imported)
    name the file.

    Manual-optimization modules (:class:`~lightning_gen.modules.adversarial.AdversarialModule`: the GANs, Pix2Pix,
    CycleGAN) clip and accumulate per player: ``--trainer.gradient_clip_val``, ``--trainer.gradient_clip_algorithm``
    and ``--trainer.accumulate_grad_batches`` are moved onto the model's own arguments (``--model.gradient_clip_val``
    ...) before it is built; giving both with different values is an error.

    ``predict`` needs ``--ckpt_path`` (or ``--untrained true`` to draw from an untrained model on purpose); ``validate``
    and ``test`` without it warn. ``predict --num_samples N`` draws N samples; without it the data module's
    ``predict_dataloader`` decides, and a data module without one gets :data:`DEFAULT_PREDICT_SAMPLES`.

    The resolved config is saved to ``<log_dir>/config.yaml`` and logged to every logger under ``"config"``
    (:class:`SaveAndLogConfigCallback`). ``predict`` writes the drawn samples to ``<log_dir>/samples.pt`` unless the
    config already has a prediction writer (``lightning_gen.callbacks.SampleWriter`` with ``output_path`` chooses the
    file). Every run shows a :class:`~lightning_gen.callbacks.StepProgressBar` (generator steps, losses) unless the
    config names another progress bar or sets ``enable_progress_bar: false``; ``fit``, ``validate`` and ``test`` end
    with :func:`~lightning_gen.callbacks.run_summary` (last metrics, log dir, checkpoints, pictures).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_callback", SaveAndLogConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(GenerativeModule, L.LightningDataModule, *args, **kwargs)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
        """Lightning's subcommand parser; ``predict`` also gets ``--untrained`` and ``--num_samples``."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument("--untrained", type=bool, default=False,
                                help="Draw from the configured model without --ckpt_path (untrained weights).")
            parser.add_argument("--num_samples", type=Optional[int], default=None,
                                help="Samples to draw (default: the data module's predict_dataloader, or "
                                     f"{DEFAULT_PREDICT_SAMPLES} when it has none).")
        return parser

    def _parse_ckpt_path(self) -> None:
        """Read ``--ckpt_path`` (errors name the file) and keep the model config you gave (see the class docstring);
        the checkpoint's hyperparameters, parsed as a config, are only compared with it."""
        self._checkpoint: dict[str, Any] = {}
        self._checkpoint_model: Optional[dict[str, Any]] = None
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or "://" in str(ckpt_path) or str(ckpt_path).startswith(("registry", "hpc")) or (
            str(ckpt_path) in ("best", "last")
        ):
            return  # no file, or one Lightning resolves itself
        try:
            checkpoint = read_checkpoint(ckpt_path)
            hparams = dict(checkpoint.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            import_checkpoint_classes(hparams, ckpt_path)
        except (OSError, RuntimeError, ImportError) as err:
            raise UsageError(f"--ckpt_path: {err}") from err
        self._checkpoint = {"path": str(ckpt_path), "global_step": checkpoint.get("global_step"),
                            "trainer": checkpoint.get(TRAINER_SETTINGS_KEY)}
        del checkpoint
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        exit_on_error, self.parser.exit_on_error = self.parser.exit_on_error, False
        try:
            from_checkpoint = self.parser.parse_object({subcommand: {"model": hparams}}, self.config.clone())
        except (Exception, SystemExit) as err:
            raise UsageError(
                f"--ckpt_path: the model hyperparameters saved in {str(ckpt_path)!r} do not parse with the installed "
                f"classes: {err}"
            ) from err
        finally:
            self.parser.exit_on_error = exit_on_error
        self._checkpoint_model = self._model_config(from_checkpoint)

    def _model_config(self, config: Any) -> dict[str, Any]:
        """The ``model`` section of a parsed config as plain data (what ``config.yaml`` holds)."""
        return json.loads(self.parser.dump(config, format="json"))[config["subcommand"]]["model"]

    def before_instantiate_classes(self) -> None:
        """Move trainer options onto a manual-optimization model, check that ``predict`` has weights, and compare the
        model config with ``--ckpt_path``'s."""
        if self.subcommand is None:
            return
        self._move_trainer_options_to_model()
        self._require_weights()
        self._model_differences = (
            _differences(_flatten(self._checkpoint_model, "model"), _flatten(self._model_config(self.config), "model"))
            if self._checkpoint_model is not None else {}
        )

    def _move_trainer_options_to_model(self) -> None:
        """``--trainer.gradient_clip_val`` / ``gradient_clip_algorithm`` / ``accumulate_grad_batches`` become the
        arguments of an :class:`AdversarialModule` (Lightning rejects them with manual optimization)."""
        config = self.config[self.subcommand]
        model_class = _import_class(config.model.get("class_path")) if config.get("model") else None
        if not (isinstance(model_class, type) and issubclass(model_class, AdversarialModule)):
            return
        for key, trainer_default in _MANUAL_OPTIMIZATION_OPTIONS.items():
            value = config.trainer.get(key)
            if value == trainer_default or (key == "gradient_clip_val" and value == 0):
                config.trainer[key] = trainer_default
                continue
            name = model_class.__name__
            default = _init_default(model_class, key)
            if default is inspect.Parameter.empty or key not in (config.model.get("init_args") or {}):
                raise UsageError(
                    f"--trainer.{key}: {name} uses manual optimization, which Lightning's {key} does not support, and "
                    f"{name} takes no `{key}` argument to do it itself. Drop --trainer.{key}."
                )
            current = config.model.init_args[key]
            if current != default and current != value:
                raise UsageError(
                    f"--trainer.{key} is {value} but --model.{key} is {current}: {name} uses manual optimization and "
                    f"does this itself, per player, through --model.{key}. Set only --model.{key}."
                )
            config.model.init_args[key] = value
            config.trainer[key] = trainer_default

    def _require_weights(self) -> None:
        """``predict`` without ``--ckpt_path`` stops unless ``--untrained true``; ``validate`` and ``test`` warn."""
        config = self.config[self.subcommand]
        if self.subcommand not in ("predict", "validate", "test") or config.get("ckpt_path"):
            return
        if self.subcommand == "predict" and not config.get("untrained"):
            raise UsageError(
                "predict needs trained weights: pass the checkpoint of a run with --ckpt_path (e.g. --ckpt_path "
                "lightning_logs/version_0/checkpoints/last.ckpt). To draw from the configured, untrained model on "
                "purpose, add --untrained true."
            )
        if self.subcommand != "predict":
            rank_zero_warn(
                f"lightning-gen {self.subcommand}: no --ckpt_path given, so this evaluates the configured model with "
                "untrained (freshly initialized) weights. Pass a trained run's checkpoint with --ckpt_path (e.g. "
                "lightning_logs/version_0/checkpoints/last.ckpt).", category=UserWarning,
            )

    def _warn_settings_differ(self) -> None:
        """One warning listing the settings that differ from ``--ckpt_path``'s (trainer options only for ``fit``)."""
        differences = dict(self._model_differences)
        recorded = self._checkpoint.get("trainer")
        if self.subcommand == "fit" and recorded:
            now = trainer_settings(self.trainer)
            differences.update(_differences({f"trainer.{k}": v for k, v in recorded.items()},
                                            {f"trainer.{k}": now[k] for k in recorded if k in now}))
        if not differences:
            return
        listing = "".join(f"\n  {key}: {_show(old)} in the checkpoint -> {_show(new)} now"
                          for key, (old, new) in differences.items())
        path = self._checkpoint["path"]
        saved = Path(path).resolve().parent.parent / "config.yaml"
        keep = f" or pass the run's saved config (--config {saved})" if saved.is_file() else ""
        if self.subcommand == "fit":
            rank_zero_warn(
                f"Resuming from {path!r} with settings that differ from the checkpoint's; this run uses yours:{listing}"
                "\nWeights, optimizer states and step counters come from the checkpoint; with these changes the run "
                f"will not repeat the uninterrupted one. To keep the checkpoint's settings, drop these options{keep}.",
                category=UserWarning,
            )
        else:
            rank_zero_warn(
                f"{self.subcommand}: the model settings differ from those saved in {path!r}; this run uses yours:"
                f"{listing}\nThe weights come from the checkpoint. To use the checkpoint's settings, drop these "
                f"options{keep}.", category=UserWarning,
            )

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the subcommand; if the checkpoint's weights do not fit the configured model, say which settings differ."""
        try:
            super()._run_subcommand(subcommand)
        except RuntimeError as err:
            if "Error(s) in loading state_dict" not in str(err) or not self._model_differences:
                raise
            listing = "".join(f"\n  {key}: {_show(old)} in the checkpoint, {_show(new)} now"
                              for key, (old, new) in self._model_differences.items())
            raise UsageError(
                f"The weights in {self._checkpoint['path']!r} do not fit the configured model, whose settings differ "
                f"from the checkpoint's:{listing}\nPass the checkpoint's values for the nets' settings (or the run's "
                f"saved config.yaml). Loading said: {str(err).splitlines()[0]}"
            ) from err

    def _gather_sharded_checkpoint(self) -> None:
        """A sharded checkpoint folder given to a run that is not sharded: evaluate the weights gathered into one
        file (a temporary copy); resuming ``fit`` from one needs the sharded strategy that wrote it."""
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if not ckpt_path or not is_sharded_checkpoint(ckpt_path):
            return
        from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

        if isinstance(self.trainer.strategy, (ModelParallelStrategy, FSDPStrategy)):
            return  # the strategy reads its own shards
        if self.subcommand == "fit":
            raise UsageError(
                f"--ckpt_path {str(ckpt_path)!r} is a sharded checkpoint folder: resume it under the sharded strategy "
                "that wrote it (docs/scaling.md), or save single-file checkpoints with "
                "`--trainer.strategy.save_distributed_checkpoint false`. test, validate and predict read it anywhere."
            )
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="lightning_gen_gathered_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        gathered = Path(folder) / "gathered.ckpt"
        torch.save(read_checkpoint(ckpt_path), gathered)
        self.config_init[self.subcommand]["ckpt_path"] = str(gathered)

    def before_fit(self) -> None:
        """List settings that differ from ``--ckpt_path``'s; warn when the checkpoint already reached ``max_steps``."""
        self._gather_sharded_checkpoint()
        self._warn_settings_differ()
        done, max_steps = self._checkpoint.get("global_step"), self.trainer.max_steps
        if done is not None and max_steps is not None and max_steps >= 0 and done >= max_steps:
            rank_zero_warn(
                f"{self._checkpoint['path']!r} is already at step {done} and --trainer.max_steps is {max_steps}: there "
                "is nothing left to train. Pass a larger --trainer.max_steps to extend the run.", category=UserWarning,
            )

    def before_validate(self) -> None:
        """List model settings that differ from ``--ckpt_path``'s."""
        self._gather_sharded_checkpoint()
        self._warn_settings_differ()

    def before_test(self) -> None:
        """List model settings that differ from ``--ckpt_path``'s."""
        self._gather_sharded_checkpoint()
        self._warn_settings_differ()

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with a :class:`StepProgressBar` unless the config names a progress bar or turns it off."""
        config = self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}
        listed = kwargs.get("callbacks", config.get("callbacks")) or []
        listed = list(listed) if isinstance(listed, (list, tuple)) else [listed]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in listed):
            kwargs["callbacks"] = [*listed, StepProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def _print_summary(self, stage: str) -> None:
        if self.trainer.is_global_zero:
            print(run_summary(self.trainer, stage), flush=True)

    def after_fit(self) -> None:
        """Print the step reached, the last metrics and where the logs, checkpoints and pictures are."""
        self._print_summary("fit")

    def after_validate(self) -> None:
        """Print the last metrics and where the logs and pictures are."""
        self._print_summary("validate")

    def after_test(self) -> None:
        """Print the last metrics and where the logs and pictures are."""
        self._print_summary("test")

    def before_predict(self) -> None:
        """Attach a :class:`SampleWriter` when the config names no prediction writer; choose how many samples."""
        self._gather_sharded_checkpoint()
        self._warn_settings_differ()
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(SampleWriter())
        self._predict_loader = self._sample_index_loader()
        if self._predict_loader is not None and self.datamodule is not None:
            self._detached_datamodule_for_writers()

    def _detached_datamodule_for_writers(self) -> None:
        """With ``--num_samples`` the trainer runs without the data module, so Lightning neither restores its state
        from the checkpoint nor shows it to the :class:`SampleWriter`: do both here (the writer maps samples to data
        units with the data module's ``inverse_transform``, e.g. a TabularDataModule's column statistics)."""
        datamodule = self.datamodule
        ckpt_path = self._checkpoint.get("path")
        if ckpt_path and is_overridden("load_state_dict", datamodule, L.LightningDataModule):
            state = read_checkpoint(ckpt_path).get(type(datamodule).__qualname__)
            if state is not None:
                datamodule.load_state_dict(state)
        for callback in self.trainer.callbacks:
            if isinstance(callback, SampleWriter) and callback.datamodule is None:
                callback.datamodule = datamodule

    def _sample_index_loader(self) -> Optional[DataLoader]:
        """A loader of ``--num_samples`` indices (one sample drawn per index), or ``None`` to use the data module's
        ``predict_dataloader``; a data module without one gets :data:`DEFAULT_PREDICT_SAMPLES`."""
        num_samples = self.config["predict"].get("num_samples")
        source = self.datamodule if self.datamodule is not None else self.model
        has_loader = is_overridden("predict_dataloader", source)
        name = type(self.model).__name__
        if getattr(self.model, "translates_inputs", False):
            if num_samples is not None or not has_loader:
                raise UsageError(
                    f"{name} translates the data module's inputs, so it cannot draw samples from noise alone: "
                    + ("drop --num_samples (the data module's predict_size, if it has one, sets how many)."
                       if has_loader else f"{type(source).__name__} needs a predict_dataloader of input images.")
                )
            return None
        if num_samples is None and has_loader:
            return None
        if num_samples is not None and num_samples < 1:
            raise UsageError(f"--num_samples must be at least 1, got {num_samples}.")
        if num_samples is None:
            num_samples = DEFAULT_PREDICT_SAMPLES
            if self.trainer.is_global_zero:
                print(f"lightning-gen predict: {type(source).__name__} has no predict_dataloader, so {name} draws "
                      f"{num_samples} samples (--num_samples sets how many).", flush=True)
        batch_size = getattr(self.datamodule, "batch_size", None)
        batch_size = batch_size if isinstance(batch_size, int) and batch_size > 0 else 256
        return DataLoader(torch.arange(num_samples), batch_size=batch_size)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Lightning's arguments for the trainer method; ``predict`` gets the index loader when there is one."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        loader = getattr(self, "_predict_loader", None) if subcommand == "predict" else None
        if loader is not None:
            kwargs.pop("datamodule", None)
            kwargs["dataloaders"] = loader
        return kwargs


def _import_class(class_path: Any) -> Any:
    """The class a config's ``class_path`` names, or ``None`` if it cannot be imported (the parser reports that)."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None


def _init_default(cls: type, name: str) -> Any:
    """The default of ``cls``'s constructor argument ``name`` (found along the MRO, through ``**kwargs``
    forwarding), or ``inspect.Parameter.empty``."""
    for klass in cls.__mro__:
        parameter = inspect.signature(klass.__init__).parameters.get(name) if "__init__" in vars(klass) else None
        if parameter is not None:
            return parameter.default
    return inspect.Parameter.empty


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    """``{"model.n_critic": 2, "model.generator": "lightning_gen.nets.MLPGenerator", ...}`` from a dumped config
    section (``init_args`` and ``dict_kwargs`` levels dropped, as ``--model.n_critic`` writes them)."""
    if isinstance(node, dict) and "class_path" in node:
        flat = {prefix: node["class_path"]}
        for key, value in {**(node.get("init_args") or {}), **(node.get("dict_kwargs") or {})}.items():
            flat.update(_flatten(value, f"{prefix}.{key}"))
        return flat
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}.{key}").items()}
    return {prefix: node}


def _differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (before, after)}`` for the keys whose values differ (a missing key counts as ``None``)."""
    keys = [*before, *(k for k in after if k not in before)]
    return {k: (before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)}


def _show(value: Any) -> str:
    """A config value as YAML/JSON writes it (``null``, ``true``, ``[64, 64]``)."""
    return json.dumps(value)


def main(args: Any = None) -> None:
    """Entry point of the ``lightning-gen`` console script; a :class:`UsageError` prints its message and exits 2."""
    try:
        GenerativeCLI(args=args)
    except UsageError as err:
        print(f"lightning-gen: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
