"""The state file format: encoding and streaming decoding of a sync state, versions 1 to 4.

A file is the magic ``CIACST01``, a little-endian 4-byte length and a JSON header (``count``, ``version``,
from version 2 ``emails``, from version 3 ``emailChunks``), then sections, each an 8-byte length and either a
zlib stream or raw bytes. Journal records carry a batch's rows in the same framing (version 1).
"""
from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import orjson

from .emails import EmailStore, PackedEmails
from .rows import StateRows
from .table import SyncState

_MAGIC = b"CIACST01"

# 1: rows with aligned emails (the layout journal records use); 2: emails in one zlib section; 3: emails
# as the store's compressed chunks, stored as they are; 4: keys, fingerprints and email positions stored as they
# are too (a zlib stream at level 0 gained nothing and cost a copy of a whole column).
_VERSION = 4

_STORED, _FAST = 0, 1  # zlib levels
_RAW = None  # buffers written as they are: columns that look random, and emails already compressed
_FILE_TYPES = ("<u8", "<u8", "u1", "<u4")  # the table's keys, fingerprints, flags and email positions, on file
# How those columns are written, by file version (versions 1 and 2 are read whole).
_COLUMN_LEVELS = {3: (_STORED, _STORED, _FAST, _STORED), 4: (_RAW, _RAW, _FAST, _RAW)}

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


def encode_state_pieces(state: SyncState) -> Iterator[bytes]:
    """The state file in pieces, one section at a time: saving never holds a second copy of the whole state."""
    blocks, emails = state.fold().blocks, state.emails
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
        return SyncState(decode_rows(data))
    sections = _sections(data, 5)
    keys, fps, flags, refs = (np.frombuffer(next(sections), t).astype(t) for t in _FILE_TYPES)
    return _checked_state(header, keys, fps, flags, refs, EmailStore(PackedEmails(next(sections))))


def _checked_state(header: dict, keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray,
                   emails: EmailStore) -> SyncState:
    count = header["count"]
    if not (len(keys) == len(fps) == len(flags) == len(refs) == count) or emails.count != header["emails"]:
        raise ValueError("sync state sections disagree in length")
    if count and int(refs.max()) >= emails.count:
        raise ValueError("sync state refers to emails it does not hold")
    return SyncState.from_columns(keys, fps, flags, refs, emails)


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
