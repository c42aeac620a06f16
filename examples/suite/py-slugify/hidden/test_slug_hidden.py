from slug import slugify


def test_runs_of_spaces():
    assert slugify("  many   spaces  here ") == "many-spaces-here"


def test_dashes_and_symbols():
    assert slugify("--a--b--") == "a-b"
    assert slugify("C++ & Rust: 2024 edition") == "c-rust-2024-edition"


def test_nothing_left():
    assert slugify("") == ""
    assert slugify("?!") == ""
