"""Parsed files, each parsed once per version of the file(s) it came from.

tlshd reads certificates, keys, trust stores and CRLs at every handshake; we parse them
once and again only when they change. A version is what stat() says about the path as
given: (path, device, inode, mtime_ns, size). So an edited file, a file replaced by a
rename, or a symlink pointed elsewhere (certbot's live/ links) is read again, and an
unchanged one costs one stat() per file per use: no path resolution on the hot path.
Failures are not remembered: a missing or broken file raises again at the next use.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

StrPath = str | os.PathLike[str]
# (path as given, st_dev, st_ino, st_mtime_ns, st_size)
Stamp = tuple[str, int, int, int, int]


def stamp(path: StrPath) -> Stamp:
    """The version of the file at `path` (following symlinks); OSError if it cannot be stat'ed."""
    st = os.stat(path)
    return os.fspath(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class ParsedFiles(Generic[T]):
    """`parse(*paths)`, remembered per version of those files; at most `maxsize` versions
    are kept, the least recently used dropped first. Safe to share between threads (two
    threads missing at once may both parse; one result is kept)."""

    def __init__(self, parse: Callable[..., T], maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._parse = parse
        self._maxsize = maxsize
        self._entries: OrderedDict[tuple[Stamp, ...], T] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, *paths: StrPath) -> T:
        key = tuple(stamp(p) for p in paths)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = self._parse(*paths)
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
