"""Run reports: one JSON report and one rejected-rows CSV per run, kept in the app's storage.

Layout: ``exporter-runs/<export>/<runId>/report.json`` and ``.../rejected.csv``. Run ids sort by start time,
so the newest runs are the last names under ``<export>/``.
"""
from __future__ import annotations

import csv
import io
import secrets
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from .mapping import Rejection
from .settings import RUNS_CONTAINER

REJECTED_COLUMNS = ["CustomerId", "email", "reason", "detail", "where"]
MAX_BATCH_IDS_IN_REPORT = 10_000


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    # Milliseconds keep runs started in the same second in order; the suffix keeps ids unique.
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class RunReport:
    run_id: str
    export: str
    trigger: str
    status: str = "running"  # queued | running | completed | failed | skipped
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    duration_seconds: float | None = None
    dry_run: bool = False
    full_refresh: bool = False
    source: dict[str, Any] = field(default_factory=dict)
    destination: dict[str, Any] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    requests: dict[str, Any] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know, e.g. a first run's automations
    error_kind: str | None = None  # config | transient | locked
    skip_reason: str | None = None
    rejected_rows_blob: str | None = None
    resumed: dict[str, Any] = field(default_factory=dict)
    peak_memory_mb: float | None = None
    # What the sync state and this run's seen-keys set hold at the end: the part of the peak that grows with
    # the number of contacts (the rest is the pipeline's, bounded by its buffers).
    state_memory_mb: float | None = None

    @property
    def exit_code(self) -> int:
        if self.status in ("completed", "skipped"):
            return 0
        return 2 if self.error_kind == "config" else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id, "export": self.export, "trigger": self.trigger, "status": self.status,
            "startedAt": self.started_at, "finishedAt": self.finished_at, "durationSeconds": self.duration_seconds,
            "dryRun": self.dry_run, "fullRefresh": self.full_refresh,
            "source": self.source, "destination": self.destination,
            "counts": dict(self.counts) | {"rejected": sum(self.rejected.values())},
            "rejectedByReason": dict(self.rejected), "requests": self.requests,
            "batchIds": self.batch_ids[:MAX_BATCH_IDS_IN_REPORT], "batchCount": len(self.batch_ids),
            "errors": self.errors, "notes": self.notes, "errorKind": self.error_kind, "skipReason": self.skip_reason,
            "rejectedRowsBlob": self.rejected_rows_blob, "resumed": self.resumed,
            "peakMemoryMb": self.peak_memory_mb, "stateMemoryMb": self.state_memory_mb,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        counts = dict(data.get("counts") or {})
        counts.pop("rejected", None)
        return cls(
            run_id=data["runId"], export=data["export"], trigger=data.get("trigger", ""),
            status=data.get("status", "unknown"), started_at=data.get("startedAt", ""),
            finished_at=data.get("finishedAt"), duration_seconds=data.get("durationSeconds"),
            dry_run=data.get("dryRun", False), full_refresh=data.get("fullRefresh", False),
            source=data.get("source") or {}, destination=data.get("destination") or {},
            counts=Counter(counts), rejected=Counter(data.get("rejectedByReason") or {}),
            requests=data.get("requests") or {}, batch_ids=data.get("batchIds") or [],
            errors=data.get("errors") or [], notes=data.get("notes") or [], error_kind=data.get("errorKind"), skip_reason=data.get("skipReason"),
            rejected_rows_blob=data.get("rejectedRowsBlob"), resumed=data.get("resumed") or {},
            peak_memory_mb=data.get("peakMemoryMb"), state_memory_mb=data.get("stateMemoryMb"),
        )


class RejectedRows:
    """Rejected rows spooled to a temp file (memory stays bounded), uploaded as CSV when the run ends."""

    def __init__(self) -> None:
        # Open for the whole run and closed by close(): a with-block cannot span the run.
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=4 * 1024 * 1024, mode="w+", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(REJECTED_COLUMNS)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, rejection: Rejection) -> None:
        with self._lock:
            self._writer.writerow([rejection.customer_id, rejection.email, rejection.reason.value,
                                   rejection.detail, rejection.where])
            self.count += 1

    def encoded_chunks(self) -> Iterator[bytes]:
        self._file.flush()
        self._file.seek(0)
        while chunk := self._file.read(1024 * 1024):
            yield chunk.encode("utf-8")

    def close(self) -> None:
        self._file.close()


class ReportStore:
    def __init__(self, service: BlobServiceClient) -> None:
        self._container: ContainerClient = service.get_container_client(RUNS_CONTAINER)
        self._ready = False

    def _ensure_container(self) -> None:
        if not self._ready:
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            self._ready = True

    def save(self, report: RunReport) -> None:
        self._ensure_container()
        self._container.upload_blob(f"{report.export}/{report.run_id}/report.json",
                                    orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2), overwrite=True)

    def save_rejected(self, report: RunReport, rows: RejectedRows) -> None:
        self._ensure_container()
        name = f"{report.export}/{report.run_id}/rejected.csv"
        self._container.upload_blob(name, _Reader(rows.encoded_chunks()), overwrite=True)
        report.rejected_rows_blob = f"{RUNS_CONTAINER}/{name}"

    def load(self, export: str, run_id: str) -> RunReport | None:
        try:
            data = self._container.download_blob(f"{export}/{run_id}/report.json").readall()
        except ResourceNotFoundError:
            return None
        return RunReport.from_dict(orjson.loads(data))

    def latest(self, export: str, limit: int = 10) -> list[RunReport]:
        """The newest runs of an export, newest first."""
        try:
            names = [b.name for b in self._container.list_blobs(name_starts_with=f"{export}/")
                     if b.name.endswith("/report.json")]
        except ResourceNotFoundError:
            return []
        reports = []
        for name in sorted(names, reverse=True)[:limit]:
            report = self.load(export, name.split("/")[1])
            if report:
                reports.append(report)
        return reports

    def rejected_csv(self, report: RunReport) -> str:
        if not report.rejected_rows_blob:
            return ""
        name = report.rejected_rows_blob.removeprefix(f"{RUNS_CONTAINER}/")
        return self._container.download_blob(name).readall().decode("utf-8")


class _Reader(io.RawIOBase):
    """A file-like view of byte chunks, so uploads stream instead of building one big bytes object."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readinto(self, target) -> int:  # type: ignore[override]
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)
