"""``run_export``: one run of one export from start to saved report, with every failure classified."""
from __future__ import annotations

import logging
import time

from .. import logsafe
from ..errors import ConfigError, ExporterError, RunLocked
from ..memory import peak_memory_mb
from ..report import RejectedRows, ReportStore, RunReport, new_run_id, utc_now
from ..settings import AppSettings, ExportConfig
from ..storage import blob_service
from .export_run import ExportRun
from .options import RunOptions

log = logging.getLogger(__name__)


def run_export(export: ExportConfig, app: AppSettings, options: RunOptions | None = None) -> RunReport:
    """Run one export and save its report. Never raises for run failures: the report says what happened."""
    options = options or RunOptions()
    report = RunReport(run_id=options.run_id or new_run_id(), export=export.name, trigger=options.trigger,
                       dry_run=options.dry_run, full_refresh=options.full_refresh)
    report.destination = export.destination.summary()
    reports = ReportStore(blob_service(app.app_storage))
    skip = export.skip_reason()
    if skip:
        report.status, report.skip_reason, report.finished_at = "skipped", skip, utc_now()
        log.warning("export %s skipped: %s", export.name, skip)
        reports.save(report)
        return report
    reports.save(report)
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
