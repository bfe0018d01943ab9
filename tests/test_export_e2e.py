"""The export pipeline end to end: Azurite (real SDK) → exporter → ActiveCampaign emulator (real HTTP)."""
from __future__ import annotations

import csv
import io
import json
import logging

import httpx
import pytest

import exporter.preflight
from devtools.sample_export import EMAIL as EMAIL_COLUMN
from devtools.sample_export import write_sample_export
from exporter.cli import main as cli_main
from tests.helpers import (
    API_KEY,
    LIST_ID,
    export_config,
    export_dict,
    rejected_rows,
    run,
)


def write_config(tmp_path, *exports) -> str:
    path = tmp_path / "exports.json"
    path.write_text(json.dumps({"exports": list(exports)}), encoding="utf-8")
    return str(path)


def test_export_with_faults_delivers_every_valid_contact_and_reports_every_bad_row(
        app_env, emulator, container, caplog):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=3000,
                                 partitions=3, seed=11, with_stale_folder=True, bad_rows=True)
    refused_by_ac = sorted(sample.expected)[17]  # our validator accepts it; AC refuses the whole batch over it
    emulator.reject_emails({refused_by_ac})
    # A Retry-After longer than the bulk imports' spacing, so a retry sent without waiting for it arrives early.
    emulator.faults.script(["429", "503"], path="bulk_import", retry_after=0.2)
    emulator.faults.script(["drop", "ratelimit400", "500"], path="bulk_import")
    emulator.faults.set(rate_429=0.05, rate_503=0.05, rate_drop=0.03, paths=("bulk_import",))

    with caplog.at_level(logging.DEBUG):
        report = run(export_config("vip", emulator.hostname, container.container_name, sample.path))

    assert report.status == "completed", report.errors
    # the report says how much of the peak is the sync state (~50 bytes a contact here: arrays, email, seen key)
    assert 20 * len(sample.expected) / 2**20 < report.state_memory_mb < 100 * len(sample.expected) / 2**20
    expected = {email: values for email, values in sample.expected.items() if email != refused_by_ac}
    assert emulator.subscribers(LIST_ID) == set(expected)
    held = {contact["email"]: contact for contact in emulator.contacts()}
    for email, values in expected.items():
        # What AC holds is exactly what the row says (trimmed); the sample has no blank names, so a contact
        # whose names were lost or left blank fails here.
        assert values["FirstName"].strip() and values["LastName"].strip() and values["Phone"].strip()
        contact = held[email]
        assert (contact["firstName"], contact["lastName"], contact["phone"]) == (
            values["FirstName"].strip(), values["LastName"].strip(), values["Phone"].strip()), email
        assert (contact["fields"], contact["tags"]) == ({"1": values["City"]}, ["ci-vip"]), email
    assert sample.stale_emails and not held.keys() & {e.lower() for e in sample.stale_emails}

    rows = rejected_rows(report)
    by_customer = {row["CustomerId"]: row["reason"] for row in rows}
    assert sample.rejected
    for customer_id, kind in sample.rejected:
        assert by_customer.get(customer_id) == kind, f"bad row {customer_id} ({kind}) not reported as such"
    assert [row["reason"] for row in rows if row["email"].lower() == refused_by_ac] == ["rejected_by_activecampaign"]
    assert len(rows) == len(sample.rejected) + 1  # and nothing else
    counts = report.counts
    assert counts["rowsRead"] == sample.total_rows
    assert counts["confirmed"] == len(expected)
    assert counts["confirmed"] + sum(report.rejected.values()) == sample.total_rows

    # Each fault was met, and each refused bulk import was sent again with the same contacts; after a 429 or
    # 503, not before its Retry-After had passed.
    bulk = emulator.bulk_import_requests()
    faults = [entry for entry in bulk if entry["fault"] is not None]
    assert [entry["fault"] for entry in faults[:5]] == ["429", "503", "drop", "ratelimit400", "500"]
    for refusal in faults:
        retry = next((entry for entry in bulk if entry["arrived"] > refusal["arrived"]
                      and entry["emails"] == refusal["emails"]), None)
        assert retry is not None, f"a bulk import refused with {refusal['fault']} was never sent again"
        if refusal["fault"] in ("429", "503"):
            waited = retry["arrived"] - refusal["time"]
            assert waited >= refusal["retryAfter"], \
                f"a bulk import refused with {refusal['fault']}, Retry-After {refusal['retryAfter']} s, " \
                f"was sent again {waited:.3f} s later"

    assert API_KEY not in caplog.text
    for email in list(expected)[:50]:
        assert email not in caplog.text


def test_a_partition_exported_twice_is_reported_as_duplicates(app_env, emulator, container):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=8000,
                                 partitions=2, seed=9, with_stale_folder=False, bad_rows=False)
    first, second = sample.partitions
    first_csv = container.download_blob(first).readall()
    container.get_blob_client(second).upload_blob(first_csv, overwrite=True)
    in_first = {row[EMAIL_COLUMN].strip().lower() for row in csv.reader(io.StringIO(first_csv.decode("utf-8")))}
    expected = {email for email in sample.expected if email in in_first}  # the first partition's valid emails
    report = run(export_config("twice", emulator.hostname, container.container_name, sample.path))
    assert report.status == "completed", report.errors
    counts = report.counts
    # The second half of the rows fills whole diff chunks with nothing but repeats (this once crashed the run).
    assert emulator.subscribers(LIST_ID) == expected
    assert counts["confirmed"] == len(expected) and 0 < len(expected) < 4000
    # Every row after the first with its email is a duplicate: the whole second partition, and the first's repeats.
    assert report.rejected == {"duplicate_email": 8000 - len(expected)}
    assert counts["rowsRead"] == 8000


def test_non_ascii_and_quoted_values_arrive_exactly(app_env, emulator, container):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=400,
                                 partitions=2, seed=3, with_stale_folder=False, bad_rows=False)
    report = run(export_config("vip", emulator.hostname, container.container_name, sample.path))
    assert report.status == "completed"
    non_ascii = {e: v for e, v in sample.expected.items() if not (v["FirstName"] + v["LastName"]).isascii()}
    assert non_ascii, "the sample should contain non-ASCII names"
    for email, values in non_ascii.items():
        contact = emulator.contact(email)
        assert contact["firstName"] == values["FirstName"].strip()
        assert contact["lastName"] == values["LastName"].strip()
    with_comma = [e for e, v in sample.expected.items() if "," in v["City"] or "\n" in v["City"]]
    assert with_comma, "the sample should contain cities with a comma"
    for email in with_comma:
        assert emulator.contact(email)["fields"]["1"] == sample.expected[email]["City"]


def test_dry_run_reads_and_reports_without_sending(app_env, emulator, container):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=500,
                                 partitions=2, seed=5)
    report = run(export_config("vip", emulator.hostname, container.container_name, sample.path), dry_run=True)
    assert report.status == "completed"
    assert report.counts["wouldSend"] == len(sample.expected)
    assert emulator.requests == [] and emulator.contacts() == []  # "without sending anything": not one request


@pytest.mark.parametrize("case, overrides, message", [
    ("wrong list id", {"destination": {"listId": "999"}}, "list 999 does not exist"),
    ("bad api key", {"destination": {"apiKeySecretName": "other-key"}}, "refused the API key"),
    ("column not in model.json", {"mapping": {"email": "PrimaryEmail", "firstName": "GivenName"}}, "'GivenName'"),
    ("hostname with a path", {"destination": {"hostname": "https://youraccount.api-us1.com/api/3"}}, "remove the path"),
    ("missing container", {"source": {"container": "no-such-container", "path": "CustomerInsights_1/vip"}},
     "no-such-container"),
    ("unknown key", {"mapping": {"email": "PrimaryEmail", "fistName": "FirstName"}}, "unknown key 'fistName'"),
])
def test_bad_input_exits_2_with_a_clear_message_and_sends_nothing(
        case, overrides, message, app_env, emulator, container, tmp_path, monkeypatch, capsys):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=50,
                                 partitions=1, seed=1)
    monkeypatch.setenv("OTHER_KEY", "wrong-key")
    export = export_dict("vip", emulator.hostname, container.container_name, sample.path)
    for key, value in overrides.items():
        export[key] = {**export[key], **value}
    code = cli_main(["run", "--config", write_config(tmp_path, export)])
    out = capsys.readouterr()
    assert code == 2, out
    assert message in out.out + out.err
    # At most the access check was made (a GET); nothing was written to AC.
    assert [r for r in emulator.requests if r["method"] != "GET"] == [] and emulator.contacts() == []
    assert "wrong-key" not in out.out + out.err and API_KEY not in out.out + out.err


@pytest.mark.parametrize("hostname", [
    "attacker.example.com", "127.1", "169.254.43518", "0x7f000001", "https://acme.api-us1.com@attacker.example.com",
    "acme.api-us1.com.attacker.example.com", "xn--cme-8cd.api-us1.com",
])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_destination_other_than_activecampaign_exits_2_and_sends_nothing(
        command, hostname, app_env, emulator, container, tmp_path, monkeypatch, capsys):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=10,
                                 partitions=1, seed=1)
    sent: list[httpx.Request] = []

    def record(transport, request):  # every request httpx would send, to any host
        sent.append(request)
        raise httpx.ConnectError("blocked by the test", request=request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", record)
    monkeypatch.setattr(exporter.preflight, "get_api_key", lambda *a, **k: pytest.fail("the API key was read"))
    export = export_dict("vip", emulator.hostname, container.container_name, sample.path)
    export["destination"] = {**export["destination"], "hostname": hostname}
    code = cli_main([command, "--config", write_config(tmp_path, export)])
    out = capsys.readouterr()
    assert code == 2, out
    assert "destination.hostname (export 'vip')" in out.err
    assert "ALLOWED_DESTINATION_HOSTS" in out.err or "IP address" in out.err or "credentials" in out.err
    assert sent == [] and emulator.requests == [] and API_KEY not in out.out + out.err


def test_disabled_or_unconsented_exports_are_skipped_with_the_reason(app_env, emulator, container, tmp_path, capsys):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=20,
                                 partitions=1, seed=1)
    disabled = export_dict("off", emulator.hostname, container.container_name, sample.path, enabled=False)
    unconsented = export_dict("noconsent", emulator.hostname, container.container_name, sample.path,
                              privacyConsent=False)
    code = cli_main(["run", "--config", write_config(tmp_path, disabled, unconsented)])
    out = capsys.readouterr().out
    assert code == 0
    assert "disabled by an administrator" in out and "no data-privacy consent" in out
    assert emulator.requests == []  # skipped before anything is asked of AC


def test_validate_and_status_commands(app_env, emulator, container, tmp_path, capsys):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=100,
                                 partitions=1, seed=2)
    config = write_config(tmp_path, export_dict("vip-status", emulator.hostname, container.container_name,
                                                sample.path))
    assert cli_main(["validate", "--config", config]) == 0
    assert "key accepted, list 3" in capsys.readouterr().out
    validated = emulator.requests
    assert validated and all(r["method"] == "GET" for r in validated) and emulator.contacts() == []
    assert cli_main(["run", "--config", config]) == 0
    assert emulator.subscribers(LIST_ID) == set(sample.expected)
    capsys.readouterr()
    assert cli_main(["status", "--config", config]) == 0
    status = capsys.readouterr().out
    assert "vip-status:" in status and "completed" in status


@pytest.mark.parametrize("run_automations", [None, True, False])
def test_run_automations_decides_exclude_automations_on_every_bulk_import(
        run_automations, app_env, emulator, container, unique_name, tmp_path, capsys, caplog):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=600,
                                 partitions=2, seed=4, with_stale_folder=False, bad_rows=False)
    extra = {} if run_automations is None else {"runAutomations": run_automations}
    config = write_config(tmp_path, export_dict(unique_name[:63], emulator.hostname, container.container_name,
                                                sample.path, **extra))
    expected_note = ("automations: skipped for imported contacts (runAutomations false)" if run_automations is False
                     else "automations: run for imported contacts (runAutomations true)")

    assert cli_main(["validate", "--config", config]) == 0
    assert expected_note in capsys.readouterr().out
    with caplog.at_level(logging.INFO, logger="exporter"):
        assert cli_main(["run", "--config", config]) == 0
    assert expected_note in capsys.readouterr().out  # the first run (no sync state yet) says it
    assert expected_note in caplog.text
    bulk = emulator.bulk_import_requests(accepted_only=True)
    assert len(bulk) > 1 and emulator.subscribers(LIST_ID) == set(sample.expected)
    assert {entry["excludeAutomations"] for entry in bulk} == {run_automations is False}

    assert cli_main(["run", "--config", config, "--full"]) == 0  # not a first run: the state is stored
    assert "automations:" not in capsys.readouterr().out
    assert {entry["excludeAutomations"] for entry in emulator.bulk_import_requests()} == {run_automations is False}


def test_mapping_account_reaches_activecampaign_as_customer_acct_name(app_env, emulator, container):
    sample = write_sample_export(container, path="CustomerInsights_1/vip", entity="VipCustomers", rows=300,
                                 partitions=1, seed=6, with_stale_folder=False, bad_rows=False)
    mapping = {"email": "PrimaryEmail", "firstName": "FirstName", "account": "LoyaltyTier"}
    report = run(export_config("vip-accounts", emulator.hostname, container.container_name, sample.path,
                               mapping=mapping))
    assert report.status == "completed", report.errors
    with_account = {email for email, values in sample.expected.items() if values["LoyaltyTier"].strip()}
    assert with_account, "the sample should have rows with a value in the account column"
    for email, values in sample.expected.items():  # the emulator stores customer_acct_name as "account"
        assert emulator.contact(email)["account"] == values["LoyaltyTier"].strip(), email
