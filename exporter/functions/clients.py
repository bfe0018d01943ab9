"""The settings and storage clients one trigger invocation works with."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from ..report import ReportStore, RunReport, new_run_id
from ..settings import RUN_QUEUE, STATE_CONTAINER, AppSettings, ExportConfig, ExportsConfig
from ..storage import blob_service, queue_service
from .messages import RunRequest

log = logging.getLogger(__name__)

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
        report = new_report(export, trigger, "skipped")
        report.skip_reason, report.finished_at = reason, report.started_at
        self.reports.save(report)
        log.warning("export %s skipped (%s): %s", export.name, trigger, reason)
        return report


def new_report(export: ExportConfig, trigger: str, status: str, run_id: str | None = None,
               full_refresh: bool = False) -> RunReport:
    report = RunReport(run_id=run_id or new_run_id(), export=export.name, trigger=trigger, status=status,
                       full_refresh=full_refresh)
    report.destination = {"hostname": export.destination.hostname, "listId": export.destination.list_id}
    return report
