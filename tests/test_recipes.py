"""What every recipe in configs/ promises (issue 16): data found anywhere, last.ckpt that survives a kill, schedules
that follow the run. Static checks of the YAML; tests/test_cli.py and the *_recipes tests run the recipes."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import lightning_gen.data

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*/*.yaml"))
LENGTH_ARGUMENTS = {"total_iters", "T_max", "constant_steps", "decay_steps", "total_steps", "milestones"}


def _load(config: Path) -> dict[str, Any]:
    return yaml.safe_load(config.read_text())


def _class_entries(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``{class_path: ..., init_args: ...}`` mapping in a config, depth first."""
    if isinstance(node, dict):
        if "class_path" in node:
            yield node
        for value in node.values():
            yield from _class_entries(value)
    elif isinstance(node, list):
        for value in node:
            yield from _class_entries(value)


def test_there_are_recipes():
    assert len(RECIPES) >= 30


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_data_follows_lightning_gen_data_and_downloads_when_it_can(config):
    """No recipe names a data folder: ``root`` is left out (``$LIGHTNING_GEN_DATA``, else ``data/``), and the data
    sets that can be downloaded are (``download: true``)."""
    text = config.read_text()
    assert "shared/data" not in text and "../" not in text
    data = _load(config)["data"]
    args = data.get("init_args", {})
    assert not {"root", "root_a", "root_b"} & set(args), f"{config.name} names a data folder: {args}"
    cls = getattr(lightning_gen.data, data["class_path"].rsplit(".", 1)[1])
    if "download" in inspect.signature(cls).parameters:
        assert args.get("download") is True


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_writes_last_ckpt_by_steps_and_by_time(config):
    """One checkpoint callback (no two fighting over last.ckpt): PeriodicCheckpoint with both periodic triggers."""
    callbacks = _load(config)["trainer"]["callbacks"]
    checkpoints = [c for c in callbacks if "Checkpoint" in c["class_path"]]
    assert [c["class_path"] for c in checkpoints] == ["lightning_gen.callbacks.PeriodicCheckpoint"]
    args = checkpoints[0]["init_args"]
    assert args["every_n_train_steps"] >= 100 and args["train_time_interval"] == "0:10:00"
    assert args.get("save_last", True) is True


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_schedules_take_their_length_from_the_run(config):
    """No recipe repeats max_steps (or max_steps x n_critic) in a schedule."""
    for entry in _class_entries(_load(config)["model"]):
        if "lr_scheduler" in entry["class_path"] or "schedulers" in entry["class_path"]:
            assert entry["class_path"].startswith("lightning_gen.schedulers."), entry["class_path"]
            assert not LENGTH_ARGUMENTS & set(entry.get("init_args") or {}), entry
