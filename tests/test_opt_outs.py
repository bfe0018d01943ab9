"""Opt-outs are final: people who unsubscribed themselves (or were unsubscribed by anyone but this export) are
never subscribed again, end to end (Azurite + ActiveCampaign emulator) and in the rule that decides it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from exporter.run.opt_outs import APPLIED_BEFORE_CONFIRMED_SECONDS, CLOCK_SKEW_SECONDS, unsubscribed_by_this_export_last
from tests.helpers import LIST_ID, export_config, rejected_rows, run
from tests.test_incremental import changed_between, export_v


def opted_out(report) -> set[str]:
    return {row["email"] for row in rejected_rows(report) if row["reason"] == "opted_out"}


@pytest.mark.parametrize("full", [False, True])
def test_own_unsubscribes_stay_and_only_this_exports_own_unsubscribe_is_undone(app_env, emulator, container,
                                                                              unique_name, full):
    v1 = export_v(container, 1)
    export = export_config(unique_name[:40].rstrip("-"), emulator.hostname, container.container_name, v1.path,
                           removeMissing=True)
    assert run(export).status == "completed"

    v2 = export_v(container, 2, modify=0.05, drop=0.05)
    leavers = sorted(set(v1.expected) - set(v2.expected))
    changed = sorted(changed_between(v1.expected, v2.expected) & set(v1.expected))
    x = changed[0]  # unsubscribes themselves while still in the segment, and their data changes
    y, z = leavers[:2]  # y unsubscribes themselves, then leaves; z just leaves (the exporter unsubscribes z)
    emulator.unsubscribe(x, LIST_ID, own=True)
    emulator.unsubscribe(y, LIST_ID, own=True)
    emulator.reset_log()
    second = run(export, full_refresh=full)
    assert second.status == "completed", second.errors
    assert opted_out(second) == {x}  # held back: not sent, not subscribed
    assert second.counts["optedOut"] == 1
    sent = {e.lower() for r in emulator.bulk_import_requests(accepted_only=True) for e in r["emails"]}
    assert x not in sent and z in sent  # z's unsubscribe went out; nothing of x did
    assert emulator.list_status(z, LIST_ID) == 2

    export_v(container, 3)  # all three are in the next export
    emulator.reset_log()
    third = run(export, full_refresh=full)
    assert third.status == "completed", third.errors
    assert emulator.list_status(x, LIST_ID) == 2
    assert emulator.list_status(y, LIST_ID) == 2
    assert emulator.list_status(z, LIST_ID) == 1
    assert y in opted_out(third) and z not in opted_out(third)
    assert third.counts["resubscribed"] == len(leavers) - 1  # every leaver but y
    resubscribed = [r for r in emulator.requests if r["method"] == "POST" and r["path"].endswith("/contactLists")]
    assert len(resubscribed) == len(leavers) - 1
    if full:  # every contact is sent again: x is held back once more
        assert x in opted_out(third)


def membership(udate: datetime | None, **details: str) -> dict[str, str | None]:
    return {"list": "3", "status": "2", "udate": udate.isoformat() if udate else None, "unsubreason": "",
            "campaign": "0", "message": "0", **details}


CONFIRMED = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
AT = int(CONFIRMED.timestamp())


def test_this_exports_own_unsubscribe_is_recognised_in_any_time_zone():
    applied = (CONFIRMED - timedelta(seconds=30)).astimezone(timezone(timedelta(hours=-5)))  # the account's zone
    assert unsubscribed_by_this_export_last(membership(applied), AT)


@pytest.mark.parametrize("case, entry, at", [
    ("a person's own unsubscribe: reason", membership(CONFIRMED, unsubreason="too many emails"), AT),
    ("a person's own unsubscribe: campaign link", membership(CONFIRMED, campaign="7", message="12"), AT),
    ("unsubscribed again after this export", membership(CONFIRMED + timedelta(seconds=CLOCK_SKEW_SECONDS + 60)),
     AT),
    ("unsubscribed by someone else before this export's no-op",
     membership(CONFIRMED - timedelta(seconds=APPLIED_BEFORE_CONFIRMED_SECONDS + 60)), AT),
    ("no date", membership(None), AT),
    ("a date without an offset", {**membership(None), "udate": "2026-12-02T12:00:00"}, AT),
    ("subscribed", {**membership(CONFIRMED), "status": "1"}, AT),
    ("not on the list", None, AT),
    ("when this export unsubscribed is unknown (older state)", membership(CONFIRMED), 0),
])
def test_when_in_doubt_nobody_is_subscribed_again(case, entry, at):
    assert not unsubscribed_by_this_export_last(entry, at), case
