"""A data loader that Lightning can resume mid-epoch, with exactly the order of torch's shuffled ``DataLoader``.

Lightning saves and restores a training loader's position when the loader has ``state_dict`` / ``load_state_dict``.
:class:`ResumableDataLoader` records the seed its sampler drew for the running epoch (drawn from the global RNG
exactly as :class:`torch.utils.data.RandomSampler` does, so uninterrupted runs see the same order as with a plain
``DataLoader``) and how many batches training has consumed; a resumed loader regenerates that epoch's permutation
and skips those batches. Under DDP, where Lightning swaps in a ``DistributedSampler`` (a fixed order per epoch), it
skips the consumed batches.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

__all__ = ["ResumableDataLoader", "ResumableRandomSampler"]


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
