"""Command line: ``python -m exporter run | status | validate``.

Exit codes: 0 the run completed (rejected rows are reported, not failures), 1 it failed, 2 configuration error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from . import logsafe
from .errors import ConfigError, ExporterError
from .memory import tune_process
from .preflight import check_source, connect_destination
from .report import ReportStore, RunReport
from .run import Progress, RunOptions, run_export
from .settings import AppSettings, ExportConfig, ExportsConfig
from .storage import blob_service

log = logging.getLogger("exporter")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    tune_process()
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExporterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m exporter",
                                     description="Export Customer Insights segments to ActiveCampaign lists.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the exports (all, or one)")
    _config_args(run)
    run.add_argument("--dry-run", action="store_true", help="read, map and report without sending anything")
    run.add_argument("--full", action="store_true", help="send every contact again and rebuild the sync state")
    run.add_argument("--force-removal", action="store_true",
                     help="mirror mode: unsubscribe leavers even above maxRemovalShare")
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser("status", help="show the latest runs from their reports")
    status.add_argument("--config", help="exports config (path or JSON); default: EXPORTS_CONFIG")
    status.add_argument("--export", help="only this export")
    status.add_argument("--limit", type=int, default=5, help="runs per export (default 5)")
    status.set_defaults(handler=_cmd_status)

    validate = sub.add_parser("validate", help="check config, source and destination without sending")
    _config_args(validate)
    validate.set_defaults(handler=_cmd_validate)
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="exports config file (or JSON); default: the EXPORTS_CONFIG setting")
    parser.add_argument("--export", help="only the export with this name")


def _setup_logging(verbose: bool) -> None:
    logsafe.install()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _selected(config: ExportsConfig, name: str | None) -> list[ExportConfig]:
    return [config.get(name)] if name else list(config.exports)


# --- run ----------------------------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    app = AppSettings.from_env()
    config = app.load_exports(args.config)
    exit_code = 0
    for export in _selected(config, args.export):
        display = ProgressLine(sys.stderr)
        options = RunOptions(trigger="cli", dry_run=args.dry_run, full_refresh=args.full,
                             force_removal=args.force_removal, progress=display.show)
        report = run_export(export, app, options)
        display.finish()
        print_summary(report, sys.stdout)
        exit_code = max(exit_code, report.exit_code)
    return exit_code


class ProgressLine:
    """One self-updating line on a terminal; a log line every few seconds otherwise."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        self._last = -every
        self._shown = False

    def show(self, p: Progress) -> None:
        eta = f"  ETA {_duration(p.eta_seconds)}" if p.eta_seconds and p.phase != "done" else ""
        text = (f"{p.export}: rows {p.rows_read:,}  sent {p.sent:,}  confirmed {p.confirmed:,}  "
                f"unchanged {p.unchanged:,}  rejected {p.rejected:,}  batches {p.batches:,}  "
                f"{p.rate:,.0f}/s  {_duration(p.elapsed)}{eta}")
        if self._tty:
            self._stream.write("\r\x1b[2K" + text)
            self._stream.flush()
            self._shown = True
        elif p.elapsed - self._last >= self._every or p.phase == "done":
            self._last = p.elapsed
            self._stream.write(text + "\n")
            self._stream.flush()

    def finish(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def print_summary(report: RunReport, out: TextIO) -> None:
    counts = report.counts
    out.write(f"\nexport {report.export} — run {report.run_id}: {report.status.upper()}"
              f" in {report.duration_seconds or 0:.1f}s\n")
    if report.skip_reason:
        out.write(f"  skipped: {report.skip_reason}\n")
    rows = [("rows read", counts.get("rowsRead", 0)), ("sent", counts.get("sent", 0)),
            ("confirmed by ActiveCampaign", counts.get("confirmed", 0)), ("unchanged (not sent)", counts.get("unchanged", 0)),
            ("unsubscribed (mirror)", counts.get("unsubscribed", 0)), ("re-subscribed", counts.get("resubscribed", 0)),
            ("opted out (held back)", counts.get("optedOut", 0)),
            ("would send (dry run)", counts.get("wouldSend", 0)), ("rejected", sum(report.rejected.values()))]
    for label, value in rows:
        if value or label in ("rows read", "rejected"):
            out.write(f"  {label:<30}{value:>12,}\n")
    for reason, value in sorted(report.rejected.items()):
        out.write(f"    {reason:<28}{value:>12,}\n")
    if report.requests:
        out.write(f"  requests {report.requests.get('requests', 0):,}, retries {report.requests.get('retries', 0):,}"
                  f", refusals {report.requests.get('refusals', {})}\n")
    out.writelines(f"  {note}\n" for note in report.notes)
    out.writelines(f"  ! {error}\n" for error in report.errors)
    out.write(f"  report: exporter-runs/{report.export}/{report.run_id}/report.json\n")
    if report.rejected_rows_blob:
        out.write(f"  rejected rows: {report.rejected_rows_blob}\n")


# --- status -------------------------------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    app = AppSettings.from_env()
    store = ReportStore(blob_service(app.app_storage))
    if args.export:
        names = [args.export]
    else:
        names = [e.name for e in app.load_exports(args.config).exports]
    for name in names:
        runs = store.latest(name, args.limit)
        print(f"{name}:")
        if not runs:
            print("  no runs yet")
        for r in runs:
            c = r.counts
            print(f"  {r.run_id}  {r.status:<9} {r.trigger:<8} read {c.get('rowsRead', 0):>9,}  "
                  f"sent {c.get('sent', 0):>9,}  unchanged {c.get('unchanged', 0):>9,}  "
                  f"rejected {sum(r.rejected.values()):>7,}  {r.duration_seconds or 0:>7.1f}s"
                  + (f"  {r.errors[0]}" if r.errors else ""))
    return 0


# --- validate -----------------------------------------------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    app = AppSettings.from_env()
    config = app.load_exports(args.config)
    worst = 0
    for export in _selected(config, args.export):
        print(f"{export.name}:")
        worst = max(worst, validate_export(export, app, sys.stdout))
    return worst


def validate_export(export: ExportConfig, app: AppSettings, out: TextIO) -> int:
    """The "Connect" step: config, source and destination checked; nothing sent. Returns an exit code."""
    def ok(text: str) -> None:
        out.write(f"  ok    {text}\n")

    try:
        skip = export.skip_reason()
        if skip:
            out.write(f"  note  will be skipped: {skip}\n")
        source = check_source(export, app).source
        ok(f"source {export.source.container}/{source.path}: entity {source.entity}, "
           f"{len(source.partitions)} partition(s), {len(source.columns)} columns")
        ok("mapping: every mapped column is in model.json")
        out.write(f"  note  {export.automations_summary()}\n")
        client, found = connect_destination(export, app)
        client.close()
        ok(f"ActiveCampaign {export.destination.hostname}: key accepted, list {export.destination.list_id} "
           f"({found.get('name', '?')}) exists")
    except ExporterError as exc:
        out.write(f"  FAIL  {exc}\n")
        return exc.exit_code
    return 0
