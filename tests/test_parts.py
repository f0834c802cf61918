"""A process's part of a global batch."""

import pytest

from rnnkit.data.parts import part


def test_parts_are_strided_and_together_are_the_batch():
    rows = [10, 11, 12, 13, 14]
    parts = [part(rows, rank, 2) for rank in range(2)]
    assert parts == [[10, 12, 14], [11, 13]]
    assert sorted(sum(parts, [])) == rows
    assert part(rows, 0, 1) == rows


def test_a_batch_smaller_than_the_processes_repeats_an_example_for_the_rest():
    assert [part([7, 8], rank, 3) for rank in range(3)] == [[7], [8], [7]]


def test_a_rank_outside_the_processes_or_an_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="rank 2 is not one of 2 processes"):
        part([1, 2], 2, 2)
    with pytest.raises(ValueError, match="at least one example"):
        part([], 0, 2)
