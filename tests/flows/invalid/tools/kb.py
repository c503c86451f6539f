"""A python tool module for the invalid-flow fixtures: it defines `search`, not `find`."""


def search(query: str) -> list[str]:
    """Return nothing: the fixtures only check that the target can be found."""
    return []
