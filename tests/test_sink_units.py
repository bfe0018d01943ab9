"""Batching by count and size, the in-flight window and the sink's queue, without a server."""
from __future__ import annotations

import math
import threading
import time

import orjson
import pytest

from exporter.activecampaign import (
    MAX_REQUEST_BYTES,
    BatchRejected,
    ImportStatus,
    encode_bulk_body,
)
from exporter.mapping import Contact
from exporter.sink import (
    MAX_BATCH_BYTES,
    Batch,
    BatchAccepted,
    BatchConfirmed,
    Batcher,
    BulkSink,
    ContactRejected,
    InFlightWindow,
    PollTiming,
)


def contact(i: int, size: int = 10) -> Contact:
    email = f"user{i}@example.com"
    return Contact(i, email, str(i), orjson.dumps({"email": email, "first_name": "x" * size}))


def test_batches_hold_at_most_250_contacts():
    batcher = Batcher()
    batches = [b for b in (batcher.add(contact(i)) for i in range(600)) if b]
    batches.append(batcher.flush())
    assert [len(b.contacts) for b in batches] == [250, 250, 100]
    assert batcher.flush() is None


def test_batches_stay_under_the_request_byte_limit():
    batcher = Batcher()
    batches = [b for b in (batcher.add(contact(i, size=5000)) for i in range(300)) if b]
    batches.append(batcher.flush())
    assert sum(len(b.contacts) for b in batches) == 300
    for batch in batches:
        body = encode_bulk_body(batch.encoded)
        assert len(body) <= MAX_BATCH_BYTES < MAX_REQUEST_BYTES
    assert max(len(b.contacts) for b in batches) < 250  # size, not count, closed them


def test_in_flight_window_follows_the_lowest_recent_latency_not_queueing():
    window = InFlightWindow(rate_per_second=20, maximum=48)
    window.observe(0.3)
    for _ in range(20):  # requests queued behind each other: slower answers must not widen the window
        window.observe(2.0)
    assert window.limit == math.ceil(20 * 0.3 * 1.5) + 1
    for _ in range(InFlightWindow.RECENT):  # the server really slowed down: every recent answer is slow
        window.observe(1.0)
    assert window.limit == math.ceil(20 * 1.0 * 1.5) + 1
    unpaced = InFlightWindow(rate_per_second=1e9, maximum=48)  # "unlimited": a fixed few, whatever the latency
    unpaced.observe(0.001)
    assert unpaced.limit == InFlightWindow.UNPACED
    unpaced.observe(5.0)
    assert unpaced.limit == InFlightWindow.UNPACED
    assert InFlightWindow(rate_per_second=1e9, maximum=4).limit == 4


class HeldActiveCampaign:
    """A client whose bulk imports are answered only once released (a slow AC); every import then completes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.answered = 0
        self.excluded_automations: list[bool] = []  # each bulk import's exclude_automations

    def bulk_import(self, encoded: list[bytes], emails: list[str], *, exclude_automations: bool = False) -> str:
        with self._lock:
            self.excluded_automations.append(exclude_automations)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        assert self.release.wait(30), "never released"
        with self._lock:
            self.in_flight -= 1
            self.answered += 1
            return f"batch-{self.answered}"

    def import_info(self, batch_id: str) -> ImportStatus:
        return ImportStatus("completed")


def take_until_settled(sink: BulkSink, limit: float = 30.0) -> list:
    """Every event until the sink has settled all batches, as the run takes them."""
    events, deadline = [], time.monotonic() + limit
    while not sink.settled():
        assert time.monotonic() < deadline, "the sink never settled"
        events += sink.next_events(0.1)
    return events + sink.next_events()


def test_sink_queues_batches_behind_a_full_window_so_the_reader_keeps_going():
    client = HeldActiveCampaign()
    sink = BulkSink(client, bulk_rate=1e9, poll=PollTiming(0.001, 0.01, 10.0), max_waiting=3)
    window = InFlightWindow.UNPACED
    try:
        for i in range(window + 3):
            assert sink.has_room(), f"no room for batch {i} although the queue had room"
            sink.send(Batch([contact(i)]))
        assert not sink.has_room()  # the window is full and so is the queue behind it
        assert client.answered == 0  # every hand-over returned while ActiveCampaign had answered nothing
        client.release.set()
        events = take_until_settled(sink)
    finally:
        client.release.set()
        sink.close()
    assert client.most_in_flight <= window  # the queue waited for room in the window
    confirmed = [e.batch.batch_id for e in events if isinstance(e, BatchConfirmed)]
    assert sorted(confirmed) == sorted(f"batch-{i}" for i in range(1, window + 4))


def test_each_batch_is_reported_accepted_before_it_is_confirmed_with_its_state_rows():
    client = HeldActiveCampaign()
    client.release.set()
    sink = BulkSink(client, bulk_rate=1e9, poll=PollTiming(0.001, 0.01, 10.0))
    try:
        sink.send(Batch([contact(1), contact(2)]))
        events = take_until_settled(sink)
    finally:
        sink.close()
    assert [type(e) for e in events] == [BatchAccepted, BatchConfirmed]
    assert events[0].batch is events[1].batch
    assert events[1].batch.rows.emails.tolist() == ["user1@example.com", "user2@example.com"]
    assert events[1].batch.rows.keys.tolist() == [1, 2]
    assert list(events[1].batch.sources()) == [("1", "user1@example.com"), ("2", "user2@example.com")]


def test_contacts_named_in_a_whole_batch_400_are_reported_and_the_rest_sent_again():
    class RefusesOne(HeldActiveCampaign):
        def bulk_import(self, encoded: list[bytes], emails: list[str], *, exclude_automations: bool = False) -> str:
            if "user2@example.com" in emails:
                raise BatchRejected({emails.index("user2@example.com"): "Invalid email address"}, "refused")
            return super().bulk_import(encoded, emails, exclude_automations=exclude_automations)

    client = RefusesOne()
    client.release.set()
    sink = BulkSink(client, bulk_rate=1e9, poll=PollTiming(0.001, 0.01, 10.0))
    try:
        sink.send(Batch([contact(1), contact(2), contact(3)]))
        events = take_until_settled(sink)
    finally:
        sink.close()
    (rejected,) = [e.rejection for e in events if isinstance(e, ContactRejected)]
    assert (rejected.email, rejected.detail) == ("user2@example.com", "Invalid email address")
    (confirmed,) = [e.batch for e in events if isinstance(e, BatchConfirmed)]
    assert confirmed.rows.emails.tolist() == ["user1@example.com", "user3@example.com"]


def test_a_failing_poll_fails_the_sink_instead_of_leaving_the_run_waiting():
    class BrokenPolls(HeldActiveCampaign):
        def import_info(self, batch_id: str) -> ImportStatus:
            raise OSError("disk full")

    client = BrokenPolls()
    client.release.set()
    sink = BulkSink(client, bulk_rate=1e9, poll=PollTiming(0.001, 0.01, 10.0))
    try:
        sink.send(Batch([contact(1)]))
        with pytest.raises(OSError, match="disk full"):
            take_until_settled(sink)
    finally:
        sink.close()
