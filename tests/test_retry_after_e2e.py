"""Retry-After end to end: a real export against the emulator, checked from the emulator's request log.

ActiveCampaign answers 429 (too many requests) and 503 (unavailable) with a Retry-After header. The exporter
must send nothing before that time has passed: not the refused request, and not any other request either, since
AC's limits count the whole account and the client's pacer holds back every thread after a refusal.
"""
from __future__ import annotations

from typing import Any

from devtools.sample_export import write_sample_export
from emulator.account import BULK_IMPORT_PATH
from exporter.settings import parse_exports_config
from tests.helpers import LIST_ID, export_dict, run

# Real seconds, far above the emulator's time-scaled default (17 ms) and the client's own backoff at these limits,
# so a client that ignores the header is seen retrying inside the window.
RETRY_AFTER = 1.0
# Requests other threads had already started when the refusal was answered may still arrive just after it; any
# request started after the client read the refusal must wait. This bounds how late such a request can arrive
# on a busy machine, and is far below the time in which a client ignoring the header sends several.
IN_FLIGHT_GRACE = 0.3
# Bulk imports a second for this export: slow enough that the batches queued behind the refused one would be sent
# during the window if nothing held them back, fast enough to keep the test short.
BULK_PER_SECOND = 20


def retried(log: list[dict[str, Any]], refusal: dict[str, Any]) -> dict[str, Any]:
    """The next request for the same thing as ``refusal`` (method, path, and for a bulk import its contacts)."""
    return next(entry for entry in log if entry["arrived"] > refusal["arrived"]
                and (entry["method"], entry["path"], entry["emails"]) == (refusal["method"], refusal["path"],
                                                                          refusal["emails"]))


def test_no_request_arrives_before_retry_after_has_passed(app_env, emulator, container, unique_name):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=4000,
                                 partitions=2, seed=21, with_stale_folder=False, bad_rows=False)
    emulator.faults.script(["429"], retry_after=RETRY_AFTER)  # the run's first request, whatever its route
    # The first bulk import, while the batches behind it wait for their turn on other threads.
    emulator.faults.script(["503"], path="bulk_import", retry_after=RETRY_AFTER)
    export = export_dict(unique_name, emulator.hostname, container.container_name, sample.path)
    export["destination"]["rateLimits"]["bulkImportsPerMinute"] = BULK_PER_SECOND * 60
    report = run(parse_exports_config({"exports": [export]}).exports[0])

    assert report.status == "completed", report.errors
    assert emulator.subscribers(LIST_ID) == set(sample.expected)  # the refusals cost no contacts
    log = emulator.requests
    refusals = [entry for entry in log if entry["fault"] is not None]
    assert [(entry["status"], entry["retryAfter"]) for entry in refusals] == [(429, RETRY_AFTER),
                                                                            (503, RETRY_AFTER)]
    assert refusals[1]["path"] == BULK_IMPORT_PATH and len(refusals[1]["emails"]) > 1
    problems = []
    for refusal in refusals:
        answered, until = refusal["time"], refusal["time"] + refusal["retryAfter"]
        what = (f"the {refusal['status']} to {refusal['method']} {refusal['path']} "
                f"(Retry-After {refusal['retryAfter']} s)")
        retry = retried(log, refusal)
        if retry["arrived"] < until:
            problems.append(f"{what} was retried {retry['arrived'] - answered:.3f} s after it")
        early = [(entry["method"], entry["path"], round(entry["arrived"] - answered, 3)) for entry in log
                 if answered + IN_FLIGHT_GRACE < entry["arrived"] < until]
        if early:
            problems.append(f"{len(early)} requests arrived inside the window of {what}; the first few as "
                            f"(method, path, seconds after it): {early[:5]}")
    assert not problems, "\n".join(problems)
    # The 503's window was not empty for want of work: the other batches were all sent after it.
    assert sum(entry["path"] == BULK_IMPORT_PATH and entry["arrived"] > refusals[1]["time"] for entry in log) >= 15
    assert report.duration_seconds >= 2 * RETRY_AFTER  # the run's report shows the time the refusals cost
