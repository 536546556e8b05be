"""Adversarial losses and critic regularizers as pure functions."""

from lightning_gen.losses.adversarial import *  # noqa: F401,F403
from lightning_gen.losses.adversarial import __all__ as _adv_all
from lightning_gen.losses.regularizers import *  # noqa: F401,F403
from lightning_gen.losses.regularizers import __all__ as _reg_all

__all__ = list(_adv_all) + list(_reg_all)
