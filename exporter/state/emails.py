"""Emails kept compactly: many in one buffer (PackedEmails), and compressed in chunks (EmailStore).

Emails are the largest part of the sync state and of every batch a run tracks, so they are never kept as one
Python object each.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

import numpy as np


class PackedEmails:
    """Emails in one UTF-8 buffer, each ended by a newline.

    An email costs its own bytes and a newline (~26 bytes), where a list of bytes objects costs ~70 bytes an
    email and pins the allocator's pools for the whole run. Offsets are worked out only when emails are picked
    by index.
    """

    __slots__ = ("_count", "data")
    _GATHER_CHUNK = 4096  # emails per gather step: its index arrays take 8 bytes per character (~1 MB a step)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self._count: int | None = None

    @classmethod
    def of(cls, items: Iterable[str]) -> PackedEmails:
        text = "\n".join(items)
        return cls((text + "\n").encode() if text else b"")

    def __len__(self) -> int:
        if self._count is None:
            self._count = self.data.count(b"\n")
        return self._count

    def tolist(self) -> list[str]:
        return self.data.decode().split("\n")[:-1] if self.data else []

    def take(self, indexes: np.ndarray) -> PackedEmails:
        """The emails at ``indexes``, in that order (vectorised, in bounded chunks)."""
        indexes = np.asarray(indexes, np.int64)
        source = np.frombuffer(self.data, np.uint8)
        offsets = np.concatenate([np.zeros(1, np.int64), np.flatnonzero(source == 10) + 1])
        pieces = []
        for lo in range(0, len(indexes), self._GATHER_CHUNK):
            chunk = indexes[lo:lo + self._GATHER_CHUNK]
            starts, lengths = offsets[chunk], offsets[chunk + 1] - offsets[chunk]
            out_starts = np.cumsum(lengths) - lengths
            positions = np.repeat(starts - out_starts, lengths) + np.arange(int(lengths.sum()))
            pieces.append(source[positions].tobytes())
        return PackedEmails(b"".join(pieces))

    @classmethod
    def concat(cls, parts: list[PackedEmails]) -> PackedEmails:
        return cls(b"".join(p.data for p in parts))


class EmailStore:
    """Append-only emails, referred to by their position; an email never changes for a key (the key is its hash).

    Kept as zlib-compressed chunks of up to ``CHUNK`` emails (a fold's new emails, or a slice of a loaded file):
    emails are the largest part of the state (~26 bytes a contact), are read only to unsubscribe leavers and
    compress ~3x. The state file stores the chunks as they are, so saving does not compress them again.
    """

    CHUNK = 65536
    LEVEL = 1  # zlib's fastest level: it already gets most of what higher levels would, for far less time

    def __init__(self, emails: PackedEmails | None = None) -> None:
        self.chunks: list[bytes] = []
        self.counts: list[int] = []
        self.count = 0
        if emails is not None:
            self.append(emails)

    def append(self, emails: PackedEmails) -> int:
        """Add ``emails``; returns the position of the first."""
        first = self.count
        for piece in _pieces(emails, self.CHUNK):
            self.add_compressed(zlib.compress(piece.data, self.LEVEL), len(piece))
        return first

    def add_compressed(self, chunk: bytes, count: int) -> None:
        if count:
            self.chunks.append(chunk)
            self.counts.append(count)
            self.count += count

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.chunks))

    def get(self, refs: np.ndarray) -> list[str]:
        """The emails at positions ``refs``, in that order (inflating only the chunks they are in)."""
        refs = np.asarray(refs, np.int64)
        out: list[str] = [""] * len(refs)
        starts = np.cumsum([0, *self.counts])
        which = np.searchsorted(starts, refs, side="right") - 1
        for chunk_no in np.unique(which).tolist():
            picked = np.flatnonzero(which == chunk_no)
            chunk = PackedEmails(zlib.decompress(self.chunks[chunk_no]))
            for i, email in zip(picked.tolist(), chunk.take(refs[picked] - starts[chunk_no]).tolist()):
                out[i] = email
        return out


def _pieces(emails: PackedEmails, size: int) -> Iterator[PackedEmails]:
    """``emails`` in runs of at most ``size`` (cut at newlines, no copies of the rest)."""
    if len(emails) <= size:
        yield emails
        return
    ends = np.flatnonzero(np.frombuffer(emails.data, np.uint8) == 10)[size - 1::size] + 1
    view = memoryview(emails.data)
    for lo, hi in zip([0, *ends.tolist()], [*ends.tolist(), len(emails.data)]):
        if hi > lo:
            yield PackedEmails(bytes(view[lo:hi]))
