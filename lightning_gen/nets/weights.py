"""Finding pretrained weights offline: an argument, an environment variable, then the torch hub cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

import torch

__all__ = ["find_weights"]


def find_weights(
    name: str,
    weights_path: Optional[Union[str, Path]],
    env_var: str,
    filename: str,
    download: bool,
    error: Callable[[str], Exception],
    missing: Callable[[Path], str],
) -> Optional[Path]:
    """Where the ``name`` weights file ``filename`` is: ``weights_path``, else ``$env_var``, else the torch hub cache;
    ``None`` when it is in none of them and ``download`` allows fetching it. Raises ``error(message)`` for a path that
    is not a file, and ``error(missing(cache_path))`` when the weights are nowhere and may not be downloaded."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise error(f"No {name} weights at weights_path={str(path)!r}.")
        return path
    env = os.environ.get(env_var)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise error(f"${env_var}={env!r} is not a file.")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    if download:
        return None
    raise error(missing(cached))
