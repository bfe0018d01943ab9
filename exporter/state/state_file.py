"""The state file format: encoding and streaming decoding of a sync state, versions 1 to 5.

A file is the magic ``CIACST01``, a little-endian 4-byte length and a JSON header (``count``, ``version``,
from version 2 ``emails``, from version 3 ``emailChunks``), then sections, each an 8-byte length and either a
zlib stream or raw bytes. Journal records carry a batch's rows in the same framing (version 1).

Version 5 (written) adds checksums: the header (magic, length and JSON) is followed by the CRC-32 of those
bytes, and each of the five sections (keys, fingerprints, flags, email positions, email chunks) by the CRC-32 of
its length and contents; nothing may follow the last one. All little-endian::

    "CIACST01" | u32 n | header JSON (n bytes) | u32 crc(magic..header)
    then 5 times: u64 length | contents (length bytes) | u32 crc(length, contents)

Checksums are worked out as the file streams, in both directions. Whatever cannot be read (a checksum that does
not match, a file cut short, a header of the wrong shape, keys out of order, references past the emails) raises
``StateFileError``, and nothing else.
"""
from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import orjson

from ..list_status import ListStatus
from .emails import EmailStore, PackedEmails
from .rows import StateRows
from .table import SyncState

_MAGIC = b"CIACST01"

# 1: rows with aligned emails (the layout journal records use); 2: emails in one zlib section; 3: emails
# as the store's compressed chunks, stored as they are; 4: keys, fingerprints and email positions stored as they
# are too (a zlib stream at level 0 gained nothing and cost a copy of a whole column); 5: version 4 with a
# CRC-32 after the header and after each section (one flipped byte of a key once unsubscribed a contact).
_VERSION = 5
_CHECKED_FROM = 5  # the first version with checksums

_STORED, _FAST = 0, 1  # zlib levels
_RAW = None  # buffers written as they are: columns that look random, and emails already compressed
_FILE_TYPES = ("<u8", "<u8", "u1", "<u4")  # the table's keys, fingerprints, flags and email positions, on file
# How those columns are written, by file version (versions 1 and 2 are read whole).
_COLUMN_LEVELS = {3: (_STORED, _STORED, _FAST, _STORED), 4: (_RAW, _RAW, _FAST, _RAW), 5: (_RAW, _RAW, _FAST, _RAW)}
_SECTIONS = ("keys", "fingerprints", "flags", "email positions", "emails")

_MAX_HEADER = 64 << 20  # bytes: a header length past this is a damaged file, not a header to read
_MAX_COUNT = 2**32 - 1  # email positions are 32-bit


class StateFileError(ValueError):
    """A sync state file that cannot be read: damaged, cut short, or not a state file at all."""


_READ_PIECE = 1 << 20  # bytes read from the stream at a time


def encode_rows(rows: StateRows) -> bytes:
    """A batch's rows with aligned emails (journal records)."""
    return _pack({"count": len(rows), "version": 1},
                 [[rows.keys.astype("<u8")], [rows.fingerprints.astype("<u8")], [rows.flags.astype(np.uint8)],
                  [memoryview(rows.emails.data)[:-1]]], (_STORED, _STORED, _FAST, _FAST))


def decode_rows(data: bytes) -> StateRows:
    """Rows written by ``encode_rows`` (a journal record's batch, or a whole version 1 state file)."""
    header, sections = _unpack(data, 4)
    count = header["count"]
    keys, fps, flags = _columns(sections[:3])
    emails = PackedEmails(sections[3] + b"\n" if count else b"")
    if not (len(keys) == len(fps) == len(flags) == len(emails) == count):
        raise ValueError("sections disagree in length")
    return StateRows(keys, fps, flags, emails)


def encode_state(state: SyncState) -> bytes:
    """The state file, whole (saving streams ``encode_state_pieces`` instead)."""
    return b"".join(encode_state_pieces(state))


def encode_state_pieces(state: SyncState, version: int = _VERSION) -> Iterator[bytes]:
    """The state file in pieces, one section at a time: saving never holds a second copy of the whole state.

    ``version`` 4 (no checksums) is there for tests that need a file written the way older exporters did."""
    if version not in (4, _VERSION):
        raise ValueError(f"cannot write sync state file version {version}")
    blocks, emails = state.fold().blocks, state.emails
    columns = [[block[i].astype(t, copy=False) for block in blocks] for i, t in enumerate(_FILE_TYPES)]
    header = {"count": len(state), "emails": emails.count, "version": version,
              "emailChunks": [[count, len(chunk)] for count, chunk in zip(emails.counts, emails.chunks)]}
    return _pack_pieces(header, [*columns, emails.chunks], (*_COLUMN_LEVELS[version], _RAW),
                        checked=version >= _CHECKED_FROM)


def decode_state(data: bytes) -> SyncState:
    """A saved sync state; also reads versions 1 to 4 (1: emails aligned with the keys, 2: emails in one
    section, 3 and 4: no checksums)."""
    return read_state(io.BytesIO(data))


def read_state(stream: BinaryIO, key_of: Callable[[str], int] | None = None) -> SyncState:
    """A saved sync state read from ``stream`` (a file, or a blob download) as it arrives: each column is
    inflated straight into its array, so loading holds the state and one piece of the file, not the file too.

    With ``key_of`` (the exporter's key of an email), a file older than version 5, which has no checksums, has
    every key checked against its email (about 0.5 s for 1M contacts, once: the next save writes version 5).
    Raises ``StateFileError`` for anything it cannot read (errors of the stream itself pass through)."""
    try:
        return _read_state(_Reader(stream), key_of)
    except StateFileError:
        raise
    except (ValueError, zlib.error, struct.error) as exc:  # the older versions' whole-file path, and numpy's views
        raise StateFileError(f"sync state file damaged: {exc}") from exc


class _Reader:
    """The stream read exactly, with a running CRC-32 of what was read since the last check."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.checked = True  # until the header says the file is older than version 5
        self.crc = 0

    def read(self, size: int) -> bytes:
        data = _read_exact(self.stream, size)
        if self.checked:
            self.crc = zlib.crc32(data, self.crc)
        return data

    def read_into(self, out: memoryview) -> None:
        """Fill ``out`` a piece at a time."""
        for offset in range(0, len(out), _READ_PIECE):
            piece = self.read(min(_READ_PIECE, len(out) - offset))
            out[offset:offset + len(piece)] = piece

    def check(self, what: str) -> None:
        """Compare the CRC-32 that follows with what was read since the last check (version 5 on)."""
        if not self.checked:
            return
        expected, self.crc = self.crc, 0
        (stored,) = struct.unpack("<I", _read_exact(self.stream, 4))
        if stored != expected:
            raise StateFileError(f"the sync state file's {what} do not match their checksum")

    def check_end(self) -> None:
        if self.checked and self.stream.read(1):
            raise StateFileError("the sync state file goes on past its last section")


def _read_state(reader: _Reader, key_of: Callable[[str], int] | None) -> SyncState:
    start = reader.read(12)
    if start[:8] != _MAGIC:
        raise StateFileError("not a sync state file (bad magic)")
    (head_length,) = struct.unpack_from("<I", start, 8)
    if head_length > _MAX_HEADER:
        raise StateFileError(f"the sync state file's header length ({head_length} bytes) is not plausible")
    head = reader.read(head_length)
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise StateFileError(f"the sync state file's header is not JSON ({exc})") from None
    version = _version(header)
    if version < _CHECKED_FROM:
        reader.checked = False
    reader.check("header bytes")
    _check_header(header, version)
    if version < 3:
        state = _decode_whole(start + head + reader.stream.read(), header)
    else:
        keys, fps, flags, refs = (_read_column(reader, header["count"], t, level, name) for t, level, name
                                  in zip(_FILE_TYPES, _COLUMN_LEVELS[version], _SECTIONS))
        emails = _read_email_chunks(reader, header)
        reader.check_end()
        state = _checked_state(header, keys, fps, flags, refs, emails)
    if key_of is not None and version < _CHECKED_FROM:
        _check_keys(state, key_of, version)
    return state


def _check_keys(state: SyncState, key_of: Callable[[str], int], version: int) -> None:
    """Every key is the key of its email (a file without checksums could hold a damaged key, which mirror mode
    would take for a contact who left, and unsubscribe its email); the emails are inflated a chunk at a time."""
    emails = state.emails
    by_ref, at = np.empty(emails.count, np.uint64), 0
    for chunk, count in zip(emails.chunks, emails.counts):
        try:
            items = PackedEmails(zlib.decompress(chunk)).tolist()
        except (zlib.error, UnicodeDecodeError) as exc:
            raise StateFileError(f"the sync state's emails do not inflate ({exc})") from None
        if len(items) != count:
            raise StateFileError("the sync state's email chunks disagree with their counts")
        by_ref[at:at + count] = np.fromiter(map(key_of, items), np.uint64, count)
        at += count
    for keys, _, _, refs in state.blocks:
        if not np.array_equal(keys, by_ref[refs]):
            raise StateFileError(f"sync state keys do not match their emails (a version {version} file, which has "
                                 "no checksums)")


def _version(header: object) -> int:
    if not isinstance(header, dict):
        raise StateFileError("the sync state file's header is not a JSON object")
    version = header.get("version", 1)
    if type(version) is not int or version < 1:
        raise StateFileError(f"the sync state file's version is not a version number ({_shown(version)})")
    if version not in (1, 2, *_COLUMN_LEVELS):
        raise StateFileError(f"sync state file version {version} is newer than this exporter knows (up to "
                             f"{_VERSION})")
    return version


def _check_header(header: dict, version: int) -> None:
    """The header's fields are there and of the right type and range for ``version``, or StateFileError."""
    for name in ("count", "emails") if version >= 2 else ("count",):
        if not _is_count(header.get(name)):
            raise StateFileError(f"the sync state file's header has no valid {name!r} ({_shown(header.get(name))})")
    if version < 3:
        return
    chunks = header.get("emailChunks")
    if not (isinstance(chunks, list) and all(
            isinstance(c, list) and len(c) == 2 and _is_count(c[0]) and c[0] > 0 and _is_count(c[1], 2**63)
            for c in chunks)):
        raise StateFileError(f"the sync state file's header has no valid 'emailChunks' ({_shown(chunks)})")
    if sum(count for count, _ in chunks) != header["emails"]:
        raise StateFileError("the sync state file's email chunks do not add up to its email count")


def _is_count(value: object, limit: int = _MAX_COUNT) -> bool:
    return type(value) is int and 0 <= value <= limit


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _decode_whole(data: bytes, header: dict) -> SyncState:
    """Version 1 and 2 files, read whole."""
    if header.get("version", 1) == 1:
        return SyncState(decode_rows(data))
    sections = _sections(data, 5)
    keys, fps, flags, refs = (np.frombuffer(next(sections), t).astype(t) for t in _FILE_TYPES)
    return _checked_state(header, keys, fps, flags, refs, EmailStore(PackedEmails(next(sections))))


def _checked_state(header: dict, keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray,
                   emails: EmailStore) -> SyncState:
    count = header["count"]
    if not (len(keys) == len(fps) == len(flags) == len(refs) == count) or emails.count != header["emails"]:
        raise StateFileError("sync state sections disagree in length")
    if count and int(refs.max()) >= emails.count:
        raise StateFileError("sync state refers to emails it does not hold")
    if count > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        raise StateFileError("sync state keys are out of order or repeated")
    if count and not bool(np.all((flags == ListStatus.SUBSCRIBED) | (flags == ListStatus.UNSUBSCRIBED))):
        raise StateFileError("sync state holds a list status that is neither subscribed nor unsubscribed")
    return SyncState.from_columns(keys, fps, flags, refs, emails)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise StateFileError("sync state file ends early")
        data += more
    return data


def _read_column(reader: _Reader, count: int, dtype: str, level: int | None, name: str) -> np.ndarray:
    (length,) = struct.unpack("<Q", reader.read(8))
    if level is not _RAW:
        column = _inflate_column(reader, length, count, dtype)
    else:
        if length != count * np.dtype(dtype).itemsize:  # before anything is allocated
            raise StateFileError("sync state sections disagree in length")
        column = np.empty(count, dtype)
        reader.read_into(memoryview(column).cast("B"))
    reader.check(name)
    return column


def _inflate_column(reader: _Reader, length: int, count: int, dtype: str) -> np.ndarray:
    """The section's zlib stream of ``count`` values, inflated into a new array a piece at a time."""
    column = np.empty(count, dtype)
    out, filled = memoryview(column).cast("B"), 0
    inflater = zlib.decompressobj()
    for offset in range(0, length, _READ_PIECE):
        try:
            piece = inflater.decompress(reader.read(min(_READ_PIECE, length - offset)), len(out) - filled + 1)
        except zlib.error as exc:
            raise StateFileError(f"a sync state section does not inflate ({exc})") from None
        if filled + len(piece) > len(out) or inflater.unconsumed_tail:
            raise StateFileError("sync state sections disagree in length")
        out[filled:filled + len(piece)] = piece
        filled += len(piece)
    if filled != len(out) or not inflater.eof:
        raise StateFileError("sync state sections disagree in length")
    return column


def _read_email_chunks(reader: _Reader, header: dict) -> EmailStore:
    (length,) = struct.unpack("<Q", reader.read(8))
    if sum(size for _, size in header["emailChunks"]) != length:
        raise StateFileError("sync state email chunks disagree with their section")
    store = EmailStore()
    for count, size in header["emailChunks"]:
        store.add_compressed(reader.read(size), count)
    reader.check(_SECTIONS[4])
    return store


def _pack(header: dict, sections: list[list], levels: tuple[int | None, ...]) -> bytes:
    return b"".join(_pack_pieces(header, sections, levels))


def _pack_pieces(header: dict, sections: list[list], levels: tuple[int | None, ...],
                 checked: bool = False) -> Iterator[bytes]:
    """Magic, header, then each section as a zlib stream (a section may come in several buffers), compressed
    only when its turn comes; a ``_RAW`` section's buffers are written as they are. When ``checked``, the header
    and each section are followed by their CRC-32 (version 5), worked out as the pieces go by."""
    head = orjson.dumps(header)
    start = _MAGIC + struct.pack("<I", len(head)) + head
    yield start + (struct.pack("<I", zlib.crc32(start)) if checked else b"")
    for buffers, level in zip(sections, levels, strict=True):
        if level is _RAW:
            length = struct.pack("<Q", sum(memoryview(b).nbytes for b in buffers))
            crc = zlib.crc32(length)
            yield length
            for buffer in buffers:
                piece = buffer if isinstance(buffer, bytes) else bytes(memoryview(buffer))  # an array: one block
                if checked:
                    crc = zlib.crc32(piece, crc)
                yield piece
        else:
            compressor = zlib.compressobj(level)
            compressed = [compressor.compress(b) for b in buffers] + [compressor.flush()]
            length = struct.pack("<Q", sum(map(len, compressed)))
            yield length
            if checked:
                crc = zlib.crc32(length)
                for piece in compressed:
                    crc = zlib.crc32(piece, crc)
            yield from compressed
            del compressed  # before the next section is compressed
        if checked:
            yield struct.pack("<I", crc)


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
        if offset + length > len(data):
            raise ValueError("sync state file ends early")
        yield zlib.decompress(view[offset:offset + length])
        offset += length


def _columns(sections: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Read-only views, no copies: folding a run's confirmations in builds new arrays anyway.
    return np.frombuffer(sections[0], "<u8"), np.frombuffer(sections[1], "<u8"), np.frombuffer(sections[2], np.uint8)
