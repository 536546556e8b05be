"""Tests for lightning_gen/nets/image_pool.py."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gen.nets.image_pool import ImagePool


def _ids(start: int, n: int) -> torch.Tensor:
    """``n`` distinct 1x2x2 images, image ``i`` filled with the value ``start + i``."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


def _values(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def test_returns_inputs_while_filling():
    pool = ImagePool(size=10)
    for start in (0, 4):
        x = _ids(start, 4)
        torch.testing.assert_close(pool.query(x), x)
    assert int(pool.num_stored) == 8
    out = pool.query(_ids(8, 2))  # fills the pool exactly
    assert _values(out) == [8, 9] and int(pool.num_stored) == 10
    assert sorted(_values(pool.images)) == list(range(10))


def test_stored_images_returned_with_probability_half():
    size, batch, steps = 50, 8, 250
    pool = ImagePool(size)
    pool.query(_ids(0, size))
    gen = torch.Generator().manual_seed(0)
    inserted = set(range(size))
    n_new = 0
    next_id = size
    for _ in range(steps):
        x = _ids(next_id, batch)
        before = set(_values(pool.images))
        out = pool.query(x, generator=gen)
        new_ids = set(range(next_id, next_id + batch))
        for v in _values(out):
            if v in new_ids:
                n_new += 1
            else:  # a returned stored image is exactly one inserted before, still in the pool at query time
                assert v in inserted and (v in before or v in new_ids)
        # each returned image is exactly one of the inserted tensors, not a blend
        for img in out:
            assert torch.equal(img, torch.full_like(img, img[0, 0, 0]))
        inserted |= new_ids
        next_id += batch
        assert int(pool.num_stored) == size and set(_values(pool.images)) <= inserted
    n = steps * batch
    sigma = math.sqrt(n * 0.25)
    assert abs(n_new - 0.5 * n) < 4 * sigma  # two-sided binomial tolerance


def test_swapped_image_enters_pool_and_leaves_it():
    pool = ImagePool(3)
    pool.query(_ids(0, 3))
    gen = torch.Generator().manual_seed(1)
    for k in range(3, 40):
        before = _values(pool.images)
        out = _values(pool.query(_ids(k, 1), generator=gen))[0]
        after = _values(pool.images)
        if out == k:
            assert after == before
        else:
            assert out in before and k in after and out not in after
            assert sorted(set(before) - {out} | {k}) == sorted(after)


def test_reproducible_with_seed():
    def run(seed: int) -> torch.Tensor:
        pool = ImagePool(5)
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([pool.query(_ids(4 * i, 4), generator=gen) for i in range(20)])

    torch.testing.assert_close(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_size_zero_passthrough_and_detach():
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    assert ImagePool(0).query(x) is x
    out = ImagePool(5).query(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, x.detach())
    with pytest.raises(ValueError, match=">= 0"):
        ImagePool(-1)


def test_state_dict_round_trip():
    pool = ImagePool(4)
    gen = torch.Generator().manual_seed(0)
    for i in range(5):
        pool.query(_ids(3 * i, 3), generator=gen)
    restored = ImagePool(4)
    restored.load_state_dict(pool.state_dict())
    torch.testing.assert_close(restored.images, pool.images)
    assert int(restored.num_stored) == 4
    # both continue identically from the same generator state
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.testing.assert_close(pool.query(_ids(100, 6), generator=g1), restored.query(_ids(100, 6), generator=g2))


def test_shape_change_raises():
    pool = ImagePool(4)
    pool.query(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="one pool per image shape"):
        pool.query(torch.zeros(2, 3, 16, 16))


def _one_by_one(pool: list[torch.Tensor], count: int, size: int, images: torch.Tensor, gen: torch.Generator):
    """The pool's rule image by image (the loop the vectorized query replaced): (returned batch, new count)."""
    keep_new = torch.rand((images.shape[0],), generator=gen) < 0.5
    slots = torch.randint(0, size, (images.shape[0],), generator=gen)
    out = images.clone()
    for i in range(images.shape[0]):
        if count < size:
            pool[count] = images[i]
            count += 1
        elif not bool(keep_new[i]):
            j = int(slots[i])
            out[i], pool[j] = pool[j], images[i]
    return out, count


@pytest.mark.parametrize("size", [1, 3, 5])
def test_the_vectorized_query_gives_what_the_image_by_image_rule_gives(size):
    # small pools and batches up to 7 images: batches that cross the filling, and slots drawn twice in one batch
    pool, reference, count = ImagePool(size), [torch.zeros(1, 2, 2)] * size, 0
    g1, g2 = torch.Generator().manual_seed(size), torch.Generator().manual_seed(size)
    start = 0
    for step in range(12):
        n = 1 + (3 * step + size) % 7
        out = pool.query(_ids(start, n), generator=g1)
        expected, count = _one_by_one(reference, count, size, _ids(start, n), g2)
        assert _values(out) == _values(expected)
        assert _values(pool.images) == _values(torch.stack(reference)) and int(pool.num_stored) == count
        start += n
