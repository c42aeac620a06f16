import pytest

from roman import from_roman, to_roman


def test_to_roman():
    assert to_roman(1994) == "MCMXCIV"


def test_from_roman():
    assert from_roman("XIV") == 14
    assert from_roman("MCMXC") == 1990


def test_from_roman_rejects_garbage():
    with pytest.raises(ValueError):
        from_roman("abc")
