"""Splitting work into batches."""


def chunks(items, size):
    """Split the list `items` into lists of `size` items; the last one may be shorter."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    return [items[i : i + size] for i in range(0, len(items) - size + 1, size)]
