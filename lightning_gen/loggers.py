"""A W&B logger that falls back to offline mode, with a one-line notice, when there is no API key or no network."""

from __future__ import annotations

import netrc
import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Literal, Optional, Union

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["WandbLogger"]

DEFAULT_BASE_URL = "https://api.wandb.ai"  # only for wandb releases without the settings singleton
DEFAULT_PROJECT = "lightning-gen"
PROBE_TIMEOUT_S = 2.0
_OFFLINE_MODES = ("offline", "dryrun", "disabled")


def _wandb_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of ``url`` (or to the proxy that would carry it) opens within ``timeout`` s.

    The whole probe, name lookup included, runs in a daemon thread so a slow resolver cannot stall the caller.
    """
    outcome: list[bool] = []

    def connect() -> None:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and host and not urllib.request.proxy_bypass(host):
            proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            host, port = proxy_parts.hostname, proxy_parts.port or 80
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except (OSError, ValueError):  # unreachable, refused, unknown name, malformed address: all mean "offline"
            outcome.append(False)

    probe = threading.Thread(target=connect, name="wandb-reachability-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(outcome) and outcome[0]


def _wandb_base_url() -> str:
    """The W&B server wandb would talk to: ``WANDB_BASE_URL``, else wandb's settings (files, then its default)."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except ImportError:  # wandb releases without the settings singleton
        return DEFAULT_BASE_URL


def _netrc_has_key(base_url: str) -> bool:
    """Whether the netrc file (``NETRC``, else ``~/.netrc`` or ``~/_netrc``) has a password for ``base_url``'s host."""
    candidates = [Path(os.environ["NETRC"])] if os.environ.get("NETRC") else [Path("~/.netrc"), Path("~/_netrc")]
    host = urllib.parse.urlsplit(base_url).netloc
    for path in (p.expanduser() for p in candidates):
        if not path.is_file():
            continue
        try:
            creds = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError) as err:
            rank_zero_warn(f"W&B: could not read {path} ({err}); ignoring it when looking for an API key.")
            continue
        if creds and creds[2]:
            return True
    return False


def _wandb_has_credentials(base_url: str) -> bool:
    """Whether wandb would find credentials for ``base_url`` without prompting; makes no network call.

    Uses wandb's own lookup (``wandb.sdk.lib.wbauth`` of wandb 0.31: session credentials, ``WANDB_API_KEY`` or
    ``WANDB_IDENTITY_TOKEN_FILE``, the netrc entry written by ``wandb login``, the settings files) with prompting and
    verification off; wandb releases without that module get the same search by hand (environment, then netrc).
    A malformed key raises wandb's ``AuthenticationError``, which says what is wrong with it.
    """
    try:
        from wandb.sdk.lib import wbauth
    except ImportError:
        in_env = any(os.environ.get(var) for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"))
        return in_env or _netrc_has_key(base_url)
    auth = wbauth.authenticate_session(
        host=base_url, source="lightning_gen.loggers.WandbLogger", prompt=False, verify=False, update_session=False
    )
    return auth is not None


class WandbLogger(_LightningWandbLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.WandbLogger` (same arguments; ``project`` defaults to
    ``WANDB_PROJECT``, else ``"lightning-gen"``; other keyword arguments such as ``tags``, ``entity``, ``group`` go to
    ``wandb.init``) that decides once, at construction, whether the run can go online, and otherwise logs offline
    instead of prompting for a login or hanging on the network.

    The run stays offline when asked to (``offline=True``, ``mode="offline"``/``"disabled"``, or ``WANDB_MODE`` set
    to ``offline``, ``dryrun`` or ``disabled``). Otherwise it goes offline, with a one-line warning saying why and how
    to upload later, when wandb finds no credentials (``WANDB_API_KEY``, the netrc entry written by ``wandb login``,
    ...; looked up locally without network), or when the W&B server wandb would use (``WANDB_BASE_URL``, else the
    settings files, else wandb's default, ``https://api.forge.coreweave.com`` in wandb 0.31), or the HTTPS proxy in
    between, does not accept a TCP connection within 2 seconds. With credentials and a reachable server the run is
    online, so wandb never has to prompt. ``mode`` tells the outcome.

    An offline run is written to ``<save_dir>/wandb/offline-run-<time>-<id>/``: ``run-<id>.wandb`` holds the
    config, metric history and summary, ``files/media/images/`` the logged images as PNG; upload it later with
    ``wandb sync <save_dir>/wandb/offline-run-*``.

    ``log_model`` logs the checkpoints of :class:`~lightning.pytorch.callbacks.ModelCheckpoint` as W&B artifacts of
    type ``model`` (``True``: at the end of training, ``"all"``: as they are saved). Unlike Lightning's logger, this
    one accepts ``log_model`` together with offline mode: with wandb 0.31 an offline ``log_artifact`` writes the
    artifact record to the run file and stages a copy of the checkpoint in wandb's data folder
    (``$WANDB_DATA_DIR/artifacts/staging``, default ``~/.local/share/wandb/...``; one copy per logged checkpoint,
    kept until synced), which ``wandb sync`` then uploads with the run (that upload needs a server, so the tests only
    check the offline record).
    """

    def __init__(
        self,
        name: Optional[str] = None,
        save_dir: _PATH = ".",
        version: Optional[str] = None,
        offline: bool = False,
        dir: Optional[_PATH] = None,
        id: Optional[str] = None,
        anonymous: Optional[bool] = None,
        project: Optional[str] = None,
        log_model: Union[Literal["all"], bool] = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: Optional[str] = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        requested_mode = kwargs.get("mode")
        if offline and requested_mode not in (None, *_OFFLINE_MODES):
            raise ValueError(f"WandbLogger got offline=True and mode={requested_mode!r}; set only one of them.")
        # Offline runs are requested through wandb.init(mode="offline") rather than the parent's `offline` flag:
        # the parent rejects `log_model` offline (which works, see above) and rewrites os.environ["WANDB_MODE"].
        super().__init__(
            name=name,
            save_dir=save_dir,
            version=version,
            offline=False,
            dir=dir,
            id=id,
            anonymous=anonymous,
            project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            log_model=log_model,
            experiment=experiment,
            prefix=prefix,
            checkpoint_name=checkpoint_name,
            add_file_policy=add_file_policy,
            **kwargs,
        )
        if anonymous is None:  # wandb 0.31 warns about any `anonymous` value, even None, and ignores it
            self._wandb_init.pop("anonymous", None)
        self._mode = self._decide_mode(offline, requested_mode)
        if self._mode in ("offline", "disabled"):
            self._wandb_init["mode"] = self._mode

    @property
    def mode(self) -> str:
        """How the run logs: ``"online"``, ``"offline"`` or ``"disabled"`` (decided at construction; for a run handed in
        as ``experiment``, that run's wandb mode)."""
        return self._mode

    def _offline_root(self) -> Path:
        """The folder wandb writes offline runs into."""
        return Path(self._save_dir or os.environ.get("WANDB_DIR") or ".") / "wandb"

    def _decide_mode(self, offline: bool, requested_mode: Optional[str]) -> str:
        """Pick online or offline as described in the class docstring; warns once when falling back to offline."""
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        for explicit in (requested_mode, env_mode):
            if explicit in _OFFLINE_MODES:
                return "disabled" if explicit == "disabled" else "offline"
        if offline:
            return "offline"
        if self._experiment is not None:  # an existing run was handed in: nothing to initialise, report its mode
            return str(getattr(getattr(self._experiment, "settings", None), "mode", "online"))
        base_url = _wandb_base_url()
        root = self._offline_root()
        later = f"logging offline to {root}, upload later with `wandb sync {root / 'offline-run-*'}`"
        if not _wandb_has_credentials(base_url):
            rank_zero_warn(f"W&B: no API key found (run `wandb login` or set WANDB_API_KEY); {later}.")
            return "offline"
        if not _wandb_reachable(base_url, PROBE_TIMEOUT_S):
            rank_zero_warn(f"W&B: cannot reach {base_url} within {PROBE_TIMEOUT_S:g} s; {later}.")
            return "offline"
        return "online"
