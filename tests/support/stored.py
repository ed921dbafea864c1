"""Test helper: everything a running app has stored (database values, an in-process cache's
objects, files new or changed on disk), as bytes, for the privacy tests that search it for what
must never be kept (PRIVACY rows 5 and 5a-5c)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from dupify.schema.tables import Base
from support.api import Api

# path -> (mtime ns, size, inode): a file replaced in place shows as changed.
Snapshot = dict[str, tuple[int, int, int]]


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


def snapshot(directories: list[Path]) -> Snapshot:
    found: Snapshot = {}
    for directory in directories:
        for root, _, files in os.walk(directory, onerror=lambda _: None):
            for name in files:
                path = os.path.join(root, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue  # removed meanwhile (other processes share /tmp)
                found[path] = (info.st_mtime_ns, info.st_size, info.st_ino)
    return found


def files_holding(before: Snapshot, after: Snapshot, pieces: list[bytes]) -> list[str]:
    """New or changed files (any process may write to /tmp meanwhile) that hold image bytes."""
    hits = []
    for path, state in after.items():
        if before.get(path) == state:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if any(piece in data for piece in pieces):
            hits.append(path)
    return hits
