"""The HTTP API: start one or every export's run, read a run's report, list the exports; errors as JSON."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError

from ..errors import ConfigError
from ..report import RunReport
from ..settings import EXPORT_NAME_RE, ExportConfig, ExportsConfig
from .admission import claim_and_enqueue, enqueue_all
from .clients import AppClients
from .log_setup import prepare_logging
from .messages import RUN_ID_RE, InvalidStartOptions, StartOptions

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
_ACTIVE_STATUSES = ("queued", "running")


class HttpProblem(Exception):
    """An answer other than success: its status, its message (``error``) and more fields for the JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, headers=headers or {},
                             mimetype="application/json", charset="utf-8")


HttpHandler = Callable[[func.HttpRequest], func.HttpResponse]


def _errors_as_json(handler: HttpHandler) -> HttpHandler:
    """Every failure becomes a JSON answer with a message (config problems name the setting)."""

    @wraps(handler)
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

    return wrapped


def _start_options(req: func.HttpRequest) -> StartOptions:
    try:
        return StartOptions.from_request_body(req.get_body())
    except InvalidStartOptions as exc:
        raise HttpProblem(400, str(exc)) from None


def _api_base(req: func.HttpRequest) -> str:
    """``scheme://host/api`` as the caller reached us (keeps a custom route prefix; drops the key in ``code``)."""
    parts = urlsplit(req.url)
    index = parts.path.find("/exports")
    prefix = parts.path[:index] if index >= 0 else "/api"
    return f"{parts.scheme}://{parts.netloc}{prefix}"


def status_url(req: func.HttpRequest, export: str, run_id: str) -> str:
    """Where the caller can follow a run: GET exports/{name}/runs/{runId}."""
    return f"{_api_base(req)}/exports/{export}/runs/{run_id}"


def _find_export(config: ExportsConfig, name: str) -> ExportConfig:
    try:
        return config.get(name)
    except ConfigError:
        known = [e.name for e in config.exports]
        raise HttpProblem(404, f"no export named {name!r}; configured exports: {', '.join(known)}",
                          exports=known) from None


def _run_summary(req: func.HttpRequest, report: RunReport) -> dict[str, Any]:
    return {"runId": report.run_id, "export": report.export, "status": report.status,
            "statusUrl": status_url(req, report.export, report.run_id)}


@_errors_as_json
def start_run(req: func.HttpRequest) -> func.HttpResponse:
    """POST exports/{name}/runs: 202 + Location of the queued run; 409 if it may not run or one is active."""
    name = req.route_params.get("name", "")
    options = _start_options(req)
    clients = AppClients.from_env()
    export = _find_export(clients.exports(), name)
    reason = export.skip_reason()
    if reason:
        raise HttpProblem(409, f"export {name!r} cannot run: {reason}", export=name, reason=reason)
    result = claim_and_enqueue(clients, export, "http", options)
    if result.kind == "busy":
        active = result.report
        raise HttpProblem(409, f"{result.reason}; nothing was queued. Follow it at activeRun.statusUrl",
                          export=name, activeRun=_run_summary(req, active))
    body = _run_summary(req, result.report) | options.to_dict()
    return _json_response(202, body, {"Location": body["statusUrl"], "Retry-After": str(RETRY_AFTER_SECONDS)})


@_errors_as_json
def start_all_runs(req: func.HttpRequest) -> func.HttpResponse:
    """POST exports/runs: queue every export that may run; 202 if any was queued, else 409."""
    _reject_options_for_all(req)
    clients = AppClients.from_env()
    results = enqueue_all(clients, "http")
    runs = [_run_summary(req, r.report) for r in results if r.kind == "queued"]
    skipped = [{"export": r.export, "reason": r.reason, "runId": r.report.run_id}
               for r in results if r.kind == "skipped"]
    body = {"runs": runs, "skipped": skipped}
    if not runs:
        return _json_response(409, body | {"error": "no export was queued; see skipped for the reasons"})
    return _json_response(202, body, {"Location": f"{_api_base(req)}/exports",
                                      "Retry-After": str(RETRY_AFTER_SECONDS)})


def _reject_options_for_all(req: func.HttpRequest) -> None:
    """Options apply to one export's run: POST exports/runs takes none."""
    if _start_options(req) != StartOptions():
        raise HttpProblem(400, "fullRefresh and forceRemoval apply to one export: use POST exports/{name}/runs")


@_errors_as_json
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports/{name}/runs/{runId}: the run's report."""
    name, run_id = req.route_params.get("name", ""), req.route_params.get("runId", "")
    report = None
    if EXPORT_NAME_RE.match(name) and RUN_ID_RE.match(run_id):
        report = AppClients.from_env().reports.load(name, run_id)
    if report is None:
        raise HttpProblem(404, f"no run {run_id!r} of export {name!r}", export=name, runId=run_id)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if report.status in _ACTIVE_STATUSES else {}
    return _json_response(200, report.to_dict() | {"statusUrl": status_url(req, name, run_id)}, headers)


@_errors_as_json
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    """GET exports: the configured exports, whether they may run, and their last run."""
    clients = AppClients.from_env()
    items = []
    for export in clients.exports().exports:
        last = clients.reports.latest(export.name, limit=1)
        items.append({
            "name": export.name, "enabled": export.enabled, "privacyConsent": export.privacy_consent,
            "canRun": export.skip_reason() is None, "skipReason": export.skip_reason(),
            "source": {"container": export.source.container, "path": export.source.path},
            "destination": export.destination.summary(),
            "lastRun": _last_run(req, last[0]) if last else None,
        })
    return _json_response(200, {"exports": items})


def _last_run(req: func.HttpRequest, report: RunReport) -> dict[str, Any]:
    return _run_summary(req, report) | {"trigger": report.trigger, "startedAt": report.started_at,
                                        "finishedAt": report.finished_at, "counts": report.to_dict()["counts"],
                                        "skipReason": report.skip_reason}
