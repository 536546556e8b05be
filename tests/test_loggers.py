"""Tests of lightning_gen/loggers.py (W&B logger with automatic offline fallback) and of the config logging of
lightning_gen/cli.py (SaveAndLogConfigCallback), end to end through `lightning-gen fit`."""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import warnings
from pathlib import Path

import pytest
import wandb
import yaml
from PIL import Image
from wandb.proto import wandb_internal_pb2

import lightning_gen.loggers as loggers
from lightning_gen.cli import main
from lightning_gen.loggers import WandbLogger

ROOT = Path(__file__).resolve().parents[1]
TOY_RING = ROOT / "configs" / "gan" / "toy_ring.yaml"
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters: a well-formed (made-up) W&B API key


def _wandb_core_children() -> list[int]:
    """Process ids of wandb-core service processes started by this process (empty where /proc does not exist)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == os.getpid() and b"wandb-core" in cmdline and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(autouse=True)
def fresh_wandb():
    """Start each test with a fresh wandb singleton (settings re-read) and leave no run or service process behind."""
    wandb.teardown()
    yield
    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()  # stops the wandb-core service and waits for it
    assert _wandb_core_children() == []


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No W&B key anywhere (no WANDB_* variables; HOME and NETRC point at an empty folder)."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_CONFIG_DIR",
                "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    from wandb.sdk.lib.wbauth import authenticate

    monkeypatch.setattr(authenticate, "_session_auth", None)  # nothing logged in earlier in this process
    return home


def _forbid_probe(url: str, timeout: float) -> bool:
    raise AssertionError(f"the network was probed ({url}) although no probe was expected")


def _offline_notices(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("W&B:")]


def test_without_a_key_it_goes_offline_with_one_notice_and_no_network(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "_wandb_reachable", _forbid_probe)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        logger = WandbLogger(save_dir=tmp_path / "logs")
    root = tmp_path / "logs" / "wandb"
    assert _offline_notices(record) == [
        f"W&B: no API key found (run `wandb login` or set WANDB_API_KEY); logging offline to {root}, "
        f"upload later with `wandb sync {root / 'offline-run-*'}`."
    ]
    assert logger.mode == "offline"
    # With WANDB_MODE unset and no key, an online wandb.init would fail ("No API key configured"): the run is offline.
    run = logger.experiment
    assert run.settings.mode == "offline" and run.project == "lightning-gen"
    assert Path(run.dir).parent.parent == root and Path(run.dir).parent.name.startswith("offline-run-")
    assert "WANDB_MODE" not in os.environ  # unlike Lightning's logger, the choice does not leak into the environment
    run.finish()


def test_with_a_key_but_unreachable_server_it_goes_offline_with_one_notice(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.test")
    probes = []
    monkeypatch.setattr(loggers, "_wandb_reachable", lambda url, timeout: probes.append((url, timeout)) or False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        logger = WandbLogger(save_dir=tmp_path)
    root = tmp_path / "wandb"
    assert probes == [("https://wandb.example.test", 2.0)]
    assert _offline_notices(record) == [
        f"W&B: cannot reach https://wandb.example.test within 2 s; logging offline to {root}, "
        f"upload later with `wandb sync {root / 'offline-run-*'}`."
    ]
    assert logger.mode == "offline"


def test_a_key_in_the_netrc_file_and_a_reachable_server_keep_the_run_online(no_credentials, tmp_path, monkeypatch):
    (no_credentials / ".netrc").write_text(f"machine wandb.example.test\n  login user\n  password {FAKE_KEY}\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.test")
    probes = []
    monkeypatch.setattr(loggers, "_wandb_reachable", lambda url, timeout: probes.append(url) or True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        logger = WandbLogger(save_dir=tmp_path, tags=["a", "b"])
    assert probes == ["https://wandb.example.test"]
    assert _offline_notices(record) == []
    assert logger.mode == "online"  # (no experiment is started: that would need the server)


def test_the_netrc_fallback_for_older_wandb_finds_only_the_right_host(no_credentials):
    (no_credentials / ".netrc").write_text(f"machine wandb.example.test login user password {FAKE_KEY}\n")
    assert loggers._netrc_has_key("https://wandb.example.test")
    assert not loggers._netrc_has_key("https://other.example.test")


def test_a_malformed_key_is_reported_by_wandb(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "too-short")
    monkeypatch.setattr(loggers, "_wandb_reachable", _forbid_probe)
    with pytest.raises(wandb.errors.AuthenticationError, match="WANDB_API_KEY invalid"):
        WandbLogger(save_dir=tmp_path)


@pytest.mark.parametrize(
    ("env_mode", "offline", "expected"),
    [("offline", False, "offline"), ("dryrun", False, "offline"), ("disabled", False, "disabled"),
     (None, True, "offline")],
)
def test_an_explicit_offline_choice_is_kept_without_lookups(env_mode, offline, expected, no_credentials, tmp_path,
                                                           monkeypatch):
    if env_mode is not None:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    monkeypatch.setattr(loggers, "_wandb_reachable", _forbid_probe)
    monkeypatch.setattr(loggers, "_wandb_has_credentials", lambda url: pytest.fail("credentials were looked up"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        logger = WandbLogger(save_dir=tmp_path, offline=offline, log_model=True)  # log_model is allowed offline
    assert logger.mode == expected
    assert _offline_notices(record) == []


def test_a_run_handed_in_is_used_as_is_without_lookups(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "_wandb_reachable", _forbid_probe)
    monkeypatch.setattr(loggers, "_wandb_has_credentials", lambda url: pytest.fail("credentials were looked up"))
    run = wandb.init(project="handed-in", dir=tmp_path, mode="offline")
    logger = WandbLogger(experiment=run)
    assert logger.mode == "offline" and logger.experiment is run
    run.finish()


def test_offline_together_with_an_online_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="offline=True and mode='online'"):
        WandbLogger(save_dir=tmp_path, offline=True, mode="online")


def test_reachability_probe_on_local_sockets(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert loggers._wandb_reachable(f"http://127.0.0.1:{port}", timeout=1.0)
        # an unresolvable host is reached through the HTTPS proxy when one is configured
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert loggers._wandb_reachable("https://wandb.example.invalid", timeout=1.0)
        monkeypatch.delenv("https_proxy")
    assert not loggers._wandb_reachable(f"http://127.0.0.1:{port}", timeout=1.0)  # closed now: refused
    assert not loggers._wandb_reachable("https://wandb.example.invalid", timeout=0.5)


# --- end to end -------------------------------------------------------------------------------------------------


def _finished_records(path: Path, patience: float = 120.0) -> list[wandb_internal_pb2.Record]:
    """The run file's records once wandb's service has written its ``exit`` record: ``wandb.finish()`` can return
    before the service (a process of its own) has flushed the file, on a loaded machine (an empty file was read in
    a full-suite run with two other jobs on the 2 cores). Gives up after ``patience`` seconds."""
    import time

    deadline = time.monotonic() + patience
    while True:
        records = _wandb_records(path) if path.stat().st_size > 7 else []
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The protobuf records of a ``run-<id>.wandb`` file.

    The file is a 7-byte header (``:W&B``, magic 0xBEE1, version 0) followed by a LevelDB-style log: 32 KiB blocks
    of chunks, each with a 7-byte header (CRC32, little-endian uint16 length, type 1=full 2=first 3=middle 4=last),
    a block tail shorter than 7 bytes being zero padding.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B" and data[4:6] == b"\xe1\xbe", f"{path} is not a W&B run file"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += block - pos % block
            continue
        assert kind in (1, 2, 3, 4), f"bad chunk type {kind} at byte {pos} of {path}"
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _items(items) -> dict:
    return {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in items}


@pytest.mark.slow
def test_fit_logs_metrics_images_config_and_checkpoints_to_the_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where offline artifacts are staged
    main([
        "fit",
        f"--config={TOY_RING}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=20",
        "--trainer.log_every_n_steps=5",
        "--trainer.callbacks+=lightning_gen.callbacks.ToyScatterCallback",  # a picture every epoch
        "--trainer.logger=lightning_gen.loggers.WandbLogger",
        f"--trainer.logger.save_dir={tmp_path}",
        "--trainer.logger.tags=[toy,test]",
        "--trainer.logger.log_model=true",
        "--data.train_size=512",
        "--data.batch_size=64",
    ])
    wandb.finish()

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    records = _finished_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("run") == 1 and kinds[-1] == "exit"
    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.project == "lightning-gen" and list(run.tags) == ["toy", "test"]

    history = [_items(r.history.item) for r in records if r.HasField("history")]
    losses = [row["train/loss_dis"] for row in history if "train/loss_dis" in row]
    assert len(losses) >= 2 and all(math.isfinite(v) and v > 0 for v in losses)  # BCE losses are positive

    pictures = [row for row in history if row.get("toy/samples/_type") == "images/separated"]
    assert len(pictures) >= 2
    pngs = sorted((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert sorted(run_dir / "files" / p["toy/samples/filenames"][0] for p in pictures) == pngs
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == (500, 500)

    config = {}
    for r in records:
        if r.HasField("run"):
            config.update(_items(r.run.config.update))
        if r.HasField("config"):
            config.update(_items(r.config.update))
    full = config["config"]
    assert full["trainer"]["max_steps"] == 20
    assert full["model"]["class_path"] == "lightning_gen.GAN"
    assert full["trainer"]["logger"]["class_path"] == "lightning_gen.loggers.WandbLogger"
    assert full["data"]["init_args"]["train_size"] == 512
    assert config["loss"] == "nonsaturating"  # the module's own hyperparameters are still there
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["max_steps"] == 20

    # log_model=True offline: one artifact record per checkpoint, its file staged for `wandb sync`
    artifacts = [r.artifact for r in records if r.HasField("artifact")]
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) >= 1 and len(artifacts) == len(checkpoints)
    for artifact in artifacts:
        assert artifact.type == "model" and "latest" in artifact.aliases
        (entry,) = artifact.manifest.contents
        staged = Path(entry.local_path)
        assert entry.path == "model.ckpt" and staged.is_relative_to(tmp_path / "wandb-data") and staged.is_file()
        assert entry.size == staged.stat().st_size
    staged_sizes = sorted(entry.size for a in artifacts for entry in a.manifest.contents)
    assert staged_sizes == sorted(p.stat().st_size for p in checkpoints)


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "csv+tensorboard", "none"])
def test_full_config_reaches_csv_and_tensorboard_loggers_and_no_logger_is_fine(logger, tmp_path):
    classes = {"csv": "lightning.pytorch.loggers.CSVLogger",
               "tensorboard": "lightning.pytorch.loggers.TensorBoardLogger"}
    args = [
        "fit",
        f"--config={TOY_RING}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2",
        "--data.train_size=256",
        "--data.batch_size=64",
    ]
    if logger == "none":
        args.append("--trainer.logger=false")
    for name in logger.split("+") if logger != "none" else []:
        args += [f"--trainer.logger+={classes[name]}", f"--trainer.logger.save_dir={tmp_path}"]
    main(args)

    hparams = sorted(tmp_path.rglob("hparams.yaml"))
    assert len(hparams) == (0 if logger == "none" else len(logger.split("+")))
    for path in hparams:
        logged = yaml.safe_load(path.read_text())
        assert logged["config"]["trainer"]["max_steps"] == 2
        assert logged["config"]["model"]["class_path"] == "lightning_gen.GAN"
        assert logged["loss"] == "nonsaturating"
    assert len(list(tmp_path.rglob("config.yaml"))) == 1
