"""Incremental sync, mirror mode and resume, end to end (Azurite + ActiveCampaign emulator over HTTP)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from azure.storage.blob import BlobServiceClient

from devtools.sample_export import write_sample_export
from exporter.mapping import email_key
from exporter.settings import STATE_CONTAINER
from exporter.state import StateStore
from tests.helpers import LIST_ID, export_config, export_dict, rejected_rows, run

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def sent_emails(emulator) -> list[str]:
    """Emails in accepted bulk import requests, one entry per time sent."""
    return [e.lower() for r in emulator.bulk_import_requests(accepted_only=True) for e in r["emails"]]


def changed_between(before: dict, after: dict) -> set[str]:
    return {email for email, values in after.items() if before.get(email) != values}


def export_v(container, version: int, **changes):
    return write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=1500,
                               partitions=2, seed=21, with_stale_folder=False, bad_rows=False,
                               changes=changes or None, when=T0 + timedelta(hours=version))


def test_reruns_send_only_new_and_changed_contacts(app_env, emulator, container):
    v1 = export_v(container, 1)
    export = export_config("incr", emulator.hostname, container.container_name, v1.path)
    first = run(export)
    assert first.status == "completed" and first.counts["confirmed"] == len(v1.expected)

    v2 = export_v(container, 2, modify=0.05, drop=0.03, add=40)
    changed = changed_between(v1.expected, v2.expected)
    assert 40 < len(changed) < len(v2.expected) / 2
    emulator.reset_log()
    second = run(export)
    assert second.status == "completed", second.errors
    assert sorted(sent_emails(emulator)) == sorted(changed)
    assert second.counts["unchanged"] == len(v2.expected) - len(changed)
    for email in changed:
        assert emulator.contact(email)["firstName"] == (v2.expected[email]["FirstName"].strip() or None) \
            or not v2.expected[email]["FirstName"].strip()

    emulator.reset_log()
    third = run(export)
    assert third.status == "completed"
    assert emulator.bulk_import_requests() == []
    assert third.counts["sent"] == 0 and third.counts["unchanged"] == len(v2.expected)

    emulator.reset_log()
    full = run(export, full_refresh=True)
    assert sorted(sent_emails(emulator)) == sorted(v2.expected)
    assert full.counts["unchanged"] == 0


def test_contacts_ac_fails_at_import_are_reported_by_customer_id_and_sent_again(app_env, emulator, container):
    v1 = export_v(container, 1)
    failing = sorted(v1.expected)[3:5]
    emulator.fail_at_import(failing)
    export = export_config("ac-fails", emulator.hostname, container.container_name, v1.path)
    first = run(export)
    assert first.counts["confirmed"] == len(v1.expected) - 2
    assert first.rejected["rejected_by_activecampaign"] == 2
    reported = {row["email"]: row["CustomerId"] for row in rejected_rows(first)
                if row["reason"] == "rejected_by_activecampaign"}
    assert reported == {email: v1.expected[email]["CustomerId"] for email in failing}

    emulator.account.fail_emails = frozenset()
    emulator.reset_log()
    second = run(export)
    assert sorted(sent_emails(emulator)) == failing  # not in the sync state: sent again, and nothing else
    assert second.counts["confirmed"] == 2 and second.counts["unchanged"] == len(v1.expected) - 2


def test_contacts_on_the_exclusion_list_are_reported_as_excluded_and_kept_out_of_the_sync_state(
        app_env, emulator, container):
    v1 = export_v(container, 1)
    excluded = sorted(v1.expected)[7]
    failing = sorted(v1.expected)[9]
    emulator.exclude({excluded})
    emulator.fail_at_import({failing})
    export = export_config("excluded", emulator.hostname, container.container_name, v1.path)
    first = run(export)
    assert first.status == "completed", first.errors
    assert emulator.contact(excluded) is None and excluded not in emulator.subscribers(LIST_ID)
    reasons = {row["email"]: (row["reason"], row["CustomerId"]) for row in rejected_rows(first)
               if row["email"] in (excluded, failing)}
    assert reasons == {excluded: ("excluded_by_activecampaign", v1.expected[excluded]["CustomerId"]),
                       failing: ("rejected_by_activecampaign", v1.expected[failing]["CustomerId"])}
    assert first.rejected["excluded_by_activecampaign"] == 1 and first.rejected["rejected_by_activecampaign"] == 1
    assert first.counts["confirmed"] == len(v1.expected) - 2

    state = StateStore(BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])).load(
        "excluded", "check", read_only=True).state
    in_state = set(state.keys.tolist())
    assert email_key(excluded) not in in_state and email_key(failing) not in in_state
    assert len(state) == len(v1.expected) - 2

    emulator.reset_log()
    second = run(export)  # not confirmed, so sent again: still excluded, still reported as such
    assert sorted(sent_emails(emulator)) == sorted([excluded, failing])
    assert second.rejected["excluded_by_activecampaign"] == 1 and second.counts["confirmed"] == 0


def test_mirror_removes_leavers_only_and_brings_returners_back(app_env, emulator, container):
    v1 = export_v(container, 1)
    export = export_config("mirror", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    emulator.add_contact("someone.else@example.net", list_id=LIST_ID, status=1)

    v2 = export_v(container, 2, drop=0.05)
    leavers = set(v1.expected) - set(v2.expected)
    assert leavers
    second = run(export)
    assert second.status == "completed", second.errors
    assert second.counts["unsubscribed"] == len(leavers)
    for email in leavers:
        assert emulator.list_status(email, LIST_ID) == 2
    assert emulator.list_status("someone.else@example.net", LIST_ID) == 1
    assert emulator.subscribers(LIST_ID) == set(v2.expected) | {"someone.else@example.net"}

    export_v(container, 3)  # the leavers come back
    third = run(export)
    assert third.status == "completed", third.errors
    assert third.counts["resubscribed"] == len(leavers)
    for email in leavers:
        assert emulator.list_status(email, LIST_ID) == 1


def test_brake_stops_a_mass_removal_unless_forced(app_env, emulator, container):
    v1 = export_v(container, 1)
    export = export_config("brake", emulator.hostname, container.container_name, v1.path, removeMissing=True)
    assert run(export).status == "completed"
    v2 = export_v(container, 2, drop=0.5)  # a half-written export must not empty the list
    emulator.reset_log()
    blocked = run(export)
    assert blocked.status == "failed" and blocked.error_kind == "config"
    assert "maxRemovalShare" in " ".join(blocked.errors)
    assert len(blocked.errors) == 1  # said once, not once by the check and again by the run
    assert emulator.unsubscribed(LIST_ID) == set()  # nobody was taken off the list
    assert set(v1.expected) <= emulator.subscribers(LIST_ID)

    forced = run(export, force_removal=True)
    assert forced.status == "completed"
    assert emulator.subscribers(LIST_ID) == set(v2.expected)


def test_corrupt_state_means_a_full_run_with_a_clear_message(app_env, emulator, container):
    v1 = export_v(container, 1)
    export = export_config("corrupt", emulator.hostname, container.container_name, v1.path)
    assert run(export).status == "completed"
    state_blob = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"]) \
        .get_blob_client(STATE_CONTAINER, "corrupt/state.bin")
    state_blob.upload_blob(b"garbage, not a state file", overwrite=True)
    emulator.reset_log()
    report = run(export)
    assert report.status == "completed"
    assert any("unreadable" in e and "sends every contact" in e for e in report.errors)
    assert sorted(sent_emails(emulator)) == sorted(v1.expected)
    emulator.reset_log()
    again = run(export)  # the state was rebuilt: no crash loop, nothing resent
    assert again.status == "completed" and again.errors == [] and emulator.bulk_import_requests() == []


def test_killed_run_is_resumed_without_losing_or_resending_much(app_env, emulator, container, tmp_path):
    # 30,000 rows (120 batches): the bound, 5% above the export's size, is then 5 batches, the journal's
    # grouping plus what AC takes while a journal write is on its way. (With 10,000 rows it was a single batch,
    # which a loaded machine could miss.) 12 bulk requests/s: killed after 20, about 1.7 s in.
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=30000,
                                 partitions=4, seed=8, with_stale_folder=False, bad_rows=False)
    export = export_dict("resume", emulator.hostname, container.container_name, sample.path)
    export["destination"]["rateLimits"] = {"bulkImportsPerMinute": 720, "requestsPerSecond": 300}
    config = tmp_path / "exports.json"
    config.write_text(json.dumps({"exports": [export]}), encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                               env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(emulator.bulk_import_requests(accepted_only=True)) < 20:
            assert process.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    resumed = run(export_config("resume", emulator.hostname, container.container_name, sample.path,
                                destination=export["destination"]))
    assert resumed.status == "completed", resumed.errors
    assert resumed.resumed["inFlightBatches"] + resumed.resumed["confirmedBatches"] >= 1
    assert emulator.subscribers(LIST_ID) == set(sample.expected)
    total_sent = len(sent_emails(emulator))
    assert total_sent <= 1.05 * len(sample.expected), f"{total_sent} sent for {len(sample.expected)} contacts"
