"""Run admission: queue a run of an export unless one is already queued or running for it."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ..report import RunReport, new_run_id, utc_now
from ..settings import RUN_QUEUE, ExportConfig
from ..state import lock_blob_name
from .clients import AppClients, new_run_report
from .messages import RunRequest, StartOptions
from .run_markers import Marker, ModelVersion, RunMarkers

log = logging.getLogger(__name__)

# How long a queued/running report counts as active without other evidence (a lost message, a crashed host).
QUEUED_STALE_AFTER = timedelta(hours=1)
RUNNING_GRACE = timedelta(minutes=10)  # a run saves "running" before it takes the lock
MARKER_GRACE = timedelta(minutes=2)  # the marker is written just before the queued report


def _parse_time(text: str | None) -> datetime | None:
    """A report's or marker's timestamp (``utc_now()``'s format); None if missing or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _younger_than(text: str | None, age: timedelta) -> bool:
    when = _parse_time(text)
    return when is not None and datetime.now(UTC) - when < age


def _lock_held(state_container: ContainerClient, export: str) -> bool:
    """Whether a run holds the export's lock (a lease on its lock blob)."""
    try:
        properties = state_container.get_blob_client(lock_blob_name(export)).get_blob_properties()
    except ResourceNotFoundError:
        return False
    return properties.lease.state == "leased"


def active_run(clients: AppClients, export: str, marker: Marker) -> RunReport | None:
    """The queued or running run the marker names, if it is really still queued or running."""
    run_id = marker.data.get("runId")
    if not run_id:
        return None
    report = clients.reports.load(export, run_id)
    if report is None:  # the marker is written just before the report
        if _younger_than(marker.data.get("queuedAt"), MARKER_GRACE):
            return RunReport(run_id=run_id, export=export, trigger=marker.data.get("trigger", ""), status="queued")
        return None
    if report.status == "queued":
        return report if _younger_than(report.started_at, QUEUED_STALE_AFTER) else None
    running = report.status == "running"
    if running and (_lock_held(clients.state_container, export) or _younger_than(report.started_at, RUNNING_GRACE)):
        return report
    return None


StartKind = Literal["queued", "busy", "duplicate", "skipped"]


@dataclass
class StartResult:
    """What asking to start a run led to: ``queued`` (report is the new run), ``busy`` (report is the active run),
    ``duplicate`` (this model.json version already queued a run) or ``skipped`` (report records why)."""

    kind: StartKind
    export: str
    report: RunReport | None = None
    reason: str | None = None


def record_skipped_start(clients: AppClients, export: ExportConfig, trigger: str, reason: str) -> StartResult:
    """Save a skipped run's report and answer ``skipped``."""
    return StartResult("skipped", export.name, clients.record_skipped(export, trigger, reason), reason)


def claim_and_enqueue(clients: AppClients, export: ExportConfig, trigger: str,
                      options: StartOptions | None = None, arrival: ModelVersion | None = None,
                      delay_seconds: int = 0) -> StartResult:
    """Queue a run unless one is already queued or running for this export (marker replaced atomically)."""
    options = options or StartOptions()
    markers = RunMarkers(clients.state_container)
    for _ in range(5):
        marker = markers.read(export.name)
        last_arrival = marker.data.get("arrival") or {}
        if arrival and last_arrival.get("etag") == arrival.etag:
            return StartResult("duplicate", export.name, reason=f"model.json version {arrival.etag} already "
                               f"queued run {last_arrival.get('runId')}")
        active = active_run(clients, export.name, marker)
        # New data may arrive while a run is going: queue one more behind it (it waits for the lock).
        if active and not (arrival and active.status == "running"):
            if arrival:  # the queued run reads the newest model.json: remember this version as handled
                handled = arrival.as_dict() | {"runId": active.run_id}
                markers.replace(export.name, marker.data | {"arrival": handled}, marker.etag)
            return StartResult("busy", export.name, active,
                               f"run {active.run_id} of export {export.name!r} is already {active.status}")
        run_id = new_run_id()
        data = {"runId": run_id, "trigger": trigger, "queuedAt": utc_now(),
                "arrival": arrival.as_dict() | {"runId": run_id} if arrival else marker.data.get("arrival")}
        if markers.replace(export.name, data, marker.etag):
            report = enqueue_run(clients, export, trigger, options, run_id=run_id, delay_seconds=delay_seconds)
            return StartResult("queued", export.name, report)
    raise AzureError(f"could not queue a run of {export.name!r}: its run marker kept changing")


def enqueue_run(clients: AppClients, export: ExportConfig, trigger: str, options: StartOptions, *, run_id: str,
                delay_seconds: int = 0, deferrals: int = 0) -> RunReport:
    """Save a queued report and put the run on the queue."""
    report = new_run_report(export, trigger, "queued", run_id, options.full_refresh)
    clients.reports.save(report)
    request = RunRequest(run_id, export.name, trigger, options.full_refresh, options.force_removal, deferrals)
    try:
        clients.send(request, delay_seconds)
    except AzureError as exc:
        report.status, report.error_kind, report.finished_at = "failed", "transient", utc_now()
        report.errors.append(f"could not put the run on the queue {RUN_QUEUE}: {exc}")
        clients.reports.save(report)
        raise
    log.info("queued run %s of export %s (%s)", run_id, export.name, trigger)
    return report


def enqueue_all(clients: AppClients, trigger: str) -> list[StartResult]:
    """Queue a run of every export that may run; record a skipped run for the others."""
    results = []
    for export in clients.exports().exports:
        reason = export.skip_reason()
        if reason:
            results.append(record_skipped_start(clients, export, trigger, reason))
            continue
        result = claim_and_enqueue(clients, export, trigger)
        if result.kind == "busy":
            reason = f"{result.reason}; not queued again"
            result = record_skipped_start(clients, export, trigger, reason)
        results.append(result)
    return results
