"""Test helper: everything a running app has stored (database values, an in-process cache's
objects), as bytes, for the privacy tests that search it for what must never be kept."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from dupify.schema.tables import Base
from support.api import Api


def stored_values(api: Api) -> Iterator[bytes]:
    with api.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes):
                        yield value
                    elif value is not None:
                        yield str(value).encode()


def object_bytes(root: object, seen: set[int] | None = None, depth: int = 0) -> Iterator[bytes]:
    """Every bytes/str reachable from an in-process cache object (its entries, whatever their
    private layout), without relying on its internals."""
    seen = set() if seen is None else seen
    if id(root) in seen or depth > 8:
        return
    seen.add(id(root))
    if isinstance(root, bytes | bytearray | memoryview):
        yield bytes(root)
    elif isinstance(root, str):
        yield root.encode()
    elif isinstance(root, dict):
        for key, value in root.items():
            yield from object_bytes(key, seen, depth + 1)
            yield from object_bytes(value, seen, depth + 1)
    elif isinstance(root, list | tuple | set | frozenset):
        for item in root:
            yield from object_bytes(item, seen, depth + 1)
    elif hasattr(root, "__dict__") and not callable(root):
        yield from object_bytes(vars(root), seen, depth + 1)
