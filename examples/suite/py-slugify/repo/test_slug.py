from slug import slugify


def test_simple_title():
    assert slugify("Rust") == "rust"


def test_punctuation_and_space_become_one_dash():
    assert slugify("Hello, World!") == "hello-world"
