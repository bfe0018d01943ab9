"""Resuming after a run that stopped: its journal's confirmations are folded into the sync state, and the
imports it had in flight are asked about before anything new is sent."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..activecampaign import ActiveCampaignClient, ImportStatus
from ..sink import PollTiming
from ..state import JournalReplay, SyncState

log = logging.getLogger(__name__)


def resume(state: SyncState, journal: JournalReplay, client: ActiveCampaignClient, timing: PollTiming,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Fold what the stopped run had confirmed into ``state``; returns what was resumed, for the report."""
    for rows in journal.confirmed:
        state.record(rows)
    confirmed_late = 0
    for batch_id, rows in journal.in_flight.items():
        status = wait_for_import(client, batch_id, timing, sleep)
        if status.status == "completed":
            state.record(rows.without_emails(set(status.failure)))
            confirmed_late += len(rows)
    return {
        "confirmedBatches": len(journal.confirmed),
        "confirmedContacts": sum(len(rows) for rows in journal.confirmed) + confirmed_late,
        "inFlightBatches": len(journal.in_flight), "inFlightConfirmed": confirmed_late,
    }


def wait_for_import(client: ActiveCampaignClient, batch_id: str, timing: PollTiming,
                    sleep: Callable[[float], None] = time.sleep) -> ImportStatus:
    """Poll one import until it has finished, is unknown, or the timing's timeout has passed."""
    deadline = time.monotonic() + timing.timeout
    delay = timing.first
    while True:
        status = client.import_info(batch_id)
        if status.finished or status.status == "unknown" or time.monotonic() > deadline:
            return status
        sleep(delay)
        delay = min(timing.cap, delay * 1.5)
