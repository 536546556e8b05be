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
        self._count: int | None = 0  # host mirror of num_stored (None: read it at the next query)

    def query(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return a batch like ``images`` mixing new and stored images; ``generator`` seeds the random choices.

        The images are processed as if one by one, in batch order (an image stored by an earlier image of the same
        batch can be returned for a later one), but with tensor operations that never wait for the device.
        """
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
        n, device = new.shape[0], self.images.device
        # Draw all random numbers up front (on the pool's device, or the generator's), so the result depends only on
        # the generator state and the pool.
        keep_new = rand((n,), generator, device) < 0.5
        slots = randint(self.size, (n,), generator, device)
        count = self._stored_count()
        out = new.clone()
        fill = min(n, self.size - count)
        if fill > 0:  # while the pool fills, images are stored in order and returned as they are
            self.images[count:count + fill] = new[:fill]
            self._count = count + fill
            self.num_stored.fill_(self._count)
        if fill < n:
            out[fill:] = self._swap(new[fill:], keep_new[fill:], slots[fill:])
        return out.to(device=images.device, dtype=images.dtype)

    def _swap(self, new: Tensor, keep_new: Tensor, slots: Tensor) -> Tensor:
        """The full pool's answer to ``new``: image ``i`` is returned as is when ``keep_new[i]``, else it takes the
        place of the image in ``slots[i]``, which is returned (an image stored there by an earlier ``i`` included)."""
        m = new.shape[0]
        idx = torch.arange(m, device=new.device)
        swaps = ~keep_new
        # into_same[i, j]: image j goes into the slot image i reads or writes
        into_same = (slots[:, None] == slots[None, :]) & swaps[None, :]
        earlier = torch.where(into_same & (idx[None, :] < idx[:, None]), idx[None, :], -1).amax(1)
        last = torch.where(into_same, idx[None, :], -1).amax(1)
        image_dims = (m,) + (1,) * (new.dim() - 1)
        stored = self.images[slots]  # the slots' images before this batch
        seen = torch.where((earlier >= 0).view(image_dims), new[earlier.clamp(min=0)], stored)
        # every write to a slot carries the slot's final image (the last image swapped into it), so the result
        # does not depend on the order of duplicate writes
        self.images[slots] = torch.where((last >= 0).view(image_dims), new[last.clamp(min=0)], stored)
        return torch.where(swaps.view(image_dims), seen, new)

    def _stored_count(self) -> int:
        """``num_stored`` as a host number, mirrored so that a query never reads the device (read once after the
        pool is loaded)."""
        if self._count is None:
            self._count = int(self.num_stored)
        return self._count

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "images")
        if stored is not None and stored.shape != self.images.shape:
            self.images = torch.empty_like(stored, device=self.images.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._count = None

    def extra_repr(self) -> str:
        """Show the capacity in the module's repr."""
        return f"size={self.size}"
