"""A new model.json: queue a delayed run of each export that reads it, and make such a run wait for a running one."""
from __future__ import annotations

import logging
from dataclasses import replace

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError

from ..settings import ExportConfig
from ..source import MODEL_FILE
from ..storage import blob_service
from .admission import StartResult, claim_and_enqueue, record_skipped_start
from .clients import AppClients, new_run_report
from .log_setup import prepare_logging
from .messages import RunRequest
from .run_markers import ModelVersion

log = logging.getLogger(__name__)

# A Customer Insights refresh can write model.json several times within minutes: an arrival run starts this
# much later, and every arrival meanwhile joins it (it reads the newest model.json when it starts).
ARRIVAL_DELAY_SECONDS = 300
# An arrival run that finds its export running waits for it: it is queued again this many times, each
# ARRIVAL_DELAY_SECONDS later: an hour in all, longer than a 1M-contact run (about 40 minutes).
MAX_ARRIVAL_DEFERRALS = 12


def split_model_blob(name: str) -> tuple[str, str] | None:
    """``container/folder/model.json`` → (container, folder); None for any other blob."""
    container, _, path = name.strip("/").partition("/")
    if not path.endswith("/" + MODEL_FILE):
        return None
    return container, path[: -len(MODEL_FILE) - 1]


def _source_folder(export: ExportConfig) -> str:
    """The folder the export reads model.json from (source.path may name model.json itself)."""
    path = export.source.path
    return path[: -len(MODEL_FILE)].rstrip("/") if path == MODEL_FILE or path.endswith("/" + MODEL_FILE) else path


def _current_model_version(clients: AppClients, container: str, blob: str) -> ModelVersion | None:
    """The model.json as it is now; None if it is gone."""
    try:
        properties = (blob_service(clients.settings.export_storage).get_blob_client(container, blob)
                      .get_blob_properties())
    except ResourceNotFoundError:
        return None
    return ModelVersion(f"{container}/{blob}", properties.etag, properties.last_modified.isoformat())


def handle_arrival(blob: func.InputStream) -> list[StartResult]:
    """A blob changed in the export container: queue a run of each export that reads this model.json.

    Only the blob's name is used; its body is never read.
    """
    prepare_logging()
    located = split_model_blob(blob.name or "")
    if located is None:
        log.debug("ignoring %s: not a model.json", blob.name)
        return []
    container, folder = located
    clients = AppClients.from_env()
    exports = [e for e in clients.exports().exports
               if e.source.container == container and _source_folder(e) == folder]
    if not exports:
        log.info("no export reads %s; nothing to do", blob.name)
        return []
    version = _current_model_version(clients, container, f"{folder}/{MODEL_FILE}")
    if version is None:
        log.info("%s is gone again; nothing to do", blob.name)
        return []
    results = [_start_arrival_run(clients, export, version) for export in exports]
    log.info("model.json arrived at %s: %s", blob.name, ", ".join(f"{r.export}={r.kind}" for r in results))
    return results


def _start_arrival_run(clients: AppClients, export: ExportConfig, version: ModelVersion) -> StartResult:
    reason = export.skip_reason()
    if reason:
        return record_skipped_start(clients, export, "arrival", reason)
    return claim_and_enqueue(clients, export, "arrival", arrival=version, delay_seconds=ARRIVAL_DELAY_SECONDS)


def defer_arrival_run(clients: AppClients, export: ExportConfig, request: RunRequest) -> None:
    """New data arrived during another run: try again later instead of waiting for the next schedule."""
    if request.deferrals >= MAX_ARRIVAL_DEFERRALS:
        log.warning("run %s of %s gave up waiting for the running export", request.run_id, export.name)
        return
    report = new_run_report(export, "arrival", "queued", request.run_id, request.full_refresh)
    report.errors.append(f"the export was running; waiting for it (try {request.deferrals + 1} of "
                         f"{MAX_ARRIVAL_DEFERRALS}), starts in {ARRIVAL_DELAY_SECONDS} s or later")
    clients.reports.save(report)
    clients.send(replace(request, deferrals=request.deferrals + 1), ARRIVAL_DELAY_SECONDS)
