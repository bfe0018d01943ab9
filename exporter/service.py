"""What the function app's triggers do. function_app.py only declares the triggers and calls these.

Every way of starting a run (HTTP, timer, a new model.json) saves a ``queued`` run report and puts a message on
the ``export-runs`` queue; the queue handler does the run (up to ~40 minutes for 1M contacts). One run per export
at a time: a marker blob per export (``exporter-state/<export>/run-marker.json``, replaced with ETag conditions)
names the newest queued run, so two starts cannot both queue, and ``run_export`` holds a blob lease while it runs.

Settings and the exports config are read inside each handler, never at import, so a bad setting fails one request
or run with a message naming it instead of hiding every function.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from . import logsafe
from .errors import ConfigError
from .report import ReportStore, RunReport, new_run_id, utc_now
from .run import RunOptions, run_export
from .settings import EXPORT_NAME_RE, RUN_QUEUE, STATE_CONTAINER, AppSettings, ExportConfig, ExportsConfig
from .source import MODEL_FILE
from .state import lock_blob_name
from .storage import blob_service, queue_service

log = logging.getLogger(__name__)

POISON_QUEUE = f"{RUN_QUEUE}-poison"
MAX_ATTEMPTS = 3  # must equal host.json extensions.queues.maxDequeueCount (a test checks)
# A Customer Insights refresh can write model.json several times within minutes: an arrival run starts this
# much later, and every arrival meanwhile joins it (it reads the newest model.json when it starts).
ARRIVAL_DELAY_SECONDS = 300
# An arrival run that finds its export running waits for it: it is queued again this many times, each
# ARRIVAL_DELAY_SECONDS later (12 x 5 min covers a 40-minute run).
MAX_ARRIVAL_DEFERRALS = 12
# How long a queued/running report counts as active without other evidence (a lost message, a crashed host).
QUEUED_STALE_AFTER = timedelta(hours=1)
RUNNING_GRACE = timedelta(minutes=10)  # a run saves "running" before it takes the lock
MARKER_GRACE = timedelta(minutes=2)  # the marker is written just before the queued report
RETRY_AFTER_SECONDS = 30
# A queued run that meets a running one is skipped at once. (The CLI waits out a crashed run's lease instead;
# a queue retry comes minutes later, when that lease has long expired.)
QUEUE_LOCK_WAIT_SECONDS = 0.0
_RUN_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,79}$")  # new_run_id()'s shape, loosely: no "/" or ".."
_ACTIVE = ("queued", "running")
_OPTION_KEYS = {"fullRefresh": "full_refresh", "forceRemoval": "force_removal"}


class RetryableRunFailure(Exception):
    """Raised from the queue handler so that the Functions host retries the message (transient failures)."""


# --- the queue message ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """One message on the run queue."""

    run_id: str
    export: str
    trigger: str
    full_refresh: bool = False
    force_removal: bool = False
    deferrals: int = 0

    def to_json(self) -> str:
        return json.dumps({"runId": self.run_id, "export": self.export, "trigger": self.trigger,
                           "fullRefresh": self.full_refresh, "forceRemoval": self.force_removal,
                           "deferrals": self.deferrals})

    @classmethod
    def from_json(cls, text: str) -> "RunRequest":
        try:
            data = json.loads(text)
            request = cls(run_id=data["runId"], export=data["export"], trigger=data.get("trigger", "queue"),
                          full_refresh=bool(data.get("fullRefresh", False)),
                          force_removal=bool(data.get("forceRemoval", False)),
                          deferrals=int(data.get("deferrals", 0)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a run message ({type(exc).__name__}: {exc})") from None
        if not _RUN_ID_RE.match(str(request.run_id)) or not EXPORT_NAME_RE.match(str(request.export)):
            raise ValueError("not a run message (bad runId or export)")
        return request

    def options(self) -> RunOptions:
        return RunOptions(trigger=self.trigger, run_id=self.run_id, full_refresh=self.full_refresh,
                          force_removal=self.force_removal, lock_wait_seconds=QUEUE_LOCK_WAIT_SECONDS)


@dataclass(frozen=True)
class StartOptions:
    full_refresh: bool = False
    force_removal: bool = False


# --- per-invocation context -----------------------------------------------------------------------------------

_queues_ready: set[str] = set()
_queues_lock = threading.Lock()


@dataclass
class Context:
    """Settings and storage clients for one invocation (creating clients does no I/O)."""

    settings: AppSettings
    reports: ReportStore
    state: ContainerClient
    queue: QueueClient

    @classmethod
    def from_env(cls) -> "Context":
        settings = AppSettings.from_env()
        service = blob_service(settings.app_storage)
        queue = queue_service(settings.app_storage).get_queue_client(
            RUN_QUEUE, message_encode_policy=TextBase64EncodePolicy())  # the queue trigger expects base64
        return cls(settings, ReportStore(service), service.get_container_client(STATE_CONTAINER), queue)

    def exports(self) -> ExportsConfig:
        return self.settings.load_exports()

    def send(self, request: RunRequest, delay_seconds: int = 0) -> None:
        self._ensure_queue()
        self.queue.send_message(request.to_json(), visibility_timeout=delay_seconds or None)

    def _ensure_queue(self) -> None:
        url = self.queue.url
        if url in _queues_ready:
            return
        try:
            self.queue.create_queue()
        except ResourceExistsError:
            pass
        with _queues_lock:
            _queues_ready.add(url)

    def record_skipped(self, export: ExportConfig, trigger: str, reason: str) -> RunReport:
        report = _new_report(export, trigger, "skipped")
        report.skip_reason, report.finished_at = reason, report.started_at
        self.reports.save(report)
        log.warning("export %s skipped (%s): %s", export.name, trigger, reason)
        return report


def _new_report(export: ExportConfig, trigger: str, status: str, run_id: str | None = None,
                full_refresh: bool = False) -> RunReport:
    report = RunReport(run_id=run_id or new_run_id(), export=export.name, trigger=trigger, status=status,
                       full_refresh=full_refresh)
    report.destination = {"hostname": export.destination.hostname, "listId": export.destination.list_id}
    return report


def prepare_logging() -> None:
    """Scrub secrets and emails from every log record; keep the storage SDK's request logging quiet."""
    logsafe.install()
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


# --- run markers: one queued run per export -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    """The model.json an arrival saw."""

    blob: str
    etag: str
    last_modified: str

    def as_dict(self) -> dict[str, str]:
        return {"blob": self.blob, "etag": self.etag, "lastModified": self.last_modified, "seenAt": utc_now()}


@dataclass
class Marker:
    data: dict[str, Any]
    etag: str | None


class RunMarkers:
    """``<export>/run-marker.json``: the newest run queued for an export, and the last model.json that queued one."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def _blob(self, export: str):
        return self._container.get_blob_client(f"{export}/run-marker.json")

    def read(self, export: str) -> Marker:
        try:
            download = self._blob(export).download_blob()
            data = json.loads(download.readall())
            return Marker(data if isinstance(data, dict) else {}, download.properties.etag)
        except ResourceNotFoundError:
            return Marker({}, None)
        except ValueError:  # unreadable: replace it (with its ETag, so a concurrent writer still wins)
            return Marker({}, self._blob(export).get_blob_properties().etag)

    def replace(self, export: str, data: dict[str, Any], etag: str | None) -> bool:
        """Write the marker only if nobody replaced it since it was read; False if someone did."""
        body = json.dumps(data).encode()
        try:
            if etag:
                self._blob(export).upload_blob(body, overwrite=True, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
            else:
                self._blob(export).upload_blob(body, overwrite=False)
        except (ResourceModifiedError, ResourceExistsError):
            return False
        except ResourceNotFoundError:  # the container does not exist yet
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            return self.replace(export, data, etag) if not etag else False
        return True


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _younger_than(text: str | None, age: timedelta) -> bool:
    when = _parse_time(text)
    return when is not None and datetime.now(timezone.utc) - when < age


def _lock_held(state: ContainerClient, export: str) -> bool:
    try:
        properties = state.get_blob_client(lock_blob_name(export)).get_blob_properties()
    except ResourceNotFoundError:
        return False
    return properties.lease.state == "leased"


def active_run(ctx: Context, export: str, marker: Marker) -> RunReport | None:
    """The queued or running run the marker names, if it is really still queued or running."""
    run_id = marker.data.get("runId")
    if not run_id:
        return None
    report = ctx.reports.load(export, run_id)
    if report is None:  # the marker is written just before the report
        if _younger_than(marker.data.get("queuedAt"), MARKER_GRACE):
            return RunReport(run_id=run_id, export=export, trigger=marker.data.get("trigger", ""), status="queued")
        return None
    if report.status == "queued":
        return report if _younger_than(report.started_at, QUEUED_STALE_AFTER) else None
    if report.status == "running":
        if _lock_held(ctx.state, export) or _younger_than(report.started_at, RUNNING_GRACE):
            return report
    return None


@dataclass
class Outcome:
    """What a start request led to: ``queued`` (report is the new run), ``busy`` (report is the active run),
    ``duplicate`` (this model.json version already queued a run) or ``skipped`` (report records why)."""

    kind: str
    export: str
    report: RunReport | None = None
    reason: str | None = None


def claim_and_enqueue(ctx: Context, export: ExportConfig, trigger: str, options: StartOptions = StartOptions(),
                      arrival: ModelVersion | None = None, delay_seconds: int = 0) -> Outcome:
    """Queue a run unless one is already queued or running for this export (marker replaced atomically)."""
    markers = RunMarkers(ctx.state)
    for _ in range(5):
        marker = markers.read(export.name)
        last_arrival = marker.data.get("arrival") or {}
        if arrival and last_arrival.get("etag") == arrival.etag:
            return Outcome("duplicate", export.name, reason=f"model.json version {arrival.etag} already queued "
                           f"run {last_arrival.get('runId')}")
        active = active_run(ctx, export.name, marker)
        # New data may arrive while a run is going: queue one more behind it (it waits for the lock).
        if active and not (arrival and active.status == "running"):
            if arrival:  # the queued run reads the newest model.json: remember this version as handled
                markers.replace(export.name, marker.data | {"arrival": arrival.as_dict() | {"runId": active.run_id}},
                                marker.etag)
            return Outcome("busy", export.name, active,
                           f"run {active.run_id} of export {export.name!r} is already {active.status}")
        run_id = new_run_id()
        data = {"runId": run_id, "trigger": trigger, "queuedAt": utc_now(),
                "arrival": arrival.as_dict() | {"runId": run_id} if arrival else marker.data.get("arrival")}
        if markers.replace(export.name, data, marker.etag):
            report = enqueue_run(ctx, export, trigger, options, run_id=run_id, delay_seconds=delay_seconds)
            return Outcome("queued", export.name, report)
    raise AzureError(f"could not queue a run of {export.name!r}: its run marker kept changing")


def enqueue_run(ctx: Context, export: ExportConfig, trigger: str, options: StartOptions, *, run_id: str,
                delay_seconds: int = 0, deferrals: int = 0) -> RunReport:
    """Save a queued report and put the run on the queue."""
    report = _new_report(export, trigger, "queued", run_id, options.full_refresh)
    ctx.reports.save(report)
    request = RunRequest(run_id, export.name, trigger, options.full_refresh, options.force_removal, deferrals)
    try:
        ctx.send(request, delay_seconds)
    except AzureError as exc:
        report.status, report.error_kind, report.finished_at = "failed", "transient", utc_now()
        report.errors.append(f"could not put the run on the queue {RUN_QUEUE}: {exc}")
        ctx.reports.save(report)
        raise
    log.info("queued run %s of export %s (%s)", run_id, export.name, trigger)
    return report


def enqueue_all(ctx: Context, trigger: str) -> list[Outcome]:
    """Queue a run of every export that may run; record a skipped run for the others."""
    outcomes = []
    for export in ctx.exports().exports:
        reason = export.skip_reason()
        if reason:
            outcomes.append(Outcome("skipped", export.name, ctx.record_skipped(export, trigger, reason), reason))
            continue
        outcome = claim_and_enqueue(ctx, export, trigger)
        if outcome.kind == "busy":
            reason = f"{outcome.reason}; not queued again"
            outcome = Outcome("skipped", export.name, ctx.record_skipped(export, trigger, reason), reason)
        outcomes.append(outcome)
    return outcomes


# --- HTTP -----------------------------------------------------------------------------------------------------


class HttpProblem(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, headers=headers or {},
                             mimetype="application/json", charset="utf-8")


def _http_errors(handler: Callable[[func.HttpRequest], func.HttpResponse]):
    """Every failure becomes a JSON answer with a message (config problems name the setting)."""

    def wrapped(req: func.HttpRequest) -> func.HttpResponse:
        prepare_logging()
        try:
            return handler(req)
        except HttpProblem as exc:
            return _json_response(exc.status, {"error": str(exc)} | exc.extra)
        except ConfigError as exc:
            log.error("configuration problem: %s", exc)
            return _json_response(500, {"error": str(exc), "kind": "configuration"})
        except AzureError as exc:
            log.error("storage unavailable: %s", exc)
            return _json_response(503, {"error": f"storage is unavailable, try again: {type(exc).__name__}"},
                                  {"Retry-After": str(RETRY_AFTER_SECONDS)})

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def parse_start_options(body: bytes) -> StartOptions:
    """The optional JSON body of a start request: ``{"fullRefresh": bool, "forceRemoval": bool}``."""
    if not body or not body.strip():
        return StartOptions()
    example = 'send {"fullRefresh": true} or {"forceRemoval": true}, or no body'
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpProblem(400, f"the request body is not JSON; {example}") from None
    if not isinstance(data, dict):
        raise HttpProblem(400, f"the request body must be a JSON object; {example}")
    unknown = sorted(set(data) - set(_OPTION_KEYS))
    if unknown:
        raise HttpProblem(400, f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                          f"{', '.join(_OPTION_KEYS)}")
    for key, value in data.items():
        if not isinstance(value, bool):
            raise HttpProblem(400, f"{key!r} must be true or false, not {json.dumps(value)}")
    return StartOptions(**{_OPTION_KEYS[key]: value for key, value in data.items()})


def _api_base(req: func.HttpRequest) -> str:
    """``scheme://host/api`` as the caller reached us (keeps a custom route prefix; drops the key in ``code``)."""
    parts = urlsplit(req.url)
    index = parts.path.find("/exports")
    prefix = parts.path[:index] if index >= 0 else "/api"
    return f"{parts.scheme}://{parts.netloc}{prefix}"


def status_url(req: func.HttpRequest, export: str, run_id: str) -> str:
    return f"{_api_base(req)}/exports/{export}/runs/{run_id}"


def _find_export(config: ExportsConfig, name: str) -> ExportConfig:
    for export in config.exports:
        if export.name == name:
            return export
    known = [e.name for e in config.exports]
    raise HttpProblem(404, f"no export named {name!r}; configured exports: {', '.join(known)}", exports=known)


def _run_summary(req: func.HttpRequest, report: RunReport) -> dict[str, Any]:
    return {"runId": report.run_id, "export": report.export, "status": report.status,
            "statusUrl": status_url(req, report.export, report.run_id)}


@_http_errors
def start_run(req: func.HttpRequest) -> func.HttpResponse:
    """POST exports/{name}/runs: 202 + Location of the queued run; 409 if it may not run or one is active."""
    name = req.route_params.get("name", "")
    options = parse_start_options(req.get_body())
    ctx = Context.from_env()
    export = _find_export(ctx.exports(), name)
    reason = export.skip_reason()
    if reason:
        raise HttpProblem(409, f"export {name!r} cannot run: {reason}", export=name, reason=reason)
    outcome = claim_and_enqueue(ctx, export, "http", options)
    if outcome.kind == "busy":
        active = outcome.report
        raise HttpProblem(409, f"{outcome.reason}; nothing was queued. Follow it at activeRun.statusUrl",
                          export=name, activeRun=_run_summary(req, active))
    body = _run_summary(req, outcome.report) | {"fullRefresh": options.full_refresh,
                                                "forceRemoval": options.force_removal}
    return _json_response(202, body, {"Location": body["statusUrl"], "Retry-After": str(RETRY_AFTER_SECONDS)})


@_http_errors
def start_all_runs(req: func.HttpRequest) -> func.HttpResponse:
    """POST exports/runs: queue every export that may run; 202 if any was queued, else 409."""
    _reject_options_for_all(req.get_body())
    ctx = Context.from_env()
    outcomes = enqueue_all(ctx, "http")
    runs = [_run_summary(req, o.report) for o in outcomes if o.kind == "queued"]
    skipped = [{"export": o.export, "reason": o.reason, "runId": o.report.run_id}
               for o in outcomes if o.kind == "skipped"]
    body = {"runs": runs, "skipped": skipped}
    if not runs:
        return _json_response(409, body | {"error": "no export was queued; see skipped for the reasons"})
    return _json_response(202, body, {"Location": f"{_api_base(req)}/exports",
                                      "Retry-After": str(RETRY_AFTER_SECONDS)})


def _reject_options_for_all(body: bytes) -> None:
    options = parse_start_options(body)
    if options != StartOptions():
        raise HttpProblem(400, "fullRefresh and forceRemoval apply to one export: use POST exports/{name}/runs")


@_http_errors
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports/{name}/runs/{runId}: the run's report."""
    name, run_id = req.route_params.get("name", ""), req.route_params.get("runId", "")
    report = None
    if EXPORT_NAME_RE.match(name) and _RUN_ID_RE.match(run_id):
        report = Context.from_env().reports.load(name, run_id)
    if report is None:
        raise HttpProblem(404, f"no run {run_id!r} of export {name!r}", export=name, runId=run_id)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if report.status in _ACTIVE else {}
    return _json_response(200, report.to_dict() | {"statusUrl": status_url(req, name, run_id)}, headers)


@_http_errors
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports: the configured exports, whether they may run, and their last run."""
    ctx = Context.from_env()
    items = []
    for export in ctx.exports().exports:
        last = ctx.reports.latest(export.name, limit=1)
        items.append({
            "name": export.name, "enabled": export.enabled, "privacyConsent": export.privacy_consent,
            "canRun": export.skip_reason() is None, "skipReason": export.skip_reason(),
            "source": {"container": export.source.container, "path": export.source.path},
            "destination": {"hostname": export.destination.hostname, "listId": export.destination.list_id},
            "lastRun": _last_run(req, last[0]) if last else None,
        })
    return _json_response(200, {"exports": items})


def _last_run(req: func.HttpRequest, report: RunReport) -> dict[str, Any]:
    return _run_summary(req, report) | {"trigger": report.trigger, "startedAt": report.started_at,
                                        "finishedAt": report.finished_at, "counts": report.to_dict()["counts"],
                                        "skipReason": report.skip_reason}


# --- timer ----------------------------------------------------------------------------------------------------


def run_schedule(timer: func.TimerRequest) -> list[Outcome]:
    """Queue every export that may run; a past-due tick (the app was stopped or busy) runs now."""
    prepare_logging()
    if timer.past_due:
        log.warning("the export schedule is past due (the app was stopped or busy at the scheduled time); "
                    "queueing the exports now")
    outcomes = enqueue_all(Context.from_env(), "timer")
    log.info("schedule: %s", ", ".join(f"{o.export}={o.kind}" for o in outcomes))
    return outcomes


# --- on arrival -----------------------------------------------------------------------------------------------


def split_model_blob(name: str) -> tuple[str, str] | None:
    """``container/folder/model.json`` → (container, folder); None for any other blob."""
    container, _, path = name.strip("/").partition("/")
    if not path.endswith("/" + MODEL_FILE):
        return None
    return container, path[: -len(MODEL_FILE) - 1]


def _source_folder(export: ExportConfig) -> str:
    path = export.source.path
    return path[: -len(MODEL_FILE)].rstrip("/") if path == MODEL_FILE or path.endswith("/" + MODEL_FILE) else path


def _model_version(ctx: Context, container: str, blob: str) -> ModelVersion | None:
    try:
        properties = (blob_service(ctx.settings.export_storage).get_blob_client(container, blob)
                      .get_blob_properties())
    except ResourceNotFoundError:
        return None
    return ModelVersion(f"{container}/{blob}", properties.etag, properties.last_modified.isoformat())


def handle_arrival(blob: func.InputStream) -> list[Outcome]:
    """A blob changed in the export container: queue a run of each export that reads this model.json.

    Only the blob's name is used; its body is never read.
    """
    prepare_logging()
    located = split_model_blob(blob.name or "")
    if located is None:
        log.debug("ignoring %s: not a model.json", blob.name)
        return []
    container, folder = located
    ctx = Context.from_env()
    exports = [e for e in ctx.exports().exports
               if e.source.container == container and _source_folder(e) == folder]
    if not exports:
        log.info("no export reads %s; nothing to do", blob.name)
        return []
    version = _model_version(ctx, container, f"{folder}/{MODEL_FILE}")
    if version is None:
        log.info("%s is gone again; nothing to do", blob.name)
        return []
    outcomes = [_arrive(ctx, export, version) for export in exports]
    log.info("model.json arrived at %s: %s", blob.name, ", ".join(f"{o.export}={o.kind}" for o in outcomes))
    return outcomes


def _arrive(ctx: Context, export: ExportConfig, version: ModelVersion) -> Outcome:
    reason = export.skip_reason()
    if reason:
        return Outcome("skipped", export.name, ctx.record_skipped(export, "arrival", reason), reason)
    return claim_and_enqueue(ctx, export, "arrival", arrival=version, delay_seconds=ARRIVAL_DELAY_SECONDS)


# --- the run queue --------------------------------------------------------------------------------------------


def _read_request(msg: func.QueueMessage) -> RunRequest | None:
    try:
        return RunRequest.from_json(msg.get_body().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        log.error("dropping queue message %s: %s", msg.id, exc)
        return None


def _already_done(report: RunReport | None) -> bool:
    """A redelivered message whose run already ended for good (a transient failure is worth another go)."""
    if report is None:
        return False
    return report.status in ("completed", "skipped") or (report.status == "failed" and report.error_kind != "transient")


def process_run(msg: func.QueueMessage) -> RunReport | None:
    """Run the export a queue message names. Raises RetryableRunFailure for transient failures only."""
    prepare_logging()
    request = _read_request(msg)
    if request is None:
        return None
    ctx = Context.from_env()
    previous = ctx.reports.load(request.export, request.run_id)
    if _already_done(previous):
        log.info("run %s of %s already %s; nothing to do", request.run_id, request.export, previous.status)
        return previous
    try:
        export = ctx.exports().get(request.export)
    except ConfigError as exc:
        return _record_failed(ctx, request, previous, "config", str(exc))
    report = run_export(export, ctx.settings, request.options())
    if report.status == "failed" and report.error_kind == "transient":
        attempt = getattr(msg, "dequeue_count", None) or 1
        last = report.errors[-1] if report.errors else "no detail"
        raise RetryableRunFailure(logsafe.scrub(
            f"run {report.run_id} of export {export.name!r} failed (attempt {attempt} of {MAX_ATTEMPTS}); the "
            f"queue tries it again: {last}"))
    if report.error_kind == "locked" and request.trigger == "arrival":
        _defer_arrival(ctx, export, request)
    return report


def _defer_arrival(ctx: Context, export: ExportConfig, request: RunRequest) -> None:
    """New data arrived during another run: try again later instead of waiting for the next schedule."""
    if request.deferrals >= MAX_ARRIVAL_DEFERRALS:
        log.warning("run %s of %s gave up waiting for the running export", request.run_id, export.name)
        return
    report = _new_report(export, "arrival", "queued", request.run_id, request.full_refresh)
    report.errors.append(f"the export was running; waiting for it (try {request.deferrals + 1} of "
                         f"{MAX_ARRIVAL_DEFERRALS}), starts in {ARRIVAL_DELAY_SECONDS} s or later")
    ctx.reports.save(report)
    ctx.send(RunRequest(request.run_id, request.export, request.trigger, request.full_refresh,
                        request.force_removal, request.deferrals + 1), ARRIVAL_DELAY_SECONDS)


def _record_failed(ctx: Context, request: RunRequest, previous: RunReport | None, kind: str,
                   message: str) -> RunReport:
    report = previous or RunReport(run_id=request.run_id, export=request.export, trigger=request.trigger)
    report.status, report.error_kind, report.finished_at = "failed", kind, utc_now()
    report.errors.append(message)
    ctx.reports.save(report)
    log.error("run %s of %s failed: %s", request.run_id, request.export, message)
    return report


def record_poison(msg: func.QueueMessage) -> RunReport | None:
    """The host gave up on a run message: make the run show as failed, with why, instead of staying queued."""
    prepare_logging()
    request = _read_request(msg)
    if request is None:
        return None
    ctx = Context.from_env()
    report = ctx.reports.load(request.export, request.run_id)
    if report is not None and report.status in ("completed", "skipped"):
        log.info("poison message for run %s of %s, which %s; left as it is", request.run_id, request.export,
                 report.status)
        return report
    last = (report.errors[-1] if report and report.errors
            else "no error was recorded (the host may have stopped the run: timeout or restart)")
    kind = (report.error_kind if report else None) or "transient"
    return _record_failed(ctx, request, report, kind, f"gave up after {MAX_ATTEMPTS} attempts: {last}")
