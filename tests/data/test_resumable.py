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


def _write_pattern_folders(root) -> tuple:
    """Two folders of 9 and 6 asymmetric 12 px RGB images (random crops and flips change every pixel pattern)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in (("A", 9), ("B", 6)):
        (root / name).mkdir()
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{k}.png")
    return root / "A", root / "B"


def _unpaired_loader(root_a, root_b, num_workers: int = 0):
    from lightning_gen.data import UnpairedImageDataModule

    data = UnpairedImageDataModule(str(root_a), str(root_b), image_size=8, load_size=11, flip=True, batch_size=2,
                                   num_workers=num_workers, pin_memory=False)
    return data.train_dataloader()


def _close(loader) -> None:
    """Stop a loader's persistent workers now (left to the garbage collector, their shutdown stalls a later test)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def test_augmentation_is_a_function_of_epoch_and_item_not_of_workers_or_the_global_rng(tmp_path):
    """Crops and flips come from (epoch key, item): the same with 0 or 2 workers and whatever the global RNG holds,
    different in another epoch, and fetching leaves the global RNG alone (so a resume can restore it exactly)."""
    root_a, root_b = _write_pattern_folders(tmp_path)
    loader = _unpaired_loader(root_a, root_b)
    loader.sampler.set_epoch(3)
    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()  # the one draw of any DataLoader iterator (its base seed)
    expected = torch.get_rng_state()
    torch.manual_seed(0)
    epoch3 = [b["a"].clone() for b in loader]
    assert torch.equal(torch.get_rng_state(), expected)
    loader.sampler.set_epoch(3)
    torch.manual_seed(99)
    assert all(torch.equal(x, y) for x, y in zip(epoch3, [b["a"] for b in loader]))
    workers = _unpaired_loader(root_a, root_b, num_workers=2)
    workers.sampler.set_epoch(3)
    assert all(torch.equal(x, y) for x, y in zip(epoch3, [b["a"] for b in workers]))
    _close(workers)
    # epoch 4 re-pairs the images; the A image of each item differs by its augmentation, not only by the order
    loader.sampler.set_epoch(4)
    epoch4 = torch.cat([b["a"] for b in loader])
    sorted3 = sorted(torch.cat(epoch3).flatten(1).tolist())
    assert sorted3 != sorted(epoch4.flatten(1).tolist())


def test_a_mid_epoch_resume_replays_the_rest_of_the_epochs_augmentation(tmp_path):
    """The remaining batches of a resumed epoch equal the uninterrupted ones bit for bit, random crops and flips
    included, although the global RNG differs (prefetching and workers draw nothing from it)."""
    root_a, root_b = _write_pattern_folders(tmp_path)
    loader = _unpaired_loader(root_a, root_b)
    loader.sampler.set_epoch(2)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    rest = [b for b in it]
    torch.manual_seed(1234)
    again = _unpaired_loader(root_a, root_b, num_workers=2)
    again.load_state_dict(state)
    replay = list(again)
    _close(again)
    assert len(replay) == len(rest) == len(loader) - 2
    for x, y in zip(rest, replay):
        assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"])


def test_in_memory_flips_are_keyed_by_epoch_and_batch_not_by_the_global_rng():
    from lightning_gen.data.images import _InMemoryImageDataset

    images = torch.randint(0, 256, (64, 1, 2, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dataset = _InMemoryImageDataset(images, torch.zeros(64, dtype=torch.long), hflip=True)
    indices = list(range(64))
    plain = images.float() / 127.5 - 1

    def flipped(out: torch.Tensor) -> torch.Tensor:
        return (out != plain).flatten(1).any(1)

    dataset.set_augmentation_key(42)
    torch.manual_seed(0)
    a = dataset.__getitems__(indices)[0]
    torch.manual_seed(1)
    b = dataset.__getitems__(indices)[0]
    assert torch.equal(a, b)
    assert torch.equal(a[flipped(a)], plain[flipped(a)].flip(-1))  # the flipped ones are exact mirror images
    assert 20 <= int(flipped(a).sum()) <= 44  # about half (binomial(64, 1/2): 4 standard deviations)
    dataset.set_augmentation_key(43)
    assert not torch.equal(flipped(dataset.__getitems__(indices)[0]), flipped(a))
