"""One run of one export: source → mapping → diff → sink → state.

Nothing is sent until the configuration, the source (model.json, columns), the API key and the list have been
checked. Every input row ends up counted as sent, unchanged, or rejected with a reason. The run is the only
writer of the sync state, the journal and the report: the sink's threads report events, and the run applies
them on its own thread.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
from azure.core.exceptions import ResourceModifiedError

from .. import logsafe
from ..activecampaign import ActiveCampaignClient, is_exclusion
from ..errors import ConfigError, LockLost, TransientError
from ..list_status import ListStatus
from ..mapping import Contact, Reason, Rejection, describe_origin
from ..preflight import CheckedSource, check_source, connect_destination
from ..report import RejectedRows, RunReport
from ..settings import AppSettings, ExportConfig
from ..sink import (
    Batch,
    BatchAccepted,
    BatchConfirmed,
    Batcher,
    BatchNotConfirmed,
    BulkSink,
    ContactRejected,
    PollTiming,
    SinkEvent,
)
from ..source import iter_rows
from ..state import ExportLock, Journal, StateStore, SyncState, encode_confirmed, encode_submitted
from ..storage import blob_service
from . import mirror
from .diff import DIFF_CHUNK, Diff
from .opt_outs import OptOutCheck
from .options import RunOptions
from .progress import ProgressMeter
from .resume import resume

log = logging.getLogger(__name__)

EVENT_WAIT_SECONDS = 0.5  # how long the run waits for the sink at a time, when it has to


class ExportRun:
    def __init__(self, export: ExportConfig, app: AppSettings, options: RunOptions, report: RunReport,
                 rejected: RejectedRows) -> None:
        self.export = export
        self.app = app
        self.options = options
        self.report = report
        self.rejected_rows = rejected
        self.counts = report.counts
        self.progress = ProgressMeter(export.name, options.progress, options.progress_interval,
                                      export.destination.rate_limits.bulk_imports_per_minute)
        self.state = SyncState()
        self._returners: list[str] = []  # emails to subscribe again once the sink is done
        self._opt_outs: OptOutCheck | None = None  # None in a dry run
        self._health_checks: tuple[Callable[[], None], ...] = ()  # the lock's and the journal's
        self._removal_blocked: str | None = None  # why mirror mode unsubscribed nobody
        self._state_unreadable = False  # then mirror mode cannot tell who left, and unsubscribes nobody

    # --- the run -------------------------------------------------------------------------------------------

    def execute(self) -> None:
        checked = check_source(self.export, self.app)
        source = checked.source
        self.report.source = {"container": self.export.source.container, "path": source.path,
                              "entity": source.entity, "partitions": source.partitions,
                              "modelRefreshed": source.model_refreshed}
        if self.options.dry_run:
            self._dry_run(checked)
            return
        client, _ = connect_destination(self.export, self.app)
        with client:
            store = StateStore(blob_service(self.app.app_storage))
            with store.lock(self.export.name, self.report.run_id, self.options.lock_wait_seconds) as lock:
                self._sync(store, client, checked, lock)
            self.report.requests = client.stats.as_dict()

    def _sync(self, store: StateStore, client: ActiveCampaignClient, checked: CheckedSource, lock: ExportLock) -> None:
        loaded = store.load(self.export.name, self.report.run_id)
        self.state, etag = loaded.state, loaded.etag
        if loaded.problem:
            log.warning("%s", loaded.problem)
            self.report.errors.append(loaded.problem)
            self._state_unreadable = True
        if loaded.journal is not None:
            self.report.resumed = resume(self.state, loaded.journal, client, self._poll_timing())
            log.info("resumed %s: %s", self.export.name, self.report.resumed)
            etag = store.save(self.export.name, self.state, etag)
            store.drop_journal(self.export.name)
        if etag is None or loaded.problem:  # no stored sync state: every contact is about to be imported
            self._note(self.export.automations_summary())
        list_size_before = self.state.subscribed_count()  # the mirror brake's measure of the list
        self._opt_outs = OptOutCheck(client, self.export.destination.list_id)
        bulk_rate = self.export.destination.rate_limits.bulk_imports_per_minute / 60.0
        journal = store.journal(self.export.name, bulk_rate)
        self._health_checks = (lock.check, journal.check)
        sink = BulkSink(client, bulk_rate=bulk_rate, poll=self._poll_timing(),
                        exclude_automations=not self.export.run_automations)
        lock_lost = False
        try:
            diff = Diff(self.state, self.options.full_refresh)
            self._send_all(sink, journal, self._changes(checked, diff))
            if self.export.remove_missing:
                self._send_all(sink, journal, self._removals(diff, list_size_before))
            self._drain(sink, journal)
            cleared = [self._opt_outs.cleared[email] for email in self._returners]
            self.counts["resubscribed"] += mirror.resubscribe(client, self.export.destination.list_id, cleared)
            self.report.state_memory_mb = round((self.state.nbytes + diff.seen.nbytes) / 2**20, 1)
        except LockLost:
            lock_lost = True  # another run may hold the lock now: the state is left to it, the journal to resume
            raise
        finally:
            sink.close()
            journal.stop()
            if not lock_lost:
                self._save_state(store, etag)
        self.counts["bulkRequests"] = sink.requests_accepted
        self.progress.update("done", self.counts, self._rejected_total(), force=True)
        self._fail_on_unconfirmed()

    def _save_state(self, store: StateStore, etag: str | None) -> None:
        try:
            store.save(self.export.name, self.state, etag)
        except ResourceModifiedError:
            self.report.errors.append("the sync state changed during this run; kept the journal so the next "
                                      "run replays this run's confirmations")
            return
        store.drop_journal(self.export.name)

    def _note(self, note: str) -> None:
        """Something the user should know about this run: logged, and in the report and the CLI summary."""
        log.info("export %s: %s", self.export.name, note)
        self.report.notes.append(note)

    def _poll_timing(self) -> PollTiming:
        return PollTiming.for_rate(self.export.destination.rate_limits.requests_per_second)

    # --- what to send --------------------------------------------------------------------------------------

    def _contacts(self, checked: CheckedSource) -> Iterable[Contact]:
        """Every valid contact of the source, in order; invalid rows are rejected on the way."""
        rows_read = 0
        for row in iter_rows(checked.container, checked.source):
            rows_read += 1
            if row.error:
                result: Contact | Rejection = checked.mapper.malformed(row.values, row.error)
            else:
                result = checked.mapper.map_row(row.values)
            origin = (row.partition, row.record, row.line)
            if isinstance(result, Rejection):
                result.where = describe_origin(origin)
                self._reject(result)
            else:
                result.origin = origin
                yield result
            if rows_read % 1024 == 0:
                self.counts["rowsRead"] = rows_read
                self.progress.update("sending", self.counts, self._rejected_total())
        self.counts["rowsRead"] = rows_read

    def _changes(self, checked: CheckedSource, diff: Diff) -> Iterable[Contact]:
        """The new and changed contacts, compared with the sync state a chunk at a time."""
        chunk: list[Contact] = []
        for contact in self._contacts(checked):
            chunk.append(contact)
            if len(chunk) >= DIFF_CHUNK:
                yield from self._compare(diff, chunk)
                chunk = []
        if chunk:
            yield from self._compare(diff, chunk)

    def _compare(self, diff: Diff, chunk: list[Contact]) -> list[Contact]:
        to_send, duplicates = diff.changes(chunk)
        for rejection in duplicates:
            self._reject(rejection)
        self.counts["unchanged"] = diff.unchanged
        if self._opt_outs is None:
            return to_send
        return [contact for contact in to_send if not self._held_back(contact)]

    def _held_back(self, contact: Contact) -> bool:
        opted_out = self._opt_outs.hold_back(contact) if self._opt_outs else None
        if opted_out is not None:
            self._reject(opted_out)
            self.counts["optedOut"] += 1
        return opted_out is not None

    def _removals(self, diff: Diff, list_size_before: int) -> Iterable[Contact]:
        """Mirror mode: the contacts that left the segment, unless the brake holds."""
        keys, emails = self.state.subscribed_missing_from(diff.seen.sorted())
        if self._state_unreadable:
            self.counts["removalSkipped"] = len(keys)
            self.report.errors.append(
                "mirror mode unsubscribed nobody in this run: the sync state was unreadable, so it cannot tell who "
                "left the segment (contacts that left before this run stay on the list); from the next run on, "
                "leavers are unsubscribed again")
            return []
        if not len(keys):
            return []
        destination = self.export.destination
        blocked = mirror.brake_message(len(keys), list_size_before, destination.list_id,
                                       self.export.max_removal_share, self.options.force_removal)
        if blocked:
            log.warning("%s", blocked)
            self._removal_blocked = blocked  # raised when the run ends, and recorded then
            self.counts["removalBlocked"] = len(keys)
            self.report.error_kind = "config"
            return []
        return mirror.removals(keys.tolist(), emails, destination.list_id)

    # --- sending and taking the sink's events ----------------------------------------------------------------

    def _send_all(self, sink: BulkSink, journal: Journal, contacts: Iterable[Contact]) -> None:
        batcher = Batcher()
        for contact in contacts:
            batch = batcher.add(contact)
            if batch:
                self._send(sink, journal, batch)
        last = batcher.flush()
        if last:
            self._send(sink, journal, last)

    def _send(self, sink: BulkSink, journal: Journal, batch: Batch) -> None:
        while not sink.has_room():
            self._apply(sink.next_events(EVENT_WAIT_SECONDS), journal)
        self._check_health()
        sink.send(batch)
        self.counts["sent"] += sum(1 for c in batch.contacts if c.list_status == ListStatus.SUBSCRIBED)
        self.counts["batches"] += 1
        self._apply(sink.next_events(), journal)

    def _drain(self, sink: BulkSink, journal: Journal) -> None:
        """Wait until every batch has its outcome, applying events as they come."""
        while not sink.settled():
            self._check_health()
            self._apply(sink.next_events(EVENT_WAIT_SECONDS), journal)
        self._apply(sink.next_events(), journal)

    def _check_health(self) -> None:
        """Stops the run (raises) when it may have lost its lock or cannot write its journal."""
        for check in self._health_checks:
            check()

    def _apply(self, events: list[SinkEvent], journal: Journal) -> None:
        for event in events:
            if isinstance(event, BatchAccepted):
                journal.append_submitted(encode_submitted(event.batch.batch_id, event.batch.rows))
                self.report.batch_ids.append(event.batch.batch_id)
            elif isinstance(event, BatchConfirmed):
                self._confirmed(event, journal)
            elif isinstance(event, BatchNotConfirmed):
                self._not_confirmed(event)
            elif isinstance(event, ContactRejected):
                self._reject(event.rejection)
        if events:
            self.progress.update("sending", self.counts, self._rejected_total())

    def _confirmed(self, event: BatchConfirmed, journal: Journal) -> None:
        batch, failed = event.batch, event.failed_emails
        rows = batch.rows
        if failed:  # a Python step per contact only where ActiveCampaign reported failures
            for customer_id, email in batch.sources():
                if email in failed:
                    self._reject(self._failed_at_import(customer_id, email, batch.batch_id,
                                                        event.failure_reasons.get(email)))
            rows = rows.without_emails(set(failed))
        unsubscribed = rows.flags == ListStatus.UNSUBSCRIBED
        if unsubscribed.any():  # the state keeps when this export's unsubscribe was confirmed (see opt_outs)
            rows.fingerprints[unsubscribed] = int(time.time())
        self.state.record(rows)
        journal.append(encode_confirmed(batch.batch_id, set(failed)))
        subscribed = int(np.count_nonzero(rows.flags == ListStatus.SUBSCRIBED))
        self.counts["confirmed"] += subscribed
        self.counts["unsubscribed"] += len(rows) - subscribed
        self._returners.extend(email for email in batch.returners if email not in failed)

    @staticmethod
    def _failed_at_import(customer_id: str, email: str, batch_id: str, reason: str | None) -> Rejection:
        """A contact ActiveCampaign reported as failed in a processed import: skipped for its exclusion list, or
        failed for another (or no stated) reason. Either way it stays out of the sync state."""
        if reason and is_exclusion(reason):
            return Rejection(customer_id, email, Reason.EXCLUDED_BY_ACTIVECAMPAIGN,
                             f"on the ActiveCampaign account's exclusion list; import {batch_id} skipped it ({reason})")
        detail = f"ActiveCampaign reported that import {batch_id} failed for it"
        return Rejection(customer_id, email, Reason.REJECTED_BY_ACTIVECAMPAIGN, f"{detail}: {reason}" if reason else detail)

    def _not_confirmed(self, event: BatchNotConfirmed) -> None:
        for customer_id, email in event.batch.sources():
            self.rejected_rows.add(Rejection(customer_id, email, Reason.NOT_CONFIRMED,
                                             f"{event.reason}; it is sent again on the next run"))
        self.counts["notConfirmed"] += len(event.batch.rows)
        self.report.errors.append(event.reason)

    def _reject(self, rejection: Rejection) -> None:
        self.rejected_rows.add(rejection)
        self.report.rejected[rejection.reason.value] += 1
        log.debug("rejected %s: %s", logsafe.mask_email(rejection.email), rejection.reason.value)

    def _rejected_total(self) -> int:
        return sum(self.report.rejected.values())

    def _fail_on_unconfirmed(self) -> None:
        if self.counts.get("notConfirmed"):
            raise TransientError(f"{self.counts['notConfirmed']} contacts were sent but ActiveCampaign did not "
                                 "confirm their import in time; the next run sends them again")
        if self._removal_blocked:
            raise ConfigError(self._removal_blocked)

    # --- dry run -------------------------------------------------------------------------------------------

    def _dry_run(self, checked: CheckedSource) -> None:
        """Everything but sending: counts what a run would send, against the stored sync state (read only)."""
        loaded = StateStore(blob_service(self.app.app_storage)).load(self.export.name, self.report.run_id,
                                                                      read_only=True)
        self.state = loaded.state
        diff = Diff(self.state, self.options.full_refresh)
        for _ in self._changes(checked, diff):
            self.counts["wouldSend"] += 1
        self.progress.update("done", self.counts, self._rejected_total(), force=True)
