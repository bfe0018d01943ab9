"""The run queue: do the run a message names; record a run the host gave up on (the poison queue)."""
from __future__ import annotations

import logging
from typing import NamedTuple

import azure.functions as func

from .. import logsafe
from ..errors import ConfigError
from ..report import RunReport, utc_now
from ..run import RunOptions, run_export
from ..settings import RUN_QUEUE
from .arrival import defer_arrival_run
from .clients import AppClients
from .log_setup import prepare_logging
from .messages import RunRequest

log = logging.getLogger(__name__)

POISON_QUEUE = f"{RUN_QUEUE}-poison"
MAX_ATTEMPTS = 3  # must equal host.json extensions.queues.maxDequeueCount (a test checks)
# A queued run that meets a running one is skipped at once. (The CLI waits out a crashed run's lease instead;
# a queue retry comes minutes later, when that lease has long expired.)
QUEUE_LOCK_WAIT_SECONDS = 0.0
_ENDED = ("completed", "skipped")  # a run that ended for good without failing


class RetryableRunFailure(Exception):
    """Raised from the queue handler so that the Functions host retries the message (transient failures)."""


def _run_options(request: RunRequest) -> RunOptions:
    """How the queue worker runs a requested run: it does not wait for another run's lock."""
    return RunOptions(trigger=request.trigger, run_id=request.run_id, full_refresh=request.full_refresh,
                      force_removal=request.force_removal, lock_wait_seconds=QUEUE_LOCK_WAIT_SECONDS)


def _read_request(msg: func.QueueMessage) -> RunRequest | None:
    """The run a message names; None (logged, and the message dropped) if it is not a run message."""
    try:
        return RunRequest.from_json(msg.get_body().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        log.error("dropping queue message %s: %s", msg.id, exc)
        return None


def _already_done(report: RunReport | None) -> bool:
    """A redelivered message whose run already ended for good (a transient failure is worth another go)."""
    if report is None:
        return False
    return report.status in _ENDED or (report.status == "failed" and report.error_kind != "transient")


class _Delivery(NamedTuple):
    request: RunRequest
    clients: AppClients
    report: RunReport | None  # the run's report so far


def _receive(msg: func.QueueMessage) -> _Delivery | None:
    """The run a message names and its report so far; None (logged) for a message that is not a run."""
    prepare_logging()
    request = _read_request(msg)
    if request is None:
        return None
    clients = AppClients.from_env()
    return _Delivery(request, clients, clients.reports.load(request.export, request.run_id))


def process_run(msg: func.QueueMessage) -> RunReport | None:
    """Run the export a queue message names. Raises RetryableRunFailure for transient failures only."""
    delivery = _receive(msg)
    if delivery is None:
        return None
    request, clients, previous = delivery
    if _already_done(previous):
        log.info("run %s of %s already %s; nothing to do", request.run_id, request.export, previous.status)
        return previous
    try:
        export = clients.exports().get(request.export)
    except ConfigError as exc:
        return _record_failed(clients, request, previous, "config", str(exc))
    report = run_export(export, clients.settings, _run_options(request))
    if report.status == "failed" and report.error_kind == "transient":
        attempt = getattr(msg, "dequeue_count", None) or 1
        last = report.errors[-1] if report.errors else "no detail"
        raise RetryableRunFailure(logsafe.scrub(
            f"run {report.run_id} of export {export.name!r} failed (attempt {attempt} of {MAX_ATTEMPTS}); the "
            f"queue tries it again: {last}"))
    if report.error_kind == "locked" and request.trigger == "arrival":
        defer_arrival_run(clients, export, request)
    return report


def _record_failed(clients: AppClients, request: RunRequest, previous: RunReport | None, kind: str,
                   message: str) -> RunReport:
    """Save the run's report as failed, with ``message`` as its last error."""
    report = previous or RunReport(run_id=request.run_id, export=request.export, trigger=request.trigger)
    report.status, report.error_kind, report.finished_at = "failed", kind, utc_now()
    report.errors.append(message)
    clients.reports.save(report)
    log.error("run %s of %s failed: %s", request.run_id, request.export, message)
    return report


def record_poison(msg: func.QueueMessage) -> RunReport | None:
    """The host gave up on a run message: make the run show as failed, with why, instead of staying queued."""
    delivery = _receive(msg)
    if delivery is None:
        return None
    request, clients, report = delivery
    if report is not None and report.status in _ENDED:
        log.info("poison message for run %s of %s, which %s; left as it is", request.run_id, request.export,
                 report.status)
        return report
    last = (report.errors[-1] if report and report.errors
            else "no error was recorded (the host may have stopped the run: timeout or restart)")
    kind = (report.error_kind if report else None) or "transient"
    return _record_failed(clients, request, report, kind, f"gave up after {MAX_ATTEMPTS} attempts: {last}")
