"""Where data modules look for their files when no ``root`` is given: ``$LIGHTNING_GEN_DATA``, else ``data/``.

The rule, the same for every data module (images, image folders, paired and unpaired image-to-image folders):

* an explicit ``root`` (YAML ``data.init_args.root``, ``--data.root``, or the Python argument) is used exactly as
  given; a relative one is relative to the working directory, like any other path on the command line;
* ``root`` left out (``None``, the default) means the folder named by the environment variable
  ``LIGHTNING_GEN_DATA`` when it is set and not empty, else ``data`` in the working directory (torchvision's
  convention). Modules whose default is a subfolder (``trainA``, ``trainB``, ``train``) look for it there.

So ``LIGHTNING_GEN_DATA=/datasets lightning-gen fit --config configs/dcgan/mnist.yaml`` reads
``/datasets/MNIST/raw/``, and every recipe that leaves ``root`` out follows it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["DATA_ENV", "default_data_root", "resolve_data_root", "describe_data_root"]

DATA_ENV = "LIGHTNING_GEN_DATA"


def default_data_root() -> Path:
    """The folder used when no ``root`` is given: ``$LIGHTNING_GEN_DATA`` when set and not empty, else ``data``."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else Path("data")


def resolve_data_root(root: Optional[Union[str, Path]], default_subfolder: str = "") -> Path:
    """``root`` as given (``~`` expanded), or ``default_data_root() / default_subfolder`` when it is ``None``."""
    if root is not None:
        return Path(root).expanduser()
    base = default_data_root()
    return base / default_subfolder if default_subfolder else base


def describe_data_root(root: Optional[Union[str, Path]], argument: str = "root") -> str:
    """Where a root came from, for error messages: the explicit argument, the environment variable or the default."""
    if root is not None:
        return f"`{argument}` was set to {str(root)!r}"
    value = os.environ.get(DATA_ENV, "").strip()
    if value:
        return f"`{argument}` was not set, so {DATA_ENV}={value!r} was used"
    return f"`{argument}` was not set and {DATA_ENV} is not set, so the default 'data' was used"
