"""The resume journal: records of batches submitted and confirmed, their replay, and the buffered writer.

A record is a kind byte (``S`` submitted, ``C`` confirmed), a little-endian 4-byte length and a body. A
submitted record's body is the batch id as JSON, a NUL byte and the batch's rows (``encode_rows``); a confirmed
record's body is JSON: the batch id and the emails ActiveCampaign failed.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from ..errors import TransientError
from .rows import StateRows
from .state_file import decode_rows, encode_rows

MAX_APPEND_BYTES = 4 * 1024 * 1024  # an append blob's largest block
MAX_UNWRITTEN_SECONDS = 30  # records older than this and still unwritten stop the run
STOP_WAIT_SECONDS = 10  # how long stopping waits for the last write

log = logging.getLogger(__name__)

_SUBMITTED, _CONFIRMED = b"S", b"C"


def encode_submitted(batch_id: str, rows: StateRows) -> bytes:
    """The record of a batch handed to ActiveCampaign, with its rows."""
    body = orjson.dumps(batch_id) + b"\x00" + encode_rows(rows)
    return _SUBMITTED + struct.pack("<I", len(body)) + body


def encode_confirmed(batch_id: str, failed: set[str]) -> bytes:
    """The record of a batch ActiveCampaign finished, with the emails it failed."""
    body = orjson.dumps({"batchId": batch_id, "failed": sorted(failed)})
    return _CONFIRMED + struct.pack("<I", len(body)) + body


@dataclass
class JournalReplay:
    """A replayed journal: rows confirmed (failures dropped), batches still in flight by id, an unreadable tail."""

    confirmed: list[StateRows] = field(default_factory=list)
    in_flight: dict[str, StateRows] = field(default_factory=dict)
    unreadable_tail: bool = False


def replay_journal(data: bytes) -> JournalReplay:
    """Batches confirmed and batches still in flight when the previous run stopped."""
    submitted: dict[str, StateRows] = {}
    replay = JournalReplay()
    for kind, body in _records(data, replay):
        if kind == _SUBMITTED:
            batch_id_json, _, encoded_rows = body.partition(b"\x00")
            submitted[orjson.loads(batch_id_json)] = decode_rows(encoded_rows)
        elif kind == _CONFIRMED:
            record = orjson.loads(body)
            rows = submitted.pop(record["batchId"], None)
            if rows is not None:
                replay.confirmed.append(rows.without_emails(set(record["failed"])))
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
        self._interval = interval
        self._max_pending = max_pending
        self._pending = 0
        self._due = threading.Event()  # wakes the writer early: enough submitted batches are waiting
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unwritten_since: float | None = None  # when the oldest record not yet written was appended

    def start(self) -> Journal:
        self._blob.create_append_blob()
        self._thread = threading.Thread(target=self._write_loop, name="journal", daemon=True)
        self._thread.start()
        return self

    def append(self, record: bytes) -> None:
        with self._lock:
            self._add(record)

    def append_submitted(self, record: bytes) -> None:
        """Append a submitted-batch record; the writer wakes when ``max_pending`` of them are waiting."""
        with self._lock:
            self._add(record)
            self._pending += 1
            if self._pending >= self._max_pending:
                self._due.set()

    def _add(self, record: bytes) -> None:
        if self._unwritten_since is None:
            self._unwritten_since = time.monotonic()
        self._buffer += record

    def check(self) -> None:
        """Raises TransientError when records have waited too long to be written: a resumed run would not know
        what this run sent, so the run must not go on as if it did."""
        since = self._unwritten_since
        if since is not None and time.monotonic() - since > MAX_UNWRITTEN_SECONDS:
            raise TransientError(f"the resume journal could not be written for {MAX_UNWRITTEN_SECONDS} s (is the app's "
                                 "storage reachable?); the run stopped, and the next run resumes where it left off")

    def _write_loop(self) -> None:
        """The only writer: appends the buffered records in order, until stopped (then once more)."""
        while not self._stop.is_set():
            self._due.wait(self._interval)
            self._due.clear()
            self._write_buffered()
        self._write_buffered()

    def _write_buffered(self) -> None:
        with self._lock:
            data, self._buffer, self._pending = bytes(self._buffer), bytearray(), 0
        if not data:
            return
        try:
            for start in range(0, len(data), MAX_APPEND_BYTES):
                self._blob.append_block(data[start:start + MAX_APPEND_BYTES])
        except AzureError as exc:  # kept, in order, for the next try; check() tells the run if it lasts
            with self._lock:
                self._buffer[:0] = data[start:]
            log.warning("could not write the resume journal: %s", type(exc).__name__)
            return
        with self._lock:
            if not self._buffer:
                self._unwritten_since = None

    def stop(self) -> None:
        """Stop the writer after it has written what is buffered, waiting at most ``STOP_WAIT_SECONDS``: storage
        that does not answer must not hold the run up (the records still unwritten are then lost, and the next
        run sends those batches again)."""
        self._stop.set()
        self._due.set()
        if self._thread:
            self._thread.join(timeout=STOP_WAIT_SECONDS)
