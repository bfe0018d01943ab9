"""One run of one export: source → mapping → diff → sink → state, with a report at the end.

Nothing is sent until the configuration, the source (model.json, columns), the API key and the list have
been checked. Every input row ends up counted as sent, unchanged, or rejected with a reason.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import orjson
from azure.core.exceptions import ResourceModifiedError

from . import logsafe
from .activecampaign import ActiveCampaignClient
from .errors import ConfigError, ExporterError, RunLocked, TransientError
from .list_status import ListStatus
from .mapping import Contact, Mapper, Reason, Rejection, describe_origin
from .memory import peak_memory_mb, tune_allocator, tune_gc
from .report import RejectedRows, ReportStore, RunReport, new_run_id, utc_now
from .secrets import get_api_key
from .settings import AppSettings, ExportConfig
from .sink import Batch, Batcher, BulkSink, PollTiming
from .source import ExportSource, iter_rows, open_source
from .state import LEASE_SECONDS, StateRows, SeenKeys, SyncState, StateStore, encode_confirmed, encode_submitted
from .storage import blob_service

log = logging.getLogger(__name__)

DIFF_CHUNK = 2048


@dataclass
class RunOptions:
    trigger: str = "cli"
    dry_run: bool = False
    full_refresh: bool = False
    force_removal: bool = False
    run_id: str | None = None
    progress: Callable[["Progress"], None] | None = None
    progress_interval: float = 0.5
    # How long to wait for another run's lock: by default long enough for a crashed run's lease to expire.
    lock_wait_seconds: float = LEASE_SECONDS + 5


@dataclass
class Progress:
    export: str
    rows_read: int = 0
    sent: int = 0
    confirmed: int = 0
    unchanged: int = 0
    rejected: int = 0
    batches: int = 0
    elapsed: float = 0.0
    rate: float = 0.0  # contacts confirmed per second
    eta_seconds: float | None = None
    phase: str = "reading"


def fingerprints(contacts: list[Contact]) -> np.ndarray:
    """64-bit digest of exactly what AC receives for each contact (values, tags, list); never 0 (= unknown).

    The digests are joined and read as one array: a third cheaper than an int per contact."""
    blake2b = hashlib.blake2b
    digests = np.frombuffer(b"".join([blake2b(c.encoded, digest_size=8).digest() for c in contacts]), ">u8")
    digests = digests.astype(np.uint64)
    digests[digests == 0] = 1
    return digests


def run_export(export: ExportConfig, app: AppSettings, options: RunOptions | None = None) -> RunReport:
    """Run one export and save its report. Never raises for run failures: the report says what happened."""
    options = options or RunOptions()
    report = RunReport(run_id=options.run_id or new_run_id(), export=export.name, trigger=options.trigger,
                       dry_run=options.dry_run, full_refresh=options.full_refresh)
    report.destination = {"hostname": export.destination.hostname, "listId": export.destination.list_id}
    reports = ReportStore(blob_service(app.app_storage))
    skip = export.skip_reason()
    if skip:
        report.status, report.skip_reason, report.finished_at = "skipped", skip, utc_now()
        log.warning("export %s skipped: %s", export.name, skip)
        reports.save(report)
        return report
    reports.save(report)
    tune_allocator()
    tune_gc()
    rejected = RejectedRows()
    started = time.monotonic()
    try:
        ExportRun(export, app, options, report, rejected).execute()
        report.status = "completed"
    except RunLocked as exc:
        report.status, report.error_kind, report.skip_reason = "skipped", "locked", str(exc)
        report.errors.append(str(exc))
    except ConfigError as exc:
        report.status, report.error_kind = "failed", "config"
        report.errors.append(str(exc))
    except ExporterError as exc:
        report.status, report.error_kind = "failed", "transient"
        report.errors.append(str(exc))
    except Exception as exc:  # unexpected: keep the report honest and let the caller retry
        log.exception("export %s failed unexpectedly", export.name)
        report.status, report.error_kind = "failed", "transient"
        report.errors.append(f"unexpected error: {type(exc).__name__}: {logsafe.scrub(str(exc))}")
    finally:
        report.finished_at = utc_now()
        report.duration_seconds = round(time.monotonic() - started, 3)
        report.peak_memory_mb = peak_memory_mb()
        if rejected.count:
            reports.save_rejected(report, rejected)
        rejected.close()
        reports.save(report)
    log.info("export %s run %s %s in %.1fs: %s", export.name, report.run_id, report.status,
             report.duration_seconds or 0, dict(report.counts))
    return report


class ExportRun:
    def __init__(self, export: ExportConfig, app: AppSettings, options: RunOptions, report: RunReport,
                 rejected: RejectedRows) -> None:
        self.export = export
        self.app = app
        self.options = options
        self.report = report
        self.rejected_rows = rejected
        self.counts = report.counts
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_progress = 0.0
        self._resubscribe: list[str] = []  # emails
        self._removal_blocked: str | None = None  # why mirror mode unsubscribed nobody
        self._subscribed_before = 0
        self.state = SyncState()
        self.journal = None

    # --- the run -------------------------------------------------------------------------------------------

    def execute(self) -> None:
        source_container = blob_service(self.app.export_storage).get_container_client(self.export.source.container)
        source = open_source(source_container, self.export.source.path, self.export.source.entity)
        self.report.source = {"container": self.export.source.container, "path": source.path,
                              "entity": source.entity, "partitions": source.partitions,
                              "modelRefreshed": source.model_refreshed}
        mapper = Mapper(self.export.mapping, source.columns, self.export.destination.list_id)
        if self.options.dry_run:
            self._dry_run(source_container, source, mapper)
            return
        api_key = get_api_key(self.export.destination.api_key_secret_name, self.app.key_vault_url)
        logsafe.register_secret(api_key)
        limits = self.export.destination.rate_limits
        with ActiveCampaignClient(self.export.destination.base_url, api_key, limits) as client:
            client.check_access(self.export.destination.list_id)
            store = StateStore(blob_service(self.app.app_storage))
            with store.lock(self.export.name, self.report.run_id, self.options.lock_wait_seconds):
                self._sync(store, client, source_container, source, mapper)
            self.report.requests = client.stats.as_dict()

    def _sync(self, store: StateStore, client: ActiveCampaignClient, container, source: ExportSource,
              mapper: Mapper) -> None:
        loaded = store.load(self.export.name, self.report.run_id)
        self.state, etag = loaded.state, loaded.etag
        if loaded.problem:
            log.warning("%s", loaded.problem)
            self.report.errors.append(loaded.problem)
        if loaded.journal is not None:
            self._resume(loaded.journal, client)
            etag = store.save(self.export.name, self.state, etag)
            store.drop_journal(self.export.name)
        self._subscribed_before = self.state.subscribed_count()  # the mirror brake's measure of the list
        bulk_rate = self.export.destination.rate_limits.bulk_imports_per_minute / 60.0
        self.journal = store.journal(self.export.name, bulk_rate)
        sink = BulkSink(client, self, bulk_rate=bulk_rate, poll=self._poll_timing())
        try:
            seen = self._send_changes(container, source, mapper, sink)
            if self.export.remove_missing:
                self._remove_missing(seen.sorted(), client, sink)
            sink.close()
            self._resubscribe_returners(client)
            self.report.state_memory_mb = round((self.state.nbytes + seen.nbytes) / 2**20, 1)
        except BaseException:
            sink.close_quietly()
            raise
        finally:
            self.journal.stop()
            self._save_state(store, etag)
        self.report.batch_ids = sink.counters.batch_ids
        self.counts["bulkRequests"] = sink.counters.requests_accepted
        self._emit_progress("done", force=True)
        self._fail_on_unconfirmed()

    def _save_state(self, store: StateStore, etag: str | None) -> None:
        try:
            store.save(self.export.name, self.state, etag)
        except ResourceModifiedError:
            self.report.errors.append("the sync state changed during this run; kept the journal so the next "
                                      "run replays this run's confirmations")
            return
        store.drop_journal(self.export.name)

    def _poll_timing(self) -> PollTiming:
        return PollTiming.for_rate(self.export.destination.rate_limits.requests_per_second)

    # --- resume --------------------------------------------------------------------------------------------

    def _resume(self, journal, client: ActiveCampaignClient) -> None:
        """Fold a stopped run's confirmations into the state; ask AC about the batches that were in flight."""
        for entries in journal.confirmed:
            self.state.record(entries)
        confirmed_late = 0
        for batch_id, entries in journal.in_flight.items():
            status = self._wait_for_import(client, batch_id)
            if status is not None and status.status == "completed":
                self.state.record(entries.without_emails(set(status.failure)))
                confirmed_late += len(entries)
        self.report.resumed = {
            "confirmedBatches": len(journal.confirmed),
            "confirmedContacts": sum(len(e) for e in journal.confirmed) + confirmed_late,
            "inFlightBatches": len(journal.in_flight), "inFlightConfirmed": confirmed_late,
        }
        log.info("resumed %s: %s", self.export.name, self.report.resumed)

    def _wait_for_import(self, client: ActiveCampaignClient, batch_id: str):
        timing = self._poll_timing()
        deadline = time.monotonic() + timing.timeout
        delay = timing.first
        while True:
            status = client.import_info(batch_id)
            if status.finished or status.status == "unknown" or time.monotonic() > deadline:
                return status
            time.sleep(delay)
            delay = min(timing.cap, delay * 1.5)

    # --- sending changes -----------------------------------------------------------------------------------

    def _send_changes(self, container, source: ExportSource, mapper: Mapper, sink: BulkSink) -> SeenKeys:
        """Stream rows, send new and changed contacts; returns the keys of every valid contact seen."""
        batcher = Batcher()

        def send(contact: Contact) -> None:
            batch = batcher.add(contact)
            if batch:
                self._send(sink, batch)

        seen = self._diff(container, source, mapper, send)
        last = batcher.flush()
        if last:
            self._send(sink, last)
        return seen

    def _diff(self, container, source: ExportSource, mapper: Mapper, send: Callable[[Contact], None]) -> SeenKeys:
        """Hand new and changed contacts to ``send``, in chunks; returns the keys of every valid contact seen."""
        chunk: list[Contact] = []
        seen = SeenKeys()
        for contact in self._contacts(container, source, mapper):
            chunk.append(contact)
            if len(chunk) >= DIFF_CHUNK:
                self._diff_chunk(chunk, seen, send)
                chunk = []
        if chunk:
            self._diff_chunk(chunk, seen, send)
        return seen

    def _contacts(self, container, source: ExportSource, mapper: Mapper) -> Iterable[Contact]:
        rows_read = 0
        for row in iter_rows(container, source):
            rows_read += 1
            if row.error:
                result: Contact | Rejection = mapper.malformed(row.values, row.error)
            else:
                result = mapper.map_row(row.values)
            origin = (row.partition, row.record, row.line)
            if isinstance(result, Rejection):
                result.where = describe_origin(origin)
                self.rejected(result)
            else:
                result.origin = origin
                yield result
            if rows_read % 1024 == 0:
                self.counts["rowsRead"] = rows_read
                self._emit_progress("sending")
        self.counts["rowsRead"] = rows_read

    def _diff_chunk(self, chunk: list[Contact], seen: SeenKeys, send: Callable[[Contact], None]) -> None:
        """Compare a chunk with the sync state on whole arrays; only contacts to send get a Python step each."""
        size = len(chunk)
        keys = np.fromiter((c.key for c in chunk), np.uint64, size)
        first = seen.add_new(keys)
        old_fps, old_flags = self.state.lookup(keys)
        fps = fingerprints(chunk)
        unchanged = first & (old_flags == ListStatus.SUBSCRIBED) & (old_fps == fps)
        if self.options.full_refresh:
            unchanged[:] = False
        self.counts["unchanged"] += int(np.count_nonzero(unchanged))
        for i in np.flatnonzero(~first).tolist():
            self.rejected(Mapper.duplicate(chunk[i]))
        changed = first & ~unchanged
        returning = old_flags[changed] == ListStatus.UNSUBSCRIBED
        for i, fp, back in zip(np.flatnonzero(changed).tolist(), fps[changed].tolist(), returning.tolist()):
            contact = chunk[i]
            contact.fingerprint = fp
            contact.resubscribe = back
            send(contact)

    def _send(self, sink: BulkSink, batch: Batch) -> None:
        sink.send(batch)
        with self._lock:
            self.counts["sent"] += sum(1 for c in batch.contacts if c.list_status == ListStatus.SUBSCRIBED)
            self.counts["batches"] += 1

    # --- mirror mode ---------------------------------------------------------------------------------------

    def _remove_missing(self, seen: np.ndarray, client: ActiveCampaignClient, sink: BulkSink) -> None:
        keys, emails = self.state.subscribed_missing_from(seen)
        if not len(keys):
            return
        list_size = max(self._subscribed_before, 1)
        share = len(keys) / list_size
        if share > self.export.max_removal_share and not self.options.force_removal:
            message = (f"mirror mode would unsubscribe {len(keys)} of the {list_size} contacts this export keeps on "
                       f"list {self.export.destination.list_id} ({share:.0%}, above maxRemovalShare "
                       f"{self.export.max_removal_share:.0%}); nothing was unsubscribed. If the export is right, run "
                       "again with --force-removal (or \"forceRemoval\": true on demand)")
            log.warning("%s", message)
            self._removal_blocked = message  # raised when the run ends, and recorded then
            self.counts["removalBlocked"] = len(keys)
            self.report.error_kind = "config"
            return
        batcher = Batcher()
        list_id = self.export.destination.list_id
        for key, email in zip(keys.tolist(), emails):
            contact = Contact(key, email, "", orjson.dumps({"email": email, "unsubscribe": [{"listid": list_id}]}),
                              list_status=ListStatus.UNSUBSCRIBED)
            batch = batcher.add(contact)
            if batch:
                self._send(sink, batch)
        last = batcher.flush()
        if last:
            self._send(sink, last)

    def _resubscribe_returners(self, client: ActiveCampaignClient) -> None:
        """Bulk import does not re-subscribe someone taken off the list; contactLists does."""
        list_id = self.export.destination.list_id
        for email in self._resubscribe:
            contact_id = client.find_contact_id(email)
            if contact_id is None:
                continue
            client.set_list_status(contact_id, list_id, ListStatus.SUBSCRIBED)
            self.counts["resubscribed"] += 1

    # --- sink callbacks (called from sender and poller threads) ---------------------------------------------

    def submitted(self, batch: Batch) -> None:
        batch.accepted = Accepted.of(batch.contacts)
        batch.contacts = []  # the confirmation needs only what Accepted keeps
        self.journal.append_submitted(encode_submitted(batch.batch_id or "", batch.accepted.entries))

    def confirmed(self, batch: Batch, failed_emails: set[str]) -> None:
        # Per-contact Python only where AC reported failures: this runs for every batch, on the HTTP threads.
        accepted: Accepted = batch.accepted  # set by submitted(), which the sink calls before any poll
        entries = accepted.entries
        if failed_emails:
            for customer_id, email in accepted.sources():
                if email in failed_emails:
                    self.rejected(Rejection(customer_id, email, Reason.REJECTED_BY_ACTIVECAMPAIGN,
                                            f"ActiveCampaign reported that import {batch.batch_id} failed for it"))
            entries = entries.without_emails(failed_emails)
        self.state.record(entries)
        self.journal.append(encode_confirmed(batch.batch_id or "", failed_emails))
        subscribed = int(np.count_nonzero(entries.flags == ListStatus.SUBSCRIBED))
        returners = [email for email in accepted.returners if email not in failed_emails]
        with self._lock:
            self.counts["confirmed"] += subscribed
            self.counts["unsubscribed"] += len(entries) - subscribed
            self._resubscribe.extend(returners)

    def rejected(self, rejection: Rejection) -> None:
        self.rejected_rows.add(rejection)
        with self._lock:
            self.report.rejected[rejection.reason.value] += 1
        log.debug("rejected %s: %s", logsafe.mask_email(rejection.email), rejection.reason.value)

    def unconfirmed(self, batch: Batch, why: str) -> None:
        accepted: Accepted = batch.accepted
        for customer_id, email in accepted.sources():
            self.rejected_rows.add(Rejection(customer_id, email, Reason.NOT_CONFIRMED,
                                             f"{why}; it is sent again on the next run"))
        with self._lock:
            self.counts["notConfirmed"] += len(accepted.entries)
            self.report.errors.append(why)

    def _fail_on_unconfirmed(self) -> None:
        if self.counts.get("notConfirmed"):
            raise TransientError(f"{self.counts['notConfirmed']} contacts were sent but ActiveCampaign did not "
                                 "confirm their import in time; the next run sends them again")
        if self._removal_blocked:
            raise ConfigError(self._removal_blocked)

    # --- dry run and progress ------------------------------------------------------------------------------

    def _dry_run(self, container, source: ExportSource, mapper: Mapper) -> None:
        """Everything but sending: counts what a run would send, against the stored sync state (read only)."""
        loaded = StateStore(blob_service(self.app.app_storage)).load(self.export.name, self.report.run_id,
                                                                      read_only=True)
        self.state = loaded.state

        def count(contact: Contact) -> None:
            self.counts["wouldSend"] += 1

        self._diff(container, source, mapper, count)
        self._emit_progress("done", force=True)

    def _emit_progress(self, phase: str, force: bool = False) -> None:
        if self.options.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < self.options.progress_interval:
            return
        self._last_progress = now
        elapsed = now - self._started
        confirmed = self.counts["confirmed"]
        rate = confirmed / elapsed if elapsed > 0 else 0.0
        pending = self.counts["sent"] - confirmed
        bulk_rate = self.export.destination.rate_limits.bulk_imports_per_minute * 250 / 60
        eta = pending / bulk_rate if phase != "done" else 0.0
        self.options.progress(Progress(
            export=self.export.name, rows_read=self.counts["rowsRead"], sent=self.counts["sent"],
            confirmed=confirmed, unchanged=self.counts["unchanged"], rejected=sum(self.report.rejected.values()),
            batches=self.counts["batches"], elapsed=elapsed, rate=rate, eta_seconds=eta, phase=phase))


@dataclass(slots=True)
class Accepted:
    """A batch AC has accepted, as confirming it needs it. Up to ``max_unconfirmed`` of them wait for AC to
    process them: as Contact objects that is ~350 bytes a contact, as this ~60."""

    entries: StateRows
    customer_ids: bytes  # a JSON list in the batch's order, read only when AC reports failures
    returners: list[str]  # emails to re-subscribe once confirmed

    @classmethod
    def of(cls, contacts: list[Contact]) -> "Accepted":
        return cls(_entries(contacts), orjson.dumps([c.customer_id for c in contacts]),
                   [c.email for c in contacts if c.resubscribe])

    def sources(self) -> Iterable[tuple[str, str]]:
        """(customer id, email) of each contact, in the batch's order."""
        return zip(orjson.loads(self.customer_ids), self.entries.emails.tolist())


def _entries(contacts: list[Contact]) -> StateRows:
    """The contacts as state entries; a removal's fingerprint is 0 (nothing of it is on the list)."""
    entries = StateRows.of((c.key for c in contacts), (c.fingerprint for c in contacts), (c.list_status for c in contacts),
                           [c.email for c in contacts])
    entries.fingerprints[entries.flags != ListStatus.SUBSCRIBED] = 0
    return entries
