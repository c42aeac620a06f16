"""Turn titles into URL slugs."""

import re


def slugify(title):
    """Lower-case `title`, keep letters and digits, and join the words with single dashes."""
    text = title.lower()
    text = re.sub(r"[^a-z0-9]", "-", text)
    return text.strip("-")
