"""What each trigger invocation works with: the app settings and clients of the app's storage account."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from ..report import ReportStore, RunReport, new_run_id
from ..settings import (
    RUN_QUEUE,
    STATE_CONTAINER,
    AppSettings,
    ExportConfig,
    ExportsConfig,
)
from ..storage import blob_service, queue_service
from .messages import RunRequest

log = logging.getLogger(__name__)

_queues_ready: set[str] = set()  # queue URLs created (or found) in this process
_queues_lock = threading.Lock()


@dataclass
class AppClients:
    """The app settings, the run reports, the state container (run markers, run locks) and the run queue.

    One per invocation, made from the environment; creating the clients does no I/O.
    """

    settings: AppSettings
    reports: ReportStore
    state_container: ContainerClient
    run_queue: QueueClient

    @classmethod
    def from_env(cls) -> AppClients:
        settings = AppSettings.from_env()
        service = blob_service(settings.app_storage)
        queue = queue_service(settings.app_storage).get_queue_client(
            RUN_QUEUE, message_encode_policy=TextBase64EncodePolicy())  # the queue trigger expects base64
        return cls(settings, ReportStore(service), service.get_container_client(STATE_CONTAINER), queue)

    def exports(self) -> ExportsConfig:
        """The exports config (read now: a bad one fails this invocation with a message naming the setting)."""
        return self.settings.load_exports()

    def send(self, request: RunRequest, delay_seconds: int = 0) -> None:
        """Put a run on the run queue, visible after ``delay_seconds``."""
        self._ensure_queue()
        self.run_queue.send_message(request.to_json(), visibility_timeout=delay_seconds or None)

    def _ensure_queue(self) -> None:
        url = self.run_queue.url
        if url in _queues_ready:
            return
        try:
            self.run_queue.create_queue()
        except ResourceExistsError:
            pass
        with _queues_lock:
            _queues_ready.add(url)

    def record_skipped(self, export: ExportConfig, trigger: str, reason: str) -> RunReport:
        """Save the report of a run that was not started, with why."""
        report = new_run_report(export, trigger, "skipped")
        report.skip_reason, report.finished_at = reason, report.started_at
        self.reports.save(report)
        log.warning("export %s skipped (%s): %s", export.name, trigger, reason)
        return report


def new_run_report(export: ExportConfig, trigger: str, status: str, run_id: str | None = None,
                   full_refresh: bool = False) -> RunReport:
    """A report for a run the triggers queue or skip (the run itself later saves its own)."""
    report = RunReport(run_id=run_id or new_run_id(), export=export.name, trigger=trigger, status=status,
                       full_refresh=full_refresh)
    report.destination = export.destination.summary()
    return report

