"""The producer's cached partitioner places every key where aiokafka's default (the Java
client's murmur2 rule) would: records of one key stay on one partition whichever client
wrote them."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from libs.runtime.kafka import CachedPartitioner


@given(
    keys=st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=50),
    count=st.integers(min_value=1, max_value=64),
)
def test_same_partition_as_the_default(keys: list[bytes], count: int) -> None:
    partitions = list(range(count))
    cached = CachedPartitioner(max_keys=8)
    for key in keys * 2:  # the second pass answers from memory (or after a reset)
        assert cached(key, partitions, partitions) == DefaultPartitioner()(
            key, partitions, partitions
        )


def test_memory_is_bounded() -> None:
    cached = CachedPartitioner(max_keys=100)
    for i in range(1_000):
        cached(f"k{i}".encode(), [0, 1, 2], [0, 1, 2])
    assert len(cached._hashes) <= 100


def test_no_key_goes_to_an_available_partition() -> None:
    cached = CachedPartitioner()
    assert {cached(None, [0, 1, 2], [1]) for _ in range(20)} == {1}
    assert cached(None, [0, 1, 2], []) in {0, 1, 2}
