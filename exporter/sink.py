"""The sending side: batches of contacts → ActiveCampaign bulk imports → confirmed or rejected contacts.

Several bulk requests are in flight at once (AC answers slowly, so one at a time cannot reach the limit);
the client's shared pacer keeps them under the account's limits. Each accepted batch is then polled through
``import/info`` until AC has processed it; only then are its contacts confirmed.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from .activecampaign import BODY_OVERHEAD, MAX_CONTACTS_PER_REQUEST, MAX_REQUEST_BYTES, ActiveCampaignClient, BatchRejected
from .mapping import Contact, Reason, Rejection

log = logging.getLogger(__name__)

# Stay clearly under AC's 400,000-byte request limit.
MAX_BATCH_BYTES = MAX_REQUEST_BYTES - 10_000


@dataclass(slots=True)
class Batch:
    contacts: list[Contact]
    batch_id: str | None = None
    submitted_at: float = 0.0
    # What the listener keeps once AC has accepted the batch (it may drop ``contacts`` for it): up to
    # ``max_unconfirmed`` accepted batches wait for AC to process them.
    accepted: Any = None

    @property
    def emails(self) -> list[str]:
        return [c.email for c in self.contacts]

    @property
    def encoded(self) -> list[bytes]:
        return [c.encoded for c in self.contacts]

    def subset(self, indexes: list[int]) -> "Batch":
        return Batch([self.contacts[i] for i in indexes])


class Batcher:
    """Groups contacts into bulk requests by count (≤ 250) and encoded size (< 400,000 bytes)."""

    def __init__(self, max_count: int = MAX_CONTACTS_PER_REQUEST, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._contacts: list[Contact] = []
        self._bytes = BODY_OVERHEAD

    def add(self, contact: Contact) -> Batch | None:
        """Add a contact; returns a batch when one is full."""
        size = len(contact.encoded) + 1
        ready = None
        if self._contacts and self._bytes + size > self._max_bytes:
            ready = self.flush()
        self._contacts.append(contact)
        self._bytes += size
        if ready is None and len(self._contacts) >= self._max_count:
            ready = self.flush()
        return ready

    def flush(self) -> Batch | None:
        if not self._contacts:
            return None
        batch = Batch(self._contacts)
        self._contacts, self._bytes = [], BODY_OVERHEAD
        return batch


class SinkListener(Protocol):
    def submitted(self, batch: Batch) -> None: ...
    def confirmed(self, batch: Batch, failed_emails: set[str]) -> None: ...
    def rejected(self, rejection: Rejection) -> None: ...
    def unconfirmed(self, batch: Batch, why: str) -> None: ...


@dataclass
class PollTiming:
    first: float
    cap: float
    timeout: float

    @classmethod
    def for_rate(cls, requests_per_second: float) -> "PollTiming":
        # AC may answer "false" when polled within ~1 s, so the first poll waits ~2 s; it all scales with the
        # account's pace (tests and benchmarks use time-scaled limits), with floors so polls never spin.
        return cls(first=max(10.0 / requests_per_second, 0.02), cap=max(50.0 / requests_per_second, 0.25),
                   timeout=max(10.0, 3000.0 / requests_per_second))


@dataclass
class SinkCounters:
    requests_accepted: int = 0
    contacts_submitted: int = 0
    split_batches: int = 0
    batch_ids: list[str] = field(default_factory=list)


class InFlightWindow:
    """How many bulk requests may be in flight: enough to keep ``rate`` going at the server's latency
    (Little's law), and no more, since extra requests only queue up in the server and cost CPU here.

    The latency is the lowest of the recent ones, not their average: time spent queued (in the server, in the
    pacer, or here waiting for the CPU) grows with the number in flight, and sizing the window from it would
    feed on itself. A server that really slows down raises every recent latency, so the window follows.
    """

    # Above this rate (a ×60 time-scaled ActiveCampaign) the server sets no pace worth sizing for, and a fixed
    # number in flight is used: enough that the reader never waits on one answer, few enough that requests do
    # not just queue in the server. Measured on the 1M overhead run (2 cores, emulator without limits): 2 in
    # flight left the main thread waiting ~13 s of ~33; 8 cut that to ~6 s and the run by 4-5 s; ~35 gained
    # little more and made each answer ~15× slower.
    MAX_RATE = 100.0
    UNPACED = 8
    RECENT = 32

    def __init__(self, rate_per_second: float, maximum: int, initial_latency: float = 0.5) -> None:
        self._rate = rate_per_second
        self._maximum = maximum
        self._recent: deque[float] = deque([initial_latency], maxlen=self.RECENT)
        self.limit = self._compute()

    def observe(self, seconds: float) -> None:
        self._recent.append(seconds)
        self.limit = self._compute()

    def _compute(self) -> int:
        if self._rate > self.MAX_RATE:
            return min(self._maximum, self.UNPACED)
        return max(2, min(self._maximum, math.ceil(self._rate * min(self._recent) * 1.5) + 1))


class BulkSink:
    """Submits batches concurrently and confirms them; ``close()`` waits until every batch has an outcome.

    Bounds keep memory flat however large the export: requests in flight (the window), batches waiting for
    room in it (``max_waiting``) and batches not yet confirmed (``max_unconfirmed``); ``send`` blocks while
    the queue or the unconfirmed batches are full.
    """

    def __init__(self, client: ActiveCampaignClient, listener: SinkListener, *, bulk_rate: float, poll: PollTiming,
                 max_in_flight: int = 48, max_unconfirmed: int = 128, max_waiting: int = 8) -> None:
        self._client = client
        self._listener = listener
        self._window = InFlightWindow(bulk_rate, max_in_flight)
        self._senders = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ac-send")
        # Polls take as long as bulk requests and one is needed per batch: give them the same headroom.
        self._pollers = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ac-poll")
        self._max_unconfirmed = max_unconfirmed
        self._max_waiting = max_waiting
        self._waiting: deque[Batch] = deque()  # handed over, waiting for room in the window
        self._poll = poll
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._due: list[tuple[float, int, Batch, float]] = []
        self._seq = itertools.count()
        self._sending = 0  # requests in flight
        self._outstanding = 0  # batches handed to the sink and not settled yet
        self._stop = threading.Event()
        self.failure: BaseException | None = None
        self.counters = SinkCounters()
        self._scheduler = threading.Thread(target=self._schedule_polls, name="ac-poll-scheduler", daemon=True)
        self._scheduler.start()

    # --- public ------------------------------------------------------------------------------------------

    def send(self, batch: Batch) -> None:
        """Hand over a batch: sent now if the window has room, else queued behind it (up to ``max_waiting``
        batches, so the caller keeps reading while ActiveCampaign answers). Blocks while the queue or the
        unconfirmed batches are full. Raises if the sink has failed."""
        with self._changed:
            while self.failure is None and (len(self._waiting) >= self._max_waiting
                                            or self._outstanding >= self._max_unconfirmed):
                self._changed.wait(timeout=0.5)
            if self.failure is not None:
                raise self.failure
            self._outstanding += 1
            self._waiting.append(batch)
            ready = self._take_ready()
        self._start(ready)

    def _take_ready(self) -> list[Batch]:
        """Waiting batches the window has room for (call with the lock held)."""
        ready = []
        while self._waiting and self._sending < self._window.limit:
            ready.append(self._waiting.popleft())
            self._sending += 1
        return ready

    def _start(self, batches: list[Batch]) -> None:
        for batch in batches:
            try:
                self._senders.submit(self._submit_and_release, batch)
            except RuntimeError:  # shut down (the run is failing): never sent, so the next run sends it
                with self._changed:
                    self._sending -= 1
                self._settle()

    def close(self) -> None:
        """Wait for every batch to be confirmed, rejected or given up on; then stop the threads."""
        try:
            with self._changed:
                while self._outstanding and self.failure is None:
                    self._changed.wait(timeout=0.5)
        finally:
            self._shutdown(cancel=False)
        if self.failure is not None:
            raise self.failure

    def close_quietly(self) -> None:
        """Stop without waiting for outstanding batches (the run is failing; resume picks them up)."""
        self._shutdown(cancel=True)

    def _shutdown(self, cancel: bool) -> None:
        self._stop.set()
        self._senders.shutdown(wait=True, cancel_futures=cancel)
        self._pollers.shutdown(wait=True, cancel_futures=cancel)
        self._scheduler.join(timeout=5)

    # --- submitting --------------------------------------------------------------------------------------

    def _submit_and_release(self, batch: Batch) -> None:
        started = time.monotonic()
        accepted: list[Batch] = []
        try:
            accepted = self._submit(batch)
        except BaseException as exc:  # recorded; the run stops feeding batches and reports it
            log.error("bulk import failed: %s", exc)
            self._fail(exc)
        finally:
            # The window counts requests in flight: the slot is free once ActiveCampaign has answered, before
            # the journal record is written (the main thread should not wait on that).
            with self._changed:
                self._sending -= 1
                self._window.observe(time.monotonic() - started)
                ready = self._take_ready()
                self._changed.notify_all()
            self._start(ready)
        try:
            for part in accepted:
                self._listener.submitted(part)
                self._schedule(part, self._poll.first)
        except BaseException as exc:
            log.error("could not record an accepted bulk import: %s", exc)
            self._fail(exc)

    def _submit(self, batch: Batch) -> list[Batch]:
        """Send ``batch`` (split as ActiveCampaign's refusals require); returns the parts it accepted."""
        if self.failure is not None or self._stop.is_set():
            self._settle()
            return []
        try:
            batch.batch_id = self._client.bulk_import(batch.encoded, batch.emails)
        except BatchRejected as refusal:
            return self._split_rejected(batch, refusal)
        batch.submitted_at = time.monotonic()
        for contact in batch.contacts:  # accepted: the payloads are no longer needed, free them now
            contact.encoded = b""
        with self._lock:
            self.counters.requests_accepted += 1
            self.counters.contacts_submitted += len(batch.contacts)
            self.counters.batch_ids.append(batch.batch_id)
        return [batch]

    def _split_rejected(self, batch: Batch, refusal: BatchRejected) -> list[Batch]:
        """A whole-batch 400: reject the contacts AC named and resend the rest; split when it named none."""
        with self._lock:
            self.counters.split_batches += 1
        if refusal.bad:
            for i, reason in refusal.bad.items():
                contact = batch.contacts[i]
                self._listener.rejected(Rejection(contact.customer_id, contact.email,
                                                  Reason.REJECTED_BY_ACTIVECAMPAIGN, reason))
            rest = [i for i in range(len(batch.contacts)) if i not in refusal.bad]
            parts = [batch.subset(rest)] if rest else []
        elif len(batch.contacts) == 1:
            contact = batch.contacts[0]
            self._listener.rejected(Rejection(contact.customer_id, contact.email,
                                              Reason.REJECTED_BY_ACTIVECAMPAIGN, str(refusal)))
            parts = []
        else:
            half = len(batch.contacts) // 2
            parts = [batch.subset(list(range(half))), batch.subset(list(range(half, len(batch.contacts))))]
        with self._changed:
            self._outstanding += len(parts) - 1
            self._changed.notify_all()
        return [accepted for part in parts for accepted in self._submit(part)]

    # --- confirming --------------------------------------------------------------------------------------

    def _schedule(self, batch: Batch, delay: float) -> None:
        with self._lock:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), batch, delay))

    def _schedule_polls(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            ready = []
            with self._lock:
                while self._due and self._due[0][0] <= now:
                    ready.append(heapq.heappop(self._due))
                wait = (self._due[0][0] - now) if self._due else 0.05
            for _, _, batch, delay in ready:
                self._pollers.submit(self._poll_once, batch, delay)
            self._stop.wait(min(max(wait, 0.001), 0.05))

    def _poll_once(self, batch: Batch, delay: float) -> None:
        try:
            self._poll_and_settle(batch, delay)
        except BaseException as exc:  # a pool thread's exception is otherwise lost, and close() would wait forever
            log.error("could not confirm bulk import %s: %s", batch.batch_id, exc)
            self._fail(exc)

    def _poll_and_settle(self, batch: Batch, delay: float) -> None:
        status = self._client.import_info(batch.batch_id or "")
        if status.status == "completed":
            self._listener.confirmed(batch, set(status.failure))
            self._settle()
        elif status.finished:
            # AC gave up on the import (failed / interrupted): the contacts are not confirmed, so they stay
            # out of the sync state and the next run sends them again.
            self._listener.unconfirmed(batch, f"import {batch.batch_id} ended {status.status!r}")
            self._settle()
        elif time.monotonic() - batch.submitted_at > self._poll.timeout:
            self._listener.unconfirmed(batch, f"import {batch.batch_id} still {status.status!r} after "
                                              f"{self._poll.timeout:.0f} s")
            self._settle()
        else:
            self._schedule(batch, min(self._poll.cap, delay * 1.5))

    # --- bookkeeping -------------------------------------------------------------------------------------

    def _settle(self) -> None:
        with self._changed:
            self._outstanding -= 1
            self._changed.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            if self.failure is None:
                self.failure = exc
            self._changed.notify_all()

