"""Batching by count and size, the in-flight window and the sink's queue, without a server."""
from __future__ import annotations

import math
import threading

import orjson

from exporter.activecampaign import MAX_REQUEST_BYTES, ImportStatus, encode_bulk_body
from exporter.mapping import Contact
from exporter.sink import MAX_BATCH_BYTES, Batch, Batcher, BulkSink, InFlightWindow, PollTiming


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

    def bulk_import(self, encoded: list[bytes], emails: list[str]) -> str:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        assert self.release.wait(30), "never released"
        with self._lock:
            self.in_flight -= 1
            self.answered += 1
            return f"batch-{self.answered}"

    def import_info(self, batch_id: str) -> ImportStatus:
        return ImportStatus("completed")


class Confirmations:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def submitted(self, batch: Batch) -> None:
        pass

    def confirmed(self, batch: Batch, failed_emails: set[str]) -> None:
        self.batches.append(batch)

    def rejected(self, rejection) -> None:
        raise AssertionError(rejection)

    def unconfirmed(self, batch: Batch, why: str) -> None:
        raise AssertionError(why)


def test_sink_queues_batches_behind_a_full_window_so_the_reader_keeps_going():
    client, listener = HeldActiveCampaign(), Confirmations()
    sink = BulkSink(client, listener, bulk_rate=1e9, poll=PollTiming(0.001, 0.01, 10.0), max_waiting=3)
    window = InFlightWindow.UNPACED
    batches = [Batch([contact(i)]) for i in range(window + 3)]
    sender = threading.Thread(target=lambda: [sink.send(b) for b in batches])
    sender.start()
    sender.join(timeout=10)
    try:
        assert not sender.is_alive(), "send blocked although the queue had room"
        assert client.answered == 0  # every hand-over returned while ActiveCampaign had answered nothing
    finally:
        client.release.set()
        sender.join(timeout=10)
        sink.close()
    assert client.most_in_flight <= window  # the queue waited for room in the window
    assert sorted(b.batch_id for b in listener.batches) == sorted(f"batch-{i}" for i in range(1, window + 4))


def test_a_failing_confirmation_fails_the_sink_instead_of_leaving_close_waiting():
    class BrokenState(Confirmations):
        def confirmed(self, batch: Batch, failed_emails: set[str]) -> None:
            raise OSError("disk full")

    client = HeldActiveCampaign()
    client.release.set()
    sink = BulkSink(client, BrokenState(), bulk_rate=1e9, poll=PollTiming(0.001, 0.01, 10.0))
    sink.send(Batch([contact(1)]))
    raised: list[BaseException] = []

    def close() -> None:
        try:
            sink.close()
        except BaseException as exc:  # noqa: BLE001 - the test looks at what close() raised
            raised.append(exc)

    closing = threading.Thread(target=close)
    closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive(), "close() kept waiting for a batch whose confirmation failed"
    assert len(raised) == 1 and isinstance(raised[0], OSError) and str(raised[0]) == "disk full"
