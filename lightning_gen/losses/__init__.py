"""Adversarial losses, critic regularizers, training stabilizers, VAE bound terms, the
diffusion loss, image-to-image reconstruction losses, super-resolution content losses, StarGAN's domain
classification loss and the RBM's contrastive-divergence loss as pure functions."""

from lightning_gen.losses.adversarial import *  # noqa: F401,F403
from lightning_gen.losses.adversarial import __all__ as _adv_all
from lightning_gen.losses.content import *  # noqa: F401,F403
from lightning_gen.losses.content import __all__ as _content_all
from lightning_gen.losses.cycle import *  # noqa: F401,F403
from lightning_gen.losses.cycle import __all__ as _cycle_all
from lightning_gen.losses.domain import *  # noqa: F401,F403
from lightning_gen.losses.domain import __all__ as _domain_all
from lightning_gen.losses.diffusion import *  # noqa: F401,F403
from lightning_gen.losses.diffusion import __all__ as _diff_all
from lightning_gen.losses.elbo import *  # noqa: F401,F403
from lightning_gen.losses.elbo import __all__ as _elbo_all
from lightning_gen.losses.infogan import *  # noqa: F401,F403
from lightning_gen.losses.infogan import __all__ as _info_all
from lightning_gen.losses.rbm import *  # noqa: F401,F403
from lightning_gen.losses.rbm import __all__ as _rbm_all
from lightning_gen.losses.score import *  # noqa: F401,F403
from lightning_gen.losses.score import __all__ as _score_all
from lightning_gen.losses.regularizers import *  # noqa: F401,F403
from lightning_gen.losses.regularizers import __all__ as _reg_all
from lightning_gen.losses.stabilizers import *  # noqa: F401,F403
from lightning_gen.losses.stabilizers import __all__ as _stab_all

__all__ = list(_adv_all) + list(_cycle_all) + list(_reg_all) + list(_stab_all) + list(_elbo_all) + list(_diff_all)
__all__ += list(_info_all)
__all__ += list(_content_all)
__all__ += list(_domain_all)
__all__ += list(_rbm_all)
__all__ += list(_score_all)
