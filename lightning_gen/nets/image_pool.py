"""History buffer of generated images for discriminator updates (Shrivastava et al. 2017; CycleGAN, Zhu et al. 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_gen.noise import rand, randint

__all__ = ["ImagePool"]


class ImagePool(nn.Module):
    """Buffer of up to ``size`` past generated images (50 in CycleGAN, sec. 4) that the discriminator sees.

    ``query`` takes a batch of new (fake) images and returns a batch of the same shape: while the pool is not
    full each image is stored and returned as is; once full, each image is returned as is with probability 0.5,
    else a uniformly chosen stored image is returned and replaced by the new one. ``size=0`` returns the input.

    The stored images live in the buffer ``images`` (detached, allocated on the first query as
    ``(size, C, H, W)``) and the count in ``num_stored``, so the pool is saved and restored with the
    ``state_dict`` of the LightningModule that owns it and follows it across devices. Loading a state dict into
    a pool that has not been queried yet resizes its buffer to match.
    """

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"ImagePool size must be >= 0 (0 disables the pool), got {size}")
        self.size = int(size)
        self.register_buffer("images", torch.empty(0))
        self.register_buffer("num_stored", torch.zeros((), dtype=torch.long))

    def query(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return a batch like ``images`` mixing new and stored images; ``generator`` seeds the random choices."""
        if self.size == 0:
            return images
        if images.dim() < 1 or images.shape[0] == 0:
            return images
        new = images.detach()
        if self.images.dim() < 2:  # first query: allocate storage for this image shape
            self.images = torch.zeros((self.size, *new.shape[1:]), dtype=new.dtype, device=new.device)
        elif tuple(self.images.shape[1:]) != tuple(new.shape[1:]):
            raise ValueError(
                f"ImagePool holds images of shape {tuple(self.images.shape[1:])} but got a batch of "
                f"{tuple(new.shape)}; use one pool per image shape"
            )
        new = new.to(device=self.images.device, dtype=self.images.dtype)
        n = new.shape[0]
        # Draw all random numbers up front so the result depends only on the generator state and the pool; they
        # stay where they are drawn (the generator's device, or the CPU), since they are only read one by one.
        keep_new = rand((n,), generator) < 0.5
        slots = randint(self.size, (n,), generator)
        out = new.clone()
        count = int(self.num_stored)
        for i in range(n):
            if count < self.size:
                self.images[count] = new[i]
                count += 1
            elif not bool(keep_new[i]):
                j = int(slots[i])
                out[i] = self.images[j]
                self.images[j] = new[i]
        self.num_stored.fill_(count)
        return out.to(device=images.device, dtype=images.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "images")
        if stored is not None and stored.shape != self.images.shape:
            self.images = torch.empty_like(stored, device=self.images.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        """Show the capacity in the module's repr."""
        return f"size={self.size}"
