"""The buffer pool's large blocks: aligned, offset from their neighbours (so that arrays
of one size do not share their low address bits), and freed whole past the pool's limit."""
import gc

import numpy as np
import pytest

import mininet
from mininet_ext import buffer
from mininet_ext.buffer import Buffer


def _circular_gap(a, b, period=4096):
    d = (a - b) % period
    return min(d, period - d)


def test_large_blocks_in_turn_do_not_share_low_address_bits():
    # a size of its own, so every block is fresh from malloc (none from the pool)
    size = 3 * 1024 * 1024 + 4 * 1234
    blocks = [Buffer(size) for _ in range(12)]
    addresses = [b.address for b in blocks]
    assert all(a % 64 == 0 for a in addresses)
    # neighbours in time: heap neighbours, whose malloc addresses differ by the size and a
    # header (a few bytes mod 4 KB) unless the pool moves them apart
    gaps = [_circular_gap(a, b) for a, b in zip(addresses, addresses[1:])]
    assert min(gaps) >= 128, gaps


def test_large_blocks_hold_their_whole_size():
    size = 256 * 1024 + 192
    blocks = [Buffer(size) for _ in range(4)]
    for i, b in enumerate(blocks):
        view = np.frombuffer(b, dtype=np.uint8)
        view[:] = i + 1
    for i, b in enumerate(blocks):   # no block overlaps another (nor their bookkeeping)
        assert np.all(np.frombuffer(b, dtype=np.uint8) == i + 1)


def test_blocks_past_the_pool_limit_are_freed():
    # 40 x 16 MB (never touched, so no memory is used): the pool keeps 512 MB of them and
    # frees the others, each through the address malloc gave (a wrong one aborts)
    gc.collect()
    before = buffer.memory_stats()
    blocks = [Buffer(16 * 1024 * 1024 + 64 * 7) for _ in range(40)]
    held = buffer.memory_stats()["in_use_bytes"] - before["in_use_bytes"]
    assert held >= 40 * 16 * 1024 * 1024
    del blocks
    gc.collect()
    after = buffer.memory_stats()
    assert after["in_use_bytes"] == before["in_use_bytes"]
    assert after["cached_bytes"] <= 512 * 1024 * 1024
    again = Buffer(16 * 1024 * 1024 + 64 * 7)   # taken from the pool
    np.frombuffer(again, dtype=np.uint8)[-1] = 1


def test_impossible_sizes_are_refused_not_looped():
    """A request past 64 PiB is a MemoryError that says so (the size-class rounding once
    looped forever on 2^62 bytes: `zeros((2**30, 2**30))` hung)."""
    for n in (2 ** 56 + 1, 2 ** 62, 2 ** 63 - 1):
        with pytest.raises(MemoryError, match="64 PiB"):
            Buffer(n)
    with pytest.raises(MemoryError, match="cannot allocate 4611686018427387904 bytes"):
        mininet.zeros((2 ** 30, 2 ** 30))
