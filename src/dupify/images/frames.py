"""The pipe protocol between the server and its decoder workers: frames of one pickle and the
buffers it keeps out of band, read and written in place on pipes that may not block."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import pickle
import select
import struct
from typing import Any

# Each frame is a count of parts, each part's length, then the parts: a pickle, then the
# buffers it keeps out of band (an upload's bytes one way, a decoded image's pixels the other),
# written and read in place so that neither side copies them into the pickle.
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")
# An upload (a top-level bytes argument) at least this long goes out of band.
_OUT_OF_BAND_BYTES = 4096
# Pipes as wide as Linux lets a process make them (fs.pipe-max-size, 1 MiB by default), so a
# 256 px image's pixels cross in one write and one read.
_PIPE_BYTES = 1 << 20


class Frame:
    """One frame being read from a pipe, straight into buffers of the right size."""

    def __init__(self) -> None:
        self._stage = 0  # 0: reading the count of parts, 1: their lengths, 2: the parts
        self._pending: collections.deque[bytearray] = collections.deque([bytearray(_COUNT.size)])
        self._filled = 0
        self._parts: list[bytearray] = []

    def feed(self, fd: int) -> bool:
        """Read what the pipe holds now (a non-blocking one), or until the frame is whole (a
        blocking one); True once it is. EOFError if the pipe ends first."""
        while self._pending:
            target = self._pending[0]
            try:
                count = os.readv(fd, [memoryview(target)[self._filled :]])
            except BlockingIOError:
                return False
            if count == 0:
                raise EOFError
            self._filled += count
            if self._filled < len(target):
                continue
            self._pending.popleft()
            self._filled = 0
            if self._stage == 0:
                (parts,) = _COUNT.unpack(target)
                self._pending.append(bytearray(_LENGTH.size * parts))
            elif self._stage == 1:
                self._parts = [bytearray(n) for (n,) in _LENGTH.iter_unpack(target)]
                self._pending.extend(part for part in self._parts if part)
            self._stage = min(self._stage + 1, 2)
        return True

    def value(self, immutable: bool = False) -> Any:
        """The frame's object; with `immutable`, its out-of-band buffers as bytes (an upload
        must be bytes to the decoder) rather than the arrays' writable memory."""
        buffers = [bytes(part) for part in self._parts[1:]] if immutable else self._parts[1:]
        # Frames come only from our own processes over their private pipes: the trust that a
        # multiprocessing pool's pickles have, and the same exposure to a compromised worker.
        return pickle.loads(self._parts[0], buffers=buffers)  # noqa: S301


def frame_of(value: object) -> list[memoryview]:
    """`value` as the parts of one frame (its out-of-band buffers are not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    parts = [memoryview(stream), *(buffer.raw() for buffer in buffers)]
    lengths = b"".join(_LENGTH.pack(part.nbytes) for part in parts)
    return [memoryview(_COUNT.pack(len(parts)) + lengths), *parts]


def write(fd: int, views: list[memoryview]) -> bool:
    """Write what the pipe takes now from the front of `views` (consumed in place); True when
    nothing is left. BrokenPipeError when the reader is gone."""
    while views:
        try:
            written = os.writev(fd, views[:64])
        except BlockingIOError:
            return False
        while written:
            head = views[0]
            if written >= head.nbytes:
                written -= head.nbytes
                views.pop(0)
            else:
                views[0] = head[written:]
                written = 0
        while views and views[0].nbytes == 0:
            views.pop(0)
    return True


def write_or_gone(fd: int, views: list[memoryview]) -> bool:
    """`write`, but True too when the reader is gone (its end of the pipe then says why)."""
    try:
        return write(fd, views)
    except OSError:
        return True


def widen(fd: int) -> None:
    with contextlib.suppress(OSError):  # a smaller fs.pipe-max-size: frames take a few reads
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def out_of_band(arg: object) -> object:
    if type(arg) is bytes and len(arg) >= _OUT_OF_BAND_BYTES:
        return pickle.PickleBuffer(arg)
    return arg


def receive_blocking(fd: int) -> Frame:
    frame = Frame()
    frame.feed(fd)  # a blocking pipe: feed returns only with the whole frame (or EOFError)
    return frame


def send_blocking(fd: int, views: list[memoryview]) -> None:
    while not write(fd, views):
        select.select([], [fd], [])
