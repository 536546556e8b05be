"""Tests for lightning_gen/data/resumable.py: the same order as torch's shuffled DataLoader, and mid-epoch resume."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_gen.data.resumable import ResumableDataLoader

DATA = TensorDataset(torch.arange(23))


def _epochs(loader, n: int = 3) -> list[list[int]]:
    return [[int(v) for b in loader for v in b[0]] for _ in range(n)]


def test_order_and_random_state_equal_a_plain_shuffled_loader():
    """Swapping a DataLoader for it changes nothing in an uninterrupted run: same batches, same global RNG after."""
    torch.manual_seed(0)
    plain = _epochs(DataLoader(DATA, batch_size=4, shuffle=True, drop_last=True))
    after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    resumable = _epochs(ResumableDataLoader(DATA, batch_size=4, shuffle=True, drop_last=True))
    assert resumable == plain and torch.equal(torch.get_rng_state(), after_plain)
    assert plain[0] != plain[1]  # shuffled anew each epoch


def test_a_saved_position_continues_the_epochs_permutation():
    torch.manual_seed(0)
    loader = ResumableDataLoader(DATA, batch_size=4, shuffle=True)
    it = iter(loader)
    seen = [next(it)[0].tolist() for _ in range(2)]
    state = loader.state_dict()
    rest = [b[0].tolist() for b in it]
    assert state["batches"] == 2 and state["exact"]
    torch.manual_seed(123)  # another global RNG state: the saved seed decides the order
    again = ResumableDataLoader(DATA, batch_size=4, shuffle=True)
    again.load_state_dict(state)
    assert [b[0].tolist() for b in again] == rest and len(seen + rest) == 6
    assert len([b for b in again]) == 6  # the epoch after the resumed one is whole again


def test_a_finished_epoch_is_not_skipped_on_resume():
    loader = ResumableDataLoader(DATA, batch_size=4, shuffle=True)
    list(loader)
    state = loader.state_dict()
    assert state["batches"] == len(loader)
    again = ResumableDataLoader(DATA, batch_size=4, shuffle=True)
    again.load_state_dict(state)
    assert len(list(again)) == len(loader)


def test_a_distributed_sampler_position_is_skipped_in_batches():
    sampler = DistributedSampler(DATA, num_replicas=2, rank=1, shuffle=True, seed=3)
    loader = ResumableDataLoader(DATA, batch_size=3, sampler=sampler)
    full = [b[0].tolist() for b in loader]
    again = ResumableDataLoader(DATA, batch_size=3, sampler=DistributedSampler(DATA, num_replicas=2, rank=1,
                                                                               shuffle=True, seed=3))
    again.load_state_dict({"seed": None, "batches": 2, "exact": True, "epoch": 0})
    assert [b[0].tolist() for b in again] == full[2:]
    sampler.set_epoch(4)  # the saved epoch is set back before iterating (Lightning sets it only afterwards)
    epoch4 = [b[0].tolist() for b in loader]
    third = ResumableDataLoader(DATA, batch_size=3, sampler=DistributedSampler(DATA, num_replicas=2, rank=1,
                                                                               shuffle=True, seed=3))
    third.load_state_dict(loader.state_dict() | {"batches": 1})
    assert [b[0].tolist() for b in third] == epoch4[1:] and epoch4 != full
    assert loader.state_dict()["exact"] is True


def test_an_unpaired_sampler_position_resumes_its_epochs_pairing():
    """CycleGAN's random A/B pairing is fixed by (seed, epoch): a resumed loader replays the rest of the epoch."""
    from lightning_gen.data import UnpairedSampler

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 7

        def __getitem__(self, ij: tuple[int, int]) -> torch.Tensor:
            return torch.tensor(ij)

    data = Pairs()

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(data, batch_size=1, sampler=UnpairedSampler(7, 5, seed=2))

    first = loader()
    first.sampler.set_epoch(3)
    it = iter(first)
    head = [next(it) for _ in range(2)]
    state = first.state_dict()
    rest = [b for b in it]
    assert state["exact"] and state["epoch"] == 3 and state["batches"] == 2 and len(head + rest) == 7
    again = loader()
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == [b.tolist() for b in rest]
