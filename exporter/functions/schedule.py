"""The schedule: every timer tick queues a run of every export that may run."""
from __future__ import annotations

import logging

import azure.functions as func

from .admission import StartResult, enqueue_all
from .clients import AppClients
from .log_setup import prepare_logging

log = logging.getLogger(__name__)


def run_schedule(timer: func.TimerRequest) -> list[StartResult]:
    """Queue every export that may run; a past-due tick (the app was stopped or busy) runs now."""
    prepare_logging()
    if timer.past_due:
        log.warning("the export schedule is past due (the app was stopped or busy at the scheduled time); "
                    "queueing the exports now")
    results = enqueue_all(AppClients.from_env(), "timer")
    log.info("schedule: %s", ", ".join(f"{r.export}={r.kind}" for r in results))
    return results
