"""What the caller of a run chooses: trigger, dry run, full refresh, forced removal, progress display."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..state import LEASE_SECONDS
from .progress import Progress


@dataclass
class RunOptions:
    trigger: str = "cli"
    dry_run: bool = False
    full_refresh: bool = False
    force_removal: bool = False
    run_id: str | None = None
    progress: Callable[[Progress], None] | None = None
    progress_interval: float = 0.5
    # How long to wait for another run's lock: by default long enough for a crashed run's lease to expire.
    lock_wait_seconds: float = LEASE_SECONDS + 5
