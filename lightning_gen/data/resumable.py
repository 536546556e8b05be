"""A data loader that Lightning can resume mid-epoch, with exactly the order of torch's shuffled ``DataLoader``.

Lightning saves and restores a training loader's position when the loader has ``state_dict`` / ``load_state_dict``.
:class:`ResumableDataLoader` records the seed its sampler drew for the running epoch (drawn from the global RNG
exactly as :class:`torch.utils.data.RandomSampler` does, so uninterrupted runs see the same order as with a plain
``DataLoader``) and how many batches training has consumed; a resumed loader regenerates that epoch's permutation
and skips those batches. Under DDP, where Lightning swaps in a ``DistributedSampler`` (a fixed order per epoch), it
skips the consumed batches.

Random augmentation (crops, flips) of this package's image data sets is drawn per item from a seed that is a fixed
function of the epoch's key and the item (:class:`SeededAugmentation`), not from the global or a worker's RNG: the
same item gets the same augmentation in the same epoch whatever ``num_workers``, the prefetching and a resume in the
middle of the epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

__all__ = ["ResumableDataLoader", "ResumableRandomSampler", "SeededAugmentation"]

_UNSET = -1


def _stable_seed(*parts: Any) -> int:
    """A 63-bit seed that is a fixed function of ``parts`` (ints, strings, tuples): the same in every process and
    Python version, unlike ``hash``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SeededAugmentation:
    """Mixin for data sets whose random augmentation must not depend on who fetches an item, or when.

    The loader sets the epoch's key (:meth:`set_augmentation_key`, kept in shared memory so worker processes see it);
    ``with self.augmentation_rng(item):`` then runs the item's random transforms with the CPU RNG seeded from
    ``(key, item)`` and gives the caller's RNG state back afterwards. Until a key is set (a plain ``DataLoader``),
    the transforms draw from the RNG as usual. Call :meth:`init_augmentation` in ``__init__``.
    """

    def init_augmentation(self) -> None:
        """Create the shared epoch key (before the loader starts any worker)."""
        self._augmentation_key = torch.full((), _UNSET, dtype=torch.int64).share_memory_()

    def set_augmentation_key(self, key: int) -> None:
        """Make the items fetched from now on draw their augmentation from ``key`` (one per epoch)."""
        self._augmentation_key.fill_(int(key) & (2**63 - 1))

    def augmentation_rng(self, item: Any) -> contextlib.AbstractContextManager[None]:
        """A context in which the CPU RNG is seeded from the epoch's key and ``item`` (no-op without a key)."""
        key = int(self._augmentation_key)
        if key == _UNSET:
            return contextlib.nullcontext()
        return _seeded_cpu_rng(_stable_seed(key, item))


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Run the block with the default CPU generator seeded by ``seed``; restore its state afterwards (CUDA untouched)."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


class ResumableRandomSampler(RandomSampler):
    """``RandomSampler`` (without replacement) whose epoch seed is recorded, and can be replayed from a position."""

    def __init__(self, data_source: Any) -> None:
        super().__init__(data_source)
        self.epoch_seed: Optional[int] = None
        self._resume: Optional[tuple[int, int]] = None  # (seed, indices to skip) for the next iteration

    def resume(self, seed: int, skip: int) -> None:
        """Make the next iteration repeat the permutation of ``seed`` from index ``skip`` on."""
        self._resume = (int(seed), int(skip))

    def __iter__(self) -> Iterator[int]:
        if self._resume is not None:
            seed, skip = self._resume
            self._resume = None
        else:  # the draw of torch's RandomSampler, so the order equals a plain shuffled DataLoader's
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.epoch_seed = seed
        if isinstance(self.data_source, SeededAugmentation):  # the epoch's seed keys its augmentation too
            self.data_source.set_augmentation_key(seed)
        generator = torch.Generator()
        generator.manual_seed(seed)
        n = len(self.data_source)
        order = torch.randperm(n, generator=generator).tolist()[: self.num_samples]
        return itertools.islice(iter(order), skip, None)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose mid-epoch position Lightning saves in checkpoints and restores on resume."""

    def __init__(self, dataset: Any, *args: Any, shuffle: Optional[bool] = None, **kwargs: Any) -> None:
        if shuffle and kwargs.get("sampler") is None and kwargs.get("batch_sampler") is None:
            kwargs["sampler"] = ResumableRandomSampler(dataset)
            shuffle = None
        super().__init__(dataset, *args, shuffle=shuffle, **kwargs)
        self._yielded = 0
        self._skip_batches = 0
        self._epoch: Optional[int] = None

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip_batches = self._skip_batches, 0
        self._yielded = skip
        # the epoch this iteration plays (samplers like UnpairedSampler advance it once iterated)
        self._epoch = getattr(self.sampler, "epoch", None)
        if isinstance(self.dataset, SeededAugmentation) and self._epoch is not None:
            # samplers with an epoch (DistributedSampler, UnpairedSampler) key the augmentation by (seed, epoch);
            # ResumableRandomSampler keys it by the epoch's seed when it draws it
            self.dataset.set_augmentation_key(_stable_seed(getattr(self.sampler, "seed", 0), self._epoch))
        iterator = super().__iter__()
        if skip and not isinstance(self.sampler, ResumableRandomSampler):
            for _ in range(skip):  # e.g. a DistributedSampler: its order is fixed by the epoch, so skip batches
                next(iterator)
        return self._counting(iterator)

    def _counting(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch's seed and the batches yielded so far (at a checkpoint, the batches training has consumed)."""
        consumed = self._yielded
        seed = self.sampler.epoch_seed if isinstance(self.sampler, ResumableRandomSampler) else None
        # exact: the resumed order is the uninterrupted one; samplers whose order is fixed by ``set_epoch`` declare
        # ``deterministic_per_epoch`` (other samplers redraw theirs)
        exact = isinstance(self.sampler, (ResumableRandomSampler, DistributedSampler, SequentialSampler)) or bool(
            getattr(self.sampler, "deterministic_per_epoch", False))
        # a per-epoch order is fixed by the sampler's epoch, which Lightning sets only after it has re-created the
        # resumed epoch's iterator: keep it, to set it back first
        return {"seed": seed, "batches": consumed, "exact": exact, "epoch": self._epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue the saved epoch after its consumed batches (an epoch already finished
        starts afresh)."""
        batches = int(state.get("batches", 0))
        if batches <= 0 or batches >= len(self):
            return
        if isinstance(self.sampler, ResumableRandomSampler):
            if state.get("seed") is None:
                return
            self.sampler.resume(state["seed"], batches * int(self.batch_size or 1))
        else:
            if state.get("epoch") is not None and callable(getattr(self.sampler, "set_epoch", None)):
                self.sampler.set_epoch(int(state["epoch"]))
            self._skip_batches = batches
