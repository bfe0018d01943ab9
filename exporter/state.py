"""Per-export state in the app's storage: the run lock, the sync state and the resume journal.

- ``<export>/lock``: a blob lease; one run per export at a time; a crashed host's lease expires by itself.
- ``<export>/state.bin``: for every contact this export put on (or took off) the list, a 64-bit key of the
  email, a 64-bit fingerprint of what ActiveCampaign confirmed, a flag, and the email (needed to unsubscribe
  leavers). Numpy arrays sorted by key plus zlib-compressed email chunks: ~30 MB for 1M contacts. Replaced
  atomically with an ETag condition.
- ``<export>/journal``: an append blob written during a run: batches submitted (with their contacts) and
  batches confirmed. A run that dies leaves it behind; the next run replays it, asks ActiveCampaign about
  batches that were in flight, folds everything confirmed into the state and only then starts sending.
"""
from __future__ import annotations

import io
import logging
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import orjson
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContainerClient

from .errors import RunLocked
from .list_status import ListStatus
from .settings import STATE_CONTAINER

log = logging.getLogger(__name__)


_MAGIC = b"CIACST01"
LEASE_SECONDS = 15  # the shortest lease Azure allows: a crashed run's lock frees quickly


# --- the run lock ---------------------------------------------------------------------------------------------


def lock_blob_name(export: str) -> str:
    """The blob whose lease is an export's run lock (in the state container)."""
    return f"{export}/lock"


class ExportLock:
    """A renewed blob lease per export. A second run fails fast with RunLocked naming the holder."""

    def __init__(self, container: ContainerClient, export: str, run_id: str) -> None:
        self._blob = container.get_blob_client(lock_blob_name(export))
        self._export = export
        self._run_id = run_id
        self._lease: BlobLeaseClient | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.wait_seconds = 0.0

    def acquire(self, wait_seconds: float = 0.0) -> "ExportLock":
        """Take the lock, waiting up to ``wait_seconds`` (long enough for a crashed run's lease to expire)."""
        try:
            self._blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        deadline = time.monotonic() + wait_seconds
        while self._lease is None:
            try:
                self._lease = self._blob.acquire_lease(lease_duration=LEASE_SECONDS)
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                if time.monotonic() >= deadline:
                    holder = (self._blob.get_blob_properties().metadata or {}).get("runid", "another run")
                    raise RunLocked(f"export {self._export!r} is already running (run {holder}); this run was "
                                    f"skipped. A crashed run's lock expires within {LEASE_SECONDS} s") from None
                time.sleep(1.0)
        self._blob.set_blob_metadata({"runid": self._run_id}, lease=self._lease)
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self._export}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                self._lease.renew()  # type: ignore[union-attr]
            except HttpResponseError as exc:  # lost the lease: the next renewal or release will tell
                log.error("could not renew the run lock of %s: %s", self._export, exc.message)

    def release(self) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join(timeout=5)
        if self._lease:
            try:
                self._lease.release()
            except HttpResponseError:
                pass
            self._lease = None

    def __enter__(self) -> "ExportLock":
        return self.acquire(self.wait_seconds)

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- keys seen in this run ------------------------------------------------------------------------------------


class KeySet:
    """A growing set of 64-bit keys kept as a few sorted arrays (8 bytes a key, where a Python set takes ~70).

    Arrays of similar size are merged, so there are only ~log2(n / chunk) of them to search, up to
    ``MAX_MERGED`` keys: a merge briefly holds its inputs and its output, so merging without a cap would cost
    memory in proportion to the export (16 MB more at 2M keys). Past the cap there is one more array to search
    per ``MAX_MERGED`` keys.
    """

    MAX_MERGED = 1 << 20

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Add ``keys``; returns a mask of those not seen before (the first of repeats within ``keys``)."""
        fresh = np.zeros(len(keys), bool)
        fresh[np.unique(keys, return_index=True)[1]] = True
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, keys), len(level) - 1)
            fresh &= level[pos] != keys
        if fresh.any():  # an empty array would break the searches above (a chunk of nothing but repeats)
            self._push(np.sort(keys[fresh]))
        return fresh

    def _push(self, keys: np.ndarray) -> None:
        self._levels.append(keys)
        while (len(self._levels) > 1 and len(self._levels[-2]) <= 2 * len(self._levels[-1])
               and len(self._levels[-2]) + len(self._levels[-1]) <= self.MAX_MERGED):
            newer, older = self._levels.pop(), self._levels.pop()
            # Both are sorted and share no key: inserting one into the other is one new array, where
            # concatenating and sorting made two (a 1M-key merge briefly held 24 MB instead of 16).
            self._levels.append(np.insert(older, np.searchsorted(older, newer), newer))

    def sorted(self) -> np.ndarray:
        if not self._levels:
            return np.empty(0, np.uint64)
        return np.sort(np.concatenate(self._levels))

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    @property
    def nbytes(self) -> int:
        return sum(level.nbytes for level in self._levels)


# --- the sync state -------------------------------------------------------------------------------------------


class Strings:
    """Many short strings (emails) in one UTF-8 buffer, each ended by a newline.

    A million emails take one ~26 MB buffer, where a list of bytes objects takes ~70 MB and pins the
    allocator's pools for the whole run. Offsets are worked out only when strings are picked by index.
    """

    __slots__ = ("data", "_count")
    _GATHER_CHUNK = 4096  # strings per gather step: its index arrays take 8 bytes per character (~1 MB a step)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self._count: int | None = None

    @classmethod
    def of(cls, items: Iterable[str]) -> "Strings":
        text = "\n".join(items)
        return cls((text + "\n").encode() if text else b"")

    def __len__(self) -> int:
        if self._count is None:
            self._count = self.data.count(b"\n")
        return self._count

    def tolist(self) -> list[str]:
        return self.data.decode().split("\n")[:-1] if self.data else []

    def take(self, indexes: np.ndarray) -> "Strings":
        """The strings at ``indexes``, in that order (vectorised, in bounded chunks)."""
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
        return Strings(b"".join(pieces))

    @classmethod
    def concat(cls, parts: list["Strings"]) -> "Strings":
        return cls(b"".join(p.data for p in parts))


@dataclass
class Entries:
    """Contacts as parallel arrays (what the journal carries and a run confirms)."""

    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    fingerprints: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    flags: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))
    emails: Strings = field(default_factory=Strings)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, keys: Iterable[int], fingerprints: Iterable[int], flags: Iterable[int], emails: list[str]) -> "Entries":
        return cls(np.fromiter(keys, np.uint64), np.fromiter(fingerprints, np.uint64),
                   np.fromiter(flags, np.uint8), Strings.of(emails))

    @classmethod
    def concat(cls, parts: list["Entries"]) -> "Entries":
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.keys for p in parts]), np.concatenate([p.fingerprints for p in parts]),
                   np.concatenate([p.flags for p in parts]), Strings.concat([p.emails for p in parts]))

    def take(self, indexes: np.ndarray) -> "Entries":
        return Entries(self.keys[indexes], self.fingerprints[indexes], self.flags[indexes], self.emails.take(indexes))

    def without_emails(self, failed: set[str]) -> "Entries":
        if not failed:
            return self
        keep = np.array([i for i, e in enumerate(self.emails.tolist()) if e not in failed], np.int64)
        return self.take(keep)

    def latest_per_key(self) -> "Entries":
        """One entry per key, the last one given, sorted by key."""
        _, first_in_reversed = np.unique(self.keys[::-1], return_index=True)
        return self.take(len(self) - 1 - first_in_reversed)


class EmailStore:
    """Append-only emails, referred to by their position; an email never changes for a key (the key is its hash).

    Kept as zlib-compressed chunks of up to ``CHUNK`` emails (a fold's new emails, or a slice of a loaded file):
    emails are the largest part of the state (~26 bytes a contact), are read only to unsubscribe leavers and
    compress ~3x. The state file stores the chunks as they are, so saving does not compress them again.
    """

    CHUNK = 65536
    LEVEL = 1  # zlib's fastest: ~20 ms a chunk, most of the gain of higher levels

    def __init__(self, emails: Strings | None = None) -> None:
        self.chunks: list[bytes] = []
        self.counts: list[int] = []
        self.count = 0
        if emails is not None:
            self.append(emails)

    def append(self, emails: Strings) -> int:
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
            chunk = Strings(zlib.decompress(self.chunks[chunk_no]))
            for i, email in zip(picked.tolist(), chunk.take(refs[picked] - starts[chunk_no]).tolist()):
                out[i] = email
        return out


def _pieces(emails: Strings, size: int) -> Iterator[Strings]:
    """``emails`` in runs of at most ``size`` (cut at newlines, no copies of the rest)."""
    if len(emails) <= size:
        yield emails
        return
    ends = np.flatnonzero(np.frombuffer(emails.data, np.uint8) == 10)[size - 1::size] + 1
    view = memoryview(emails.data)
    for lo, hi in zip([0, *ends.tolist()], [*ends.tolist(), len(emails.data)]):
        if hi > lo:
            yield Strings(bytes(view[lo:hi]))


Block = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # keys, fingerprints, flags, email refs; by key
_BLOCK_TYPES = (np.uint64, np.uint64, np.uint8, np.uint32)
_FILE_TYPES = ("<u8", "<u8", "u1", "<u4")  # the same columns in the state file


class SyncState:
    """What ActiveCampaign confirmed for this export: key, fingerprint, flag and email per contact.

    The table is a few blocks of up to ``2 * BLOCK`` contacts, each a set of arrays sorted by key (keys,
    fingerprints, flags, email positions), with each block's first key in an index; emails live in an
    append-only store. A run's confirmations are folded in every ``COMPACT_EVERY`` contacts: changed
    fingerprints are written in place and only blocks that gain keys are rebuilt, one at a time. Memory stays
    at ~21 bytes a contact plus the compressed email, and a fold never holds a second copy of the table (one
    table copied whole at every fold was a 1M run's memory peak, ~40 MB above the rest).
    """

    COMPACT_EVERY = 65536
    BLOCK = 65536

    def __init__(self, base: Entries | None = None) -> None:
        base = base or Entries()
        order = np.argsort(base.keys, kind="stable")
        self._emails = EmailStore(base.emails)
        self._set_blocks(_split(*_writable(base.keys[order], base.fingerprints[order], base.flags[order],
                                           order.astype(np.uint32)), self.BLOCK))
        self._recent: list[Entries] = []
        self._recent_count = 0
        self._lock = threading.Lock()  # the confirmations not folded in yet
        self._folding = threading.Lock()  # one fold at a time

    @classmethod
    def from_columns(cls, keys: np.ndarray, fingerprints: np.ndarray, flags: np.ndarray, refs: np.ndarray,
                     emails: "Strings | EmailStore") -> "SyncState":
        """A state from key-sorted columns (copied where they are read-only: folds write fingerprints in place)."""
        state = cls()
        state._emails = emails if isinstance(emails, EmailStore) else EmailStore(emails)
        state._set_blocks(_split(*_writable(keys, fingerprints, flags, refs), cls.BLOCK))
        return state

    def _set_blocks(self, blocks: list[Block]) -> None:
        # One tuple, swapped whole: a reader on another thread sees either the old blocks or the new ones.
        self._table = (tuple(blocks), np.array([block[0][0] for block in blocks], np.uint64))

    def _column(self, which: int) -> np.ndarray:
        blocks = self._table[0]
        if not blocks:
            return np.empty(0, _BLOCK_TYPES[which])
        return np.concatenate([block[which] for block in blocks])

    @property
    def keys(self) -> np.ndarray:
        return self._column(0)

    @property
    def fingerprints(self) -> np.ndarray:
        return self._column(1)

    @property
    def flags(self) -> np.ndarray:
        return self._column(2)

    @property
    def emails(self) -> EmailStore:
        return self._emails

    @property
    def block_count(self) -> int:
        return len(self._table[0])

    def __len__(self) -> int:
        return sum(len(block[0]) for block in self._table[0])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confirmed fingerprint and flag for each key (0, 0 where unknown)."""
        blocks, firsts = self._table
        fps, flags = np.zeros(len(keys), np.uint64), np.zeros(len(keys), np.uint8)
        if not blocks:
            return fps, flags
        which = _block_of(firsts, keys)
        for b in np.unique(which).tolist():
            picked = np.flatnonzero(which == b)
            known, known_fps, known_flags, _ = blocks[b]
            pos = np.minimum(np.searchsorted(known, keys[picked]), len(known) - 1)
            found = known[pos] == keys[picked]
            fps[picked[found]], flags[picked[found]] = known_fps[pos[found]], known_flags[pos[found]]
        return fps, flags

    def record(self, entries: Entries) -> None:
        """Contacts ActiveCampaign has confirmed; a later confirmation of a key replaces an earlier one."""
        if not len(entries):
            return
        with self._lock:
            self._recent.append(entries)
            self._recent_count += len(entries)
            if self._recent_count < self.COMPACT_EVERY:
                return
            taken = self._start_fold()
        self._finish_fold(taken)

    def fold(self) -> "SyncState":
        """Apply every confirmation recorded so far; returns self."""
        with self._lock:
            taken = self._start_fold()
        self._finish_fold(taken)
        return self

    def _start_fold(self) -> list[Entries]:
        # Called holding _lock: taking the fold lock before letting go of it applies folds in the order their
        # confirmations were recorded. Other threads go on recording while a fold runs (~50 ms of CPU at 1M
        # contacts, far longer in wall time on a busy interpreter); they wait only if another fold comes due.
        taken, self._recent, self._recent_count = self._recent, [], 0
        self._folding.acquire()
        return taken

    def _finish_fold(self, taken: list[Entries]) -> None:
        try:
            if taken:
                self._merge(Entries.concat(taken).latest_per_key())
        finally:
            self._folding.release()

    def _merge(self, update: Entries) -> None:
        blocks = list(self._table[0])
        if not blocks:
            first_ref = self._emails.append(update.emails)
            refs = np.arange(first_ref, first_ref + len(update), dtype=np.uint32)
            self._set_blocks(_split(update.keys, update.fingerprints, update.flags, refs, self.BLOCK))
            return
        which = _block_of(self._table[1], update.keys)  # sorted, as the update's keys are
        bounds = np.searchsorted(which, np.arange(len(blocks) + 1))
        touched = np.flatnonzero(np.diff(bounds)).tolist()
        pos, found = np.empty(len(update), np.int64), np.empty(len(update), bool)
        for b in touched:
            lo, hi, known = bounds[b], bounds[b + 1], blocks[b][0]
            pos[lo:hi] = np.searchsorted(known, update.keys[lo:hi])
            found[lo:hi] = known[np.minimum(pos[lo:hi], len(known) - 1)] == update.keys[lo:hi]
        new = np.flatnonzero(~found)
        first_ref = self._emails.append(update.emails.take(new))
        refs = np.zeros(len(update), np.uint32)
        refs[new] = np.arange(first_ref, first_ref + len(new), dtype=np.uint32)
        for b in reversed(touched):  # from the last, so a block split in two does not move those still to do
            part = slice(bounds[b], bounds[b + 1])
            keys, fps, flags, block_refs = blocks[b]
            hit, at = found[part], pos[part]
            fps[at[hit]], flags[at[hit]] = update.fingerprints[part][hit], update.flags[part][hit]
            if hit.all():
                continue
            gain, at = ~hit, at[~hit]
            merged = (np.insert(keys, at, update.keys[part][gain]), np.insert(fps, at, update.fingerprints[part][gain]),
                      np.insert(flags, at, update.flags[part][gain]), np.insert(block_refs, at, refs[part][gain]))
            blocks[b:b + 1] = _split(*merged, self.BLOCK)
            self._set_blocks(blocks)  # per block, so each replaced block is freed before the next is copied

    @property
    def pending_updates(self) -> int:
        with self._lock:
            return self._recent_count

    def subscribed_missing_from(self, seen: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Contacts this export subscribed that are not in ``seen`` (sorted keys): candidates for removal."""
        keys, refs = [], []
        for block_keys, _, flags, block_refs in self.fold()._table[0]:
            idx = np.flatnonzero((flags == ListStatus.SUBSCRIBED) & ~np.isin(block_keys, seen))
            keys.append(block_keys[idx])
            refs.append(block_refs[idx])
        if not keys:
            return np.empty(0, np.uint64), []
        return np.concatenate(keys), self._emails.get(np.concatenate(refs))

    def subscribed_count(self) -> int:
        return sum(int(np.count_nonzero(block[2] == ListStatus.SUBSCRIBED)) for block in self._table[0])

    @property
    def nbytes(self) -> int:
        """Memory the state's arrays and emails hold (what grows with the number of contacts)."""
        with self._lock:
            recent = sum(e.keys.nbytes + e.fingerprints.nbytes + e.flags.nbytes + len(e.emails.data)
                         for e in self._recent)
        table = sum(a.nbytes for block in self._table[0] for a in block)
        return table + self._emails.nbytes + recent

    def entries(self) -> Entries:
        """Everything, sorted by key, emails aligned (for tests and tools: it copies every email)."""
        self.fold()
        return Entries(self.keys, self.fingerprints, self.flags, Strings.of(self._emails.get(self._column(3))))


def _block_of(firsts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The block each key falls in (keys below the first block's go to it)."""
    return np.maximum(np.searchsorted(firsts, keys, side="right") - 1, 0)


def _split(keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray, size: int) -> list[Block]:
    """Key-sorted columns as blocks of ~``size`` (views); one block while it is under twice that."""
    if not len(keys):
        return []
    pieces = 1 if len(keys) <= 2 * size else -(-len(keys) // size)
    return list(zip(*(np.array_split(column, pieces) for column in (keys, fps, flags, refs))))


def _writable(keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray) -> list[np.ndarray]:
    return [np.require(column, dtype, ["C", "W"]) for column, dtype in zip((keys, fps, flags, refs), _BLOCK_TYPES)]


# 2: emails in one zlib section; 3: emails as the store's compressed chunks, stored as they are; 4: keys,
# fingerprints and email positions as they are too (zlib at level 0 only copied them, a whole column at a time).
_VERSION = 4


def encode_entries(entries: Entries) -> bytes:
    """A batch's entries with aligned emails (journal records)."""
    return _pack({"count": len(entries), "version": 1},
                 [[entries.keys.astype("<u8")], [entries.fingerprints.astype("<u8")], [entries.flags.astype(np.uint8)],
                  [memoryview(entries.emails.data)[:-1]]], (_STORED, _STORED, _FAST, _FAST))


def decode_entries(data: bytes) -> Entries:
    header, sections = _unpack(data, 4)
    count = header["count"]
    keys, fps, flags = _columns(sections[:3])
    emails = Strings(sections[3] + b"\n" if count else b"")
    if not (len(keys) == len(fps) == len(flags) == len(emails) == count):
        raise ValueError("sections disagree in length")
    return Entries(keys, fps, flags, emails)


def encode_state(state: SyncState) -> bytes:
    return b"".join(encode_state_pieces(state))


def encode_state_pieces(state: SyncState) -> Iterator[bytes]:
    """The state file in pieces, one section at a time: saving never holds a second copy of the whole state."""
    blocks, emails = state.fold()._table[0], state.emails
    columns = [[block[i].astype(t, copy=False) for block in blocks] for i, t in enumerate(_FILE_TYPES)]
    header = {"count": len(state), "emails": emails.count, "version": _VERSION,
              "emailChunks": [[count, len(chunk)] for count, chunk in zip(emails.counts, emails.chunks)]}
    return _pack_pieces(header, [*columns, emails.chunks], (*_COLUMN_LEVELS[_VERSION], _RAW))


def decode_state(data: bytes) -> SyncState:
    """A saved sync state; also reads version 1 (emails aligned with the keys) and 2 (emails in one section)."""
    return read_state(io.BytesIO(data))


def read_state(stream: BinaryIO) -> SyncState:
    """A saved sync state read from ``stream`` (a file, or a blob download) as it arrives: each column is
    inflated straight into its array, so loading holds the state and one piece of the file, not the file too."""
    start = _read_exact(stream, 12)
    if start[:8] != _MAGIC:
        raise ValueError("not a sync state file (bad magic)")
    head = _read_exact(stream, struct.unpack_from("<I", start, 8)[0])
    header = orjson.loads(head)
    version = header.get("version", 1)
    if version < 3:
        return _decode_whole(start + head + stream.read(), header)
    if version not in _COLUMN_LEVELS:
        raise ValueError(f"sync state file version {version} is newer than this exporter knows (up to {_VERSION})")
    keys, fps, flags, refs = (_read_column(stream, header["count"], t, level)
                              for t, level in zip(_FILE_TYPES, _COLUMN_LEVELS[version]))
    return _checked_state(header, keys, fps, flags, refs, _read_email_chunks(stream, header))


def _decode_whole(data: bytes, header: dict) -> SyncState:
    """Version 1 and 2 files, read whole."""
    if header.get("version", 1) == 1:
        return SyncState(decode_entries(data))
    sections = _sections(data, 5)
    keys, fps, flags, refs = (np.frombuffer(next(sections), t).astype(t) for t in _FILE_TYPES)
    return _checked_state(header, keys, fps, flags, refs, EmailStore(Strings(next(sections))))


def _checked_state(header: dict, keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray,
                   emails: EmailStore) -> SyncState:
    count = header["count"]
    if not (len(keys) == len(fps) == len(flags) == len(refs) == count) or emails.count != header["emails"]:
        raise ValueError("sync state sections disagree in length")
    if count and int(refs.max()) >= emails.count:
        raise ValueError("sync state refers to emails it does not hold")
    return SyncState.from_columns(keys, fps, flags, refs, emails)


_READ_PIECE = 1 << 20


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise ValueError("sync state file ends early")
        data += more
    return data


def _read_column(stream: BinaryIO, count: int, dtype: str, level: int | None) -> np.ndarray:
    if level is not _RAW:
        return _inflate_column(stream, count, dtype)
    (length,) = struct.unpack("<Q", _read_exact(stream, 8))
    column = np.empty(count, dtype)
    out = memoryview(column).cast("B")
    if length != len(out):
        raise ValueError("sync state sections disagree in length")
    for offset in range(0, length, _READ_PIECE):
        piece = _read_exact(stream, min(_READ_PIECE, length - offset))
        out[offset:offset + len(piece)] = piece
    return column


def _inflate_column(stream: BinaryIO, count: int, dtype: str) -> np.ndarray:
    """The next section, a zlib stream of ``count`` values, inflated into a new array a piece at a time."""
    (length,) = struct.unpack("<Q", _read_exact(stream, 8))
    column = np.empty(count, dtype)
    out, filled = memoryview(column).cast("B"), 0
    inflater = zlib.decompressobj()
    for offset in range(0, length, _READ_PIECE):
        piece = inflater.decompress(_read_exact(stream, min(_READ_PIECE, length - offset)), len(out) - filled + 1)
        if filled + len(piece) > len(out) or inflater.unconsumed_tail:
            raise ValueError("sync state sections disagree in length")
        out[filled:filled + len(piece)] = piece
        filled += len(piece)
    if filled != len(out) or not inflater.eof:
        raise ValueError("sync state sections disagree in length")
    return column


def _read_email_chunks(stream: BinaryIO, header: dict) -> EmailStore:
    (length,) = struct.unpack("<Q", _read_exact(stream, 8))
    if sum(size for _, size in header["emailChunks"]) != length:
        raise ValueError("sync state email chunks disagree with their section")
    store = EmailStore()
    for count, size in header["emailChunks"]:
        store.add_compressed(_read_exact(stream, size), count)
    return store


_STORED, _FAST = 0, 1  # zlib levels
_RAW = None  # buffers written as they are: columns that look random, and emails already compressed
# The state file's keys, fingerprints, flags and email positions, by file version.
_COLUMN_LEVELS = {3: (_STORED, _STORED, _FAST, _STORED), 4: (_RAW, _RAW, _FAST, _RAW)}


def _pack(header: dict, sections: list[list], levels: tuple[int | None, ...]) -> bytes:
    return b"".join(_pack_pieces(header, sections, levels))


def _pack_pieces(header: dict, sections: list[list], levels: tuple[int | None, ...]) -> Iterator[bytes]:
    """Magic, header, then each section as a zlib stream (a section may come in several buffers), compressed
    only when its turn comes; a ``_RAW`` section's buffers are written as they are."""
    head = orjson.dumps(header)
    yield _MAGIC + struct.pack("<I", len(head)) + head
    for buffers, level in zip(sections, levels, strict=True):
        if level is _RAW:
            yield struct.pack("<Q", sum(memoryview(b).nbytes for b in buffers))
            yield from (b if isinstance(b, bytes) else bytes(memoryview(b)) for b in buffers)  # an array: one block
            continue
        compressor = zlib.compressobj(level)
        compressed = [compressor.compress(b) for b in buffers] + [compressor.flush()]
        yield struct.pack("<Q", sum(map(len, compressed)))
        yield from compressed
        del compressed  # before the next section is compressed


def _header(data: bytes) -> dict:
    if data[:8] != _MAGIC:
        raise ValueError("not a sync state file (bad magic)")
    (header_len,) = struct.unpack_from("<I", data, 8)
    return orjson.loads(data[12:12 + header_len])


def _unpack(data: bytes, count: int) -> tuple[dict, list[bytes]]:
    return _header(data), list(_sections(data, count))


def _sections(data: bytes, count: int) -> Iterator[bytes]:
    """The first ``count`` sections, each inflated when asked for."""
    offset = 12 + struct.unpack_from("<I", data, 8)[0]
    view = memoryview(data)
    for _ in range(count):
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8
        yield zlib.decompress(view[offset:offset + length])
        offset += length


def _columns(sections: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Read-only views, no copies: folding a run's confirmations in builds new arrays anyway.
    return np.frombuffer(sections[0], "<u8"), np.frombuffer(sections[1], "<u8"), np.frombuffer(sections[2], np.uint8)


# --- the journal ----------------------------------------------------------------------------------------------

_SUBMITTED, _CONFIRMED = b"S", b"C"


def encode_submitted(batch_id: str, entries: Entries) -> bytes:
    body = orjson.dumps(batch_id) + b"\x00" + encode_entries(entries)
    return _SUBMITTED + struct.pack("<I", len(body)) + body


def encode_confirmed(batch_id: str, failed: set[str]) -> bytes:
    body = orjson.dumps({"batchId": batch_id, "failed": sorted(failed)})
    return _CONFIRMED + struct.pack("<I", len(body)) + body


@dataclass
class JournalReplay:
    confirmed: list[Entries] = field(default_factory=list)
    in_flight: dict[str, Entries] = field(default_factory=dict)
    unreadable_tail: bool = False


def replay_journal(data: bytes) -> JournalReplay:
    """Batches confirmed and batches still in flight when the previous run stopped."""
    submitted: dict[str, Entries] = {}
    replay = JournalReplay()
    for kind, body in _records(data, replay):
        if kind == _SUBMITTED:
            batch_id_json, _, entries = body.partition(b"\x00")
            submitted[orjson.loads(batch_id_json)] = decode_entries(entries)
        elif kind == _CONFIRMED:
            record = orjson.loads(body)
            entries = submitted.pop(record["batchId"], None)
            if entries is not None:
                replay.confirmed.append(entries.without_emails(set(record["failed"])))
    replay.in_flight = submitted
    return replay


def _records(data: bytes, replay: JournalReplay) -> Iterator[tuple[bytes, bytes]]:
    offset = 0
    while offset + 5 <= len(data):
        kind = data[offset:offset + 1]
        (length,) = struct.unpack_from("<I", data, offset + 1)
        body = data[offset + 5:offset + 5 + length]
        if kind not in (_SUBMITTED, _CONFIRMED) or len(body) < length:
            replay.unreadable_tail = True  # a record cut short by a crash: everything before it stands
            return
        yield kind, body
        offset += 5 + length


class Journal:
    """Buffered appends to ``<export>/journal``.

    A record only decides how much a resumed run sends again (a batch ActiveCampaign took but the journal
    missed is simply upserted again), so records are grouped: written when ``max_pending`` submitted
    batches are waiting or every ``interval`` seconds. A crash costs at most that many batches resent.
    """

    def __init__(self, container: ContainerClient, export: str, interval: float = 0.25, max_pending: int = 4) -> None:
        self._blob = container.get_blob_client(f"{export}/journal")
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._interval = interval
        self._max_pending = max_pending
        self._pending = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None

    def start(self) -> "Journal":
        self._blob.create_append_blob()
        self._thread = threading.Thread(target=self._flush_loop, name="journal", daemon=True)
        self._thread.start()
        return self

    def append(self, record: bytes) -> None:
        with self._lock:
            self._buffer += record

    def append_submitted(self, record: bytes) -> None:
        """Append a submitted-batch record; writes when ``max_pending`` of them are waiting."""
        with self._lock:
            self._buffer += record
            self._pending += 1
            due = self._pending >= self._max_pending
        if due:
            self.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:  # keeps records in order across threads
            with self._lock:
                data, self._buffer, self._pending = bytes(self._buffer), bytearray(), 0
            self._write(data)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        # Append blocks are at most 4 MiB.
        for start in range(0, len(data), 4 * 1024 * 1024):
            try:
                self._blob.append_block(data[start:start + 4 * 1024 * 1024])
            except HttpResponseError as exc:  # resume then resends a little more; the run itself goes on
                self.error = exc
                log.warning("could not write the resume journal: %s", exc.message)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush()


# --- the store ------------------------------------------------------------------------------------------------


@dataclass
class LoadedState:
    state: SyncState
    etag: str | None
    problem: str | None = None  # why the stored state could not be used (then the run is a full one)
    journal: JournalReplay | None = None


class StateStore:
    def __init__(self, service: BlobServiceClient) -> None:
        self.container = service.get_container_client(STATE_CONTAINER)

    def ensure_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def lock(self, export: str, run_id: str, wait_seconds: float = 0.0) -> ExportLock:
        self.ensure_container()
        lock = ExportLock(self.container, export, run_id)
        lock.wait_seconds = wait_seconds
        return lock

    def load(self, export: str, run_id: str, read_only: bool = False) -> LoadedState:
        """The stored state, or an empty one with ``problem`` set when it is missing or unreadable.

        An unreadable state is copied aside (unless ``read_only``) so the next run does not trip over it again.
        """
        blob = self.container.get_blob_client(f"{export}/state.bin")
        try:
            download = blob.download_blob()
            etag = download.properties.etag
        except ResourceNotFoundError:
            loaded = LoadedState(SyncState(), None, None)
        except HttpResponseError as exc:
            if not (read_only and exc.status_code == 404):
                raise
            loaded = LoadedState(SyncState(), None, None)
        else:
            try:
                loaded = LoadedState(read_state(download), etag)  # read as it downloads, 4 MiB at a time
            except (ValueError, zlib.error, struct.error, orjson.JSONDecodeError, KeyError) as exc:
                aside = f"{export}/state.bin.unreadable-{run_id}"
                if not read_only:
                    self.container.get_blob_client(aside).start_copy_from_url(blob.url)
                loaded = LoadedState(SyncState(), etag, f"the sync state {STATE_CONTAINER}/{export}/state.bin is "
                                     f"unreadable ({exc}); it was kept as {aside} and this run sends every contact")
        if not read_only:
            loaded.journal = self._read_journal(export)
        return loaded

    def _read_journal(self, export: str) -> JournalReplay | None:
        try:
            data = self.container.get_blob_client(f"{export}/journal").download_blob().readall()
        except ResourceNotFoundError:
            return None
        return replay_journal(data)

    def save(self, export: str, state: SyncState, etag: str | None) -> str:
        """Replace the state atomically: fails (ResourceModifiedError) if someone else replaced it meanwhile."""
        blob = self.container.get_blob_client(f"{export}/state.bin")
        # Uploaded in blocks as it is encoded; the blob changes only when the block list is committed, and only if
        # the etag still matches.
        data = encode_state_pieces(state)
        if etag:
            result = blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
        else:
            try:
                result = blob.upload_blob(data, overwrite=False)
            except ResourceExistsError as exc:
                raise ResourceModifiedError("the sync state appeared while this run was going") from exc
        return result["etag"]

    def journal(self, export: str, bulk_rate: float) -> Journal:
        """A journal that groups about a quarter second of submitted batches per write (one at AC's real pace)."""
        return Journal(self.container, export, max_pending=max(1, min(32, round(bulk_rate * 0.25)))).start()

    def drop_journal(self, export: str) -> None:
        try:
            self.container.get_blob_client(f"{export}/journal").delete_blob()
        except ResourceNotFoundError:
            pass
