"""The sending side: batches → ActiveCampaign bulk imports → events saying what became of them.

Several bulk requests are in flight at once (ActiveCampaign answers slowly, so one at a time cannot reach the
limit); the client's shared pacer keeps them under the account's limits. Each accepted import is then polled
through ``import/info`` until ActiveCampaign has processed it. The sink's threads never call into the run: they
put events on a queue that the run takes from (``next_events``) on its own thread.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..activecampaign import ActiveCampaignClient, BatchRejected
from ..mapping import Reason, Rejection
from .batching import Batch
from .events import BatchAccepted, BatchConfirmed, BatchNotConfirmed, ContactRejected, SentBatch, SinkEvent
from .window import InFlightWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollTiming:
    """When to ask ActiveCampaign whether an import is done: first after ``first`` seconds, then backing off
    to every ``cap`` seconds, giving up after ``timeout``."""

    first: float
    cap: float
    timeout: float

    @classmethod
    def for_rate(cls, requests_per_second: float) -> PollTiming:
        # ActiveCampaign may answer "false" when polled within ~1 s, so the first poll waits ~2 s at its real pace;
        # it all scales with the configured pace (tests use time-scaled limits), with floors so polls never spin.
        return cls(first=max(10.0 / requests_per_second, 0.02), cap=max(50.0 / requests_per_second, 0.25),
                   timeout=max(10.0, 3000.0 / requests_per_second))


@dataclass(frozen=True, order=True)
class _PollDue:
    at: float
    seq: int
    batch: SentBatch
    submitted_at: float
    delay: float


class BulkSink:
    """Sends batches concurrently and follows each to its outcome.

    Bounds keep memory flat however large the export: requests in flight (the window), batches waiting for
    room in it (``max_waiting``) and batches not settled yet (``max_unconfirmed``). The run hands a batch over
    only when ``has_room()``, and takes the events meanwhile.
    """

    def __init__(self, client: ActiveCampaignClient, *, bulk_rate: float, poll: PollTiming, max_in_flight: int = 48,
                 max_unconfirmed: int = 128, max_waiting: int = 8, exclude_automations: bool = False) -> None:
        self._client = client
        self._exclude_automations = exclude_automations  # sent on every bulk import (the export's runAutomations)
        self._window = InFlightWindow(bulk_rate, max_in_flight)
        self._senders = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ac-send")
        # Polls take as long as bulk requests and one is needed per batch: give them the same headroom.
        self._pollers = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ac-poll")
        self._max_unconfirmed = max_unconfirmed
        self._max_waiting = max_waiting
        self._poll = poll
        self._changed = threading.Condition()  # guards everything below; notified on every change
        self._waiting: deque[Batch] = deque()  # handed over, waiting for room in the window
        self._events: list[SinkEvent] = []
        self._due: list[_PollDue] = []
        self._seq = itertools.count()
        self._sending = 0  # requests in flight
        self._outstanding = 0  # batches handed over and not settled yet
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self.requests_accepted = 0
        self.split_batches = 0
        self._scheduler = threading.Thread(target=self._schedule_polls, name="ac-poll-scheduler", daemon=True)
        self._scheduler.start()

    # --- the run's side ----------------------------------------------------------------------------------

    def has_room(self) -> bool:
        """Whether a batch can be handed over now. Raises what made the sink fail."""
        with self._changed:
            self._raise_failure()
            return len(self._waiting) < self._max_waiting and self._outstanding < self._max_unconfirmed

    def settled(self) -> bool:
        """Whether every batch handed over has an outcome (its events are queued). Raises what made it fail."""
        with self._changed:
            self._raise_failure()
            return self._outstanding == 0

    def send(self, batch: Batch) -> None:
        """Hand over a batch: sent when the window has room, queued behind it until then."""
        with self._changed:
            self._raise_failure()
            self._outstanding += 1
            self._waiting.append(batch)
            ready = self._take_ready()
        self._start(ready)

    def next_events(self, timeout: float = 0.0) -> list[SinkEvent]:
        """The events since the last call, in order; waits up to ``timeout`` for something to change first."""
        with self._changed:
            if not self._events and timeout > 0:
                self._changed.wait(timeout)
            events, self._events = self._events, []
            return events

    def close(self) -> None:
        """Stop the threads. Batches not settled yet are abandoned (the next run sends them again)."""
        self._stop.set()
        self._senders.shutdown(wait=True, cancel_futures=True)
        self._pollers.shutdown(wait=True, cancel_futures=True)
        self._scheduler.join(timeout=5)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # --- sending -----------------------------------------------------------------------------------------

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
                self._senders.submit(self._send_and_release, batch)
            except RuntimeError:  # shut down (the run is failing): never sent, so the next run sends it
                with self._changed:
                    self._sending -= 1
                self._settle()

    def _send_and_release(self, batch: Batch) -> None:
        started = time.monotonic()
        try:
            accepted = self._submit(batch)
        except BaseException as exc:  # noqa: BLE001 - whatever it is, the run sees it at its next call and stops
            log.error("bulk import failed: %s", exc)
            self._fail(exc)
            accepted = []
        with self._changed:  # the slot is free once ActiveCampaign has answered
            self._sending -= 1
            self._window.observe(time.monotonic() - started)
            ready = self._take_ready()
            for sent in accepted:
                self._emit(BatchAccepted(sent))
                self._push_poll(sent, time.monotonic(), self._poll.first)
        self._start(ready)

    def _submit(self, batch: Batch) -> list[SentBatch]:
        """Send ``batch``, split as ActiveCampaign's refusals require; returns the parts it accepted."""
        if self._failure is not None or self._stop.is_set():
            self._settle()
            return []
        try:
            batch_id = self._client.bulk_import(batch.encoded, batch.emails,
                                                exclude_automations=self._exclude_automations)
        except BatchRejected as refusal:
            return self._split_rejected(batch, refusal)
        with self._changed:
            self.requests_accepted += 1
        return [SentBatch.of(batch_id, batch.contacts)]

    def _split_rejected(self, batch: Batch, refusal: BatchRejected) -> list[SentBatch]:
        """A whole-batch 400: reject the contacts ActiveCampaign named and send the rest again; when it named
        none, split the batch in halves until the culprits stand alone."""
        if refusal.bad:
            rejected = {i: reason for i, reason in refusal.bad.items()}
            parts = [batch.subset([i for i in range(len(batch.contacts)) if i not in rejected])]
        elif len(batch.contacts) == 1:
            rejected, parts = {0: str(refusal)}, []
        else:
            half = len(batch.contacts) // 2
            rejected = {}
            parts = [batch.subset(list(range(half))), batch.subset(list(range(half, len(batch.contacts))))]
        parts = [part for part in parts if part.contacts]
        with self._changed:
            self.split_batches += 1
            for i, reason in rejected.items():
                contact = batch.contacts[i]
                self._emit(ContactRejected(Rejection(contact.customer_id, contact.email,
                                                     Reason.REJECTED_BY_ACTIVECAMPAIGN, reason)))
            self._outstanding += len(parts) - 1
            self._changed.notify_all()
        return [accepted for part in parts for accepted in self._submit(part)]

    # --- confirming --------------------------------------------------------------------------------------

    def _push_poll(self, batch: SentBatch, submitted_at: float, delay: float) -> None:
        """Poll ``batch`` in ``delay`` seconds (call with the lock held)."""
        heapq.heappush(self._due, _PollDue(time.monotonic() + delay, next(self._seq), batch, submitted_at, delay))

    def _schedule_polls(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._changed:
                ready = []
                while self._due and self._due[0].at <= now:
                    ready.append(heapq.heappop(self._due))
                wait = (self._due[0].at - now) if self._due else 0.05
            for due in ready:
                self._pollers.submit(self._poll_once, due)
            self._stop.wait(min(max(wait, 0.001), 0.05))

    def _poll_once(self, due: _PollDue) -> None:
        try:
            self._follow_up(due)
        except BaseException as exc:  # noqa: BLE001 - lost in a pool thread otherwise, and the run would wait forever
            log.error("could not confirm bulk import %s: %s", due.batch.batch_id, exc)
            self._fail(exc)

    def _follow_up(self, due: _PollDue) -> None:
        batch = due.batch
        status = self._client.import_info(batch.batch_id)
        if status.status == "completed":
            self._settle(BatchConfirmed(batch, frozenset(status.failure), status.failure_reasons))
        elif status.finished:
            # ActiveCampaign gave up on the import (failed / interrupted): not confirmed, so its contacts stay out
            # of the sync state and the next run sends them again.
            self._settle(BatchNotConfirmed(batch, f"import {batch.batch_id} ended {status.status!r}"))
        elif time.monotonic() - due.submitted_at > self._poll.timeout:
            self._settle(BatchNotConfirmed(batch, f"import {batch.batch_id} still {status.status!r} after "
                                                  f"{self._poll.timeout:.0f} s"))
        else:
            with self._changed:
                self._push_poll(batch, due.submitted_at, min(self._poll.cap, due.delay * 1.5))

    # --- bookkeeping -------------------------------------------------------------------------------------

    def _emit(self, event: SinkEvent) -> None:
        """Queue an event for the run (call with the lock held)."""
        self._events.append(event)
        self._changed.notify_all()

    def _settle(self, event: SinkEvent | None = None) -> None:
        """One batch has its outcome; its event (if any) is queued before it counts as settled."""
        with self._changed:
            if event is not None:
                self._emit(event)
            self._outstanding -= 1
            self._changed.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            if self._failure is None:
                self._failure = exc
            self._changed.notify_all()
