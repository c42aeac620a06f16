import pytest

from batching import chunks


def test_empty():
    assert chunks([], 3) == []


def test_size_larger_than_list():
    assert chunks([1, 2, 3], 5) == [[1, 2, 3]]


def test_size_one():
    assert chunks(["a", "b"], 1) == [["a"], ["b"]]


def test_negative_size():
    with pytest.raises(ValueError):
        chunks([1, 2], -1)
