import pytest

from roman import from_roman, to_roman


def test_round_trip():
    for number in range(1, 4000):
        assert from_roman(to_roman(number)) == number


@pytest.mark.parametrize("text", ["", "IIII", "IC", "VV", "MMMM", "xiv", "X I"])
def test_not_canonical(text):
    with pytest.raises(ValueError):
        from_roman(text)
