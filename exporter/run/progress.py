"""Progress of a running export, for whoever watches it (the CLI's progress line)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..activecampaign import MAX_CONTACTS_PER_REQUEST


@dataclass
class Progress:
    export: str
    rows_read: int = 0
    sent: int = 0
    confirmed: int = 0
    unchanged: int = 0
    rejected: int = 0
    batches: int = 0
    elapsed: float = 0.0
    rate: float = 0.0  # contacts confirmed per second
    eta_seconds: float | None = None
    phase: str = "reading"


class ProgressMeter:
    """Hands a Progress to ``show`` at most every ``interval`` seconds (always when forced)."""

    def __init__(self, export: str, show: Callable[[Progress], None] | None, interval: float,
                 bulk_imports_per_minute: float) -> None:
        self._export = export
        self._show = show
        self._interval = interval
        self._contacts_per_second = bulk_imports_per_minute * MAX_CONTACTS_PER_REQUEST / 60
        self._started = time.monotonic()
        self._last = 0.0

    def update(self, phase: str, counts: Mapping[str, int], rejected: int, force: bool = False) -> None:
        if self._show is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        elapsed = now - self._started
        confirmed = counts.get("confirmed", 0)
        pending = counts.get("sent", 0) - confirmed
        self._show(Progress(
            export=self._export, rows_read=counts.get("rowsRead", 0), sent=counts.get("sent", 0), confirmed=confirmed,
            unchanged=counts.get("unchanged", 0), rejected=rejected, batches=counts.get("batches", 0),
            elapsed=elapsed, rate=confirmed / elapsed if elapsed > 0 else 0.0,
            eta_seconds=pending / self._contacts_per_second if phase != "done" else 0.0, phase=phase))
