"""The ActiveCampaign emulator against real HTTP (httpx): the AC behaviour the exporter relies on."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from emulator import Emulator

KEY = "emulator-test-key"
LIST = 3
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """AC's limits and delays 60x faster: 100 bulk imports per second, imports applied after 1/60 s."""
    with Emulator(KEY, lists={LIST: "Newsletter"}, time_scale=60).start() as server:
        yield server


@pytest.fixture
def free() -> Iterator[Emulator]:
    """No rate limits and imports applied at once: for tests about data, not pacing."""
    with Emulator(KEY, lists={LIST: "Newsletter", 4: "Other"}, enforce_limits=False, import_delay=0).start() as server:
        yield server


def client(server: Emulator, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=server.hostname + "/api/3", headers={"Api-Token": key}, timeout=10)


def contact(email: str, **extra: Any) -> dict[str, Any]:
    return {"email": email, "subscribe": [{"listid": LIST}], **extra}


def bulk(http: httpx.Client, contacts: list[dict[str, Any]], **body: Any) -> httpx.Response:
    return http.post("/import/bulk_import", content=orjson.dumps({"contacts": contacts, **body}),
                     headers={"Content-Type": "application/json"})


def wait_completed(http: httpx.Client, batch_id: str, deadline: float = 5.0) -> dict[str, Any]:
    """Poll import/info like the exporter does, until AC reports the batch completed."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        info = http.get("/import/info", params={"batchId": batch_id}).json()
        if info.get("status") == "completed":
            return info
        time.sleep(0.005)
    raise AssertionError(f"batch {batch_id} not completed within {deadline}s")


# --- auth, lists, routing ------------------------------------------------------------------------------------


def test_wrong_or_missing_api_key_is_403_on_every_api_route(free):
    for headers in ({"Api-Token": "wrong"}, {}):
        with httpx.Client(base_url=free.base_url, headers=headers) as http:
            for method, path in (("GET", "/lists/3"), ("GET", "/contacts"), ("POST", "/import/bulk_import"),
                                 ("GET", "/import/info?batchId=x"), ("GET", "/no/such/route")):
                response = http.request(method, path, content=b"{}")
                assert response.status_code == 403, (method, path)
                assert response.json() == {"message": "Forbidden"}
    assert free.bulk_import_requests(accepted_only=True) == []


def test_lists_exist_or_answer_404_with_acs_message(free):
    with client(free) as http:
        found = http.get("/lists/3")
        assert found.status_code == 200
        assert found.json()["list"]["id"] == "3" and found.json()["list"]["name"] == "Newsletter"
        missing = http.get("/lists/99")
        assert missing.status_code == 404
        assert missing.json() == {"message": "No Result found for _List with id 99"}

        created = http.post("/lists", json={"list": {"name": "Fresh", "stringid": "fresh"}})
        assert created.status_code == 201
        new_id = created.json()["list"]["id"]
        assert http.get(f"/lists/{new_id}").status_code == 200
        page = http.get("/lists", params={"limit": 2}).json()
        assert page["meta"]["total"] == "3" and len(page["lists"]) == 2
        assert http.post("/lists", json={"list": {}}).status_code == 422


def test_unknown_routes_answer_404_json(free):
    with client(free) as http:
        response = http.get("/nothing/here")
        assert response.status_code == 404 and "message" in response.json()
    assert httpx.get(free.hostname + "/elsewhere").status_code == 404


# --- bulk import ---------------------------------------------------------------------------------------------


def test_each_bulk_import_records_whether_it_excluded_automations(emu):
    with client(emu) as http:
        for body in ({"exclude_automations": True}, {"exclude_automations": False}, {}):
            assert bulk(http, [contact("a@example.com"), contact("b@example.com")], **body).status_code == 200
    assert [entry["excludeAutomations"] for entry in emu.bulk_import_requests()] == [True, False, False]


def test_customer_acct_name_is_stored_as_the_contacts_account(emu):
    with client(emu) as http:
        first = bulk(http, [contact("a@example.com", customer_acct_name=" Contoso "), contact("b@example.com")])
        wait_completed(http, first.json()["batchId"])
        again = bulk(http, [contact("a@example.com", customer_acct_name=""), contact("b@example.com")])
        wait_completed(http, again.json()["batchId"])
    assert emu.contact("a@example.com")["account"] == "Contoso"  # an empty name leaves it as it is
    assert emu.contact("b@example.com")["account"] == ""


def test_accepted_bulk_import_is_applied_asynchronously_with_fields_tags_and_subscription(emu):
    contacts = [
        contact("Ana.Lopez@Example.com", first_name="Ana", last_name="López", phone="+34 600 000 001",
                tags=["ci-vip", "spring"], fields=[{"id": 1, "value": "Sevilla"}, {"id": "2", "value": "Gold"}]),
        contact("bo@example.org", first_name="Bo"),
    ]
    with client(emu) as http:
        response = bulk(http, contacts, exclude_automations=False)
        assert response.status_code == 200
        body = response.json()
        assert body["success"] == 1 and body["queued_contacts"] == 2
        assert body["message"] == "Contact import queued" and len(body["batchId"]) == 36
        info = wait_completed(http, body["batchId"])
        assert info["failure"] == [] and len(info["success"]) == 2
        assert all(isinstance(contact_id, str) for contact_id in info["success"])
        assert http.get("/import/info", params={"batchId": "no-such-batch"}).status_code == 404

    ana = emu.contact("ANA.LOPEZ@example.com")
    assert ana is not None and ana["id"] in info["success"]
    assert (ana["email"], ana["firstName"], ana["lastName"], ana["phone"]) == (
        "ana.lopez@example.com", "Ana", "López", "+34 600 000 001")
    assert ana["fields"] == {"1": "Sevilla", "2": "Gold"}
    assert sorted(ana["tags"]) == ["ci-vip", "spring"]
    assert emu.subscribers(LIST) == {"ana.lopez@example.com", "bo@example.org"}
    assert emu.list_status("bo@example.org", LIST) == 1
    [logged] = emu.bulk_import_requests(accepted_only=True)
    assert logged["contacts"] == 2 and logged["emails"] == ["ana.lopez@example.com", "bo@example.org"]


def test_import_info_moves_from_false_to_waiting_to_completed():
    # import_delay 5 s at 10x: "false" for 0.1 s, then "waiting" until 0.5 s, then "completed". The emulator runs
    # on a hand-driven clock, so each phase is checked at a known time however slow the machine is.
    now = [1000.0]
    with Emulator(KEY, lists={LIST: "N"}, time_scale=10, import_delay=5, requests_per_second=1000,
                  clock=lambda: now[0]).start() as server, client(server) as http:
        batch_id = bulk(http, [contact("slow@example.com")]).json()["batchId"]
        seen = {}
        for at in (0.0, 0.09, 0.11, 0.49, 0.51):
            now[0] = 1000.0 + at
            info = http.get("/import/info", params={"batchId": batch_id}).json()
            seen[at] = (info["status"], info.get("success"), server.contact("slow@example.com") is not None)
    assert seen[0.0] == (False, None, False) and seen[0.09] == (False, None, False)
    assert seen[0.11] == ("waiting", [], False) and seen[0.49] == ("waiting", [], False)
    assert seen[0.51][0] == "completed" and seen[0.51][2] is True


def test_a_second_import_updates_the_same_contact_case_insensitively(free):
    with client(free) as http:
        wait_completed(http, bulk(http, [contact("same@example.com", first_name="Old", tags=["a"],
                                                 fields=[{"id": 1, "value": "x"}])]).json()["batchId"])
        wait_completed(http, bulk(http, [contact("SAME@Example.com", last_name="New", tags=["b"],
                                                 fields=[{"id": 2, "value": "y"}])]).json()["batchId"])
    [only] = free.contacts()
    assert (only["firstName"], only["lastName"]) == ("Old", "New")
    assert only["fields"] == {"1": "x", "2": "y"} and sorted(only["tags"]) == ["a", "b"]


@pytest.mark.parametrize("bad_email", ["not-an-email", "a@b", "john@@example.com", "has space@example.com",
                                       "", "trailing.@example.com"])
def test_one_malformed_email_fails_the_whole_request_and_imports_nothing(free, bad_email):
    contacts = [contact("good1@example.com"), contact(bad_email), contact("good2@example.com")]
    with client(free) as http:
        response = bulk(http, contacts)
    assert response.status_code == 400
    assert response.json() == {"success": 0, "message": "Failed to import contacts.", "failureReasons": [
        {"contact": 1, "email": bad_email, "failureReason": "Invalid email address"}]}
    assert free.contacts() == []


def test_emails_ac_rejects_fail_the_batch_even_when_their_syntax_passes(free):
    free.reject_emails({"Refused@Example.com"})
    with client(free) as http:
        response = bulk(http, [contact("ok@example.com"), contact("refused@example.com")])
    assert response.status_code == 400
    assert [r["contact"] for r in response.json()["failureReasons"]] == [1]
    assert free.contacts() == []


def test_fail_at_import_contacts_are_reported_in_failure_and_not_created(free):
    free.fail_at_import({"late@example.com"})
    with client(free) as http:
        info = wait_completed(http, bulk(http, [contact("late@example.com"), contact("fine@example.com")])
                              .json()["batchId"])
    assert info["failure"] == ["late@example.com"] and len(info["success"]) == 1
    assert free.contact("late@example.com") is None and free.contact("fine@example.com") is not None


def test_excluded_contacts_are_skipped_and_reported_with_the_exclusion_reason(free):
    free.exclude({"Out@Example.com"})
    free.fail_at_import({"late@example.com"})
    with client(free) as http:
        info = wait_completed(http, bulk(http, [contact("out@example.com"), contact("late@example.com"),
                                                contact("fine@example.com")]).json()["batchId"])
    assert info["failure"] == ["out@example.com", "late@example.com"] and len(info["success"]) == 1
    assert info["failureReasons"] == [
        {"email": "out@example.com", "failureReason": "Row skipped - It is on exclusion list"},
        {"email": "late@example.com", "failureReason": "Row skipped - Contact could not be imported"}]
    assert free.contact("out@example.com") is None and free.subscribers(LIST) == {"fine@example.com"}


def test_size_limits_refuse_the_request_whole(free):
    with client(free) as http:
        too_many = bulk(http, [contact(f"c{i}@example.com") for i in range(251)])
        assert too_many.status_code == 400 and "250" in too_many.json()["message"]
        padding = "x" * 1700
        too_big = bulk(http, [contact(f"b{i}@example.com", first_name=padding) for i in range(240)])
        assert too_big.status_code == 400 and "400000" in too_big.json()["message"]
        empty = bulk(http, [])
        assert empty.status_code == 400 and empty.json()["success"] == 0
        assert bulk(http, [contact(f"ok{i}@example.com") for i in range(250)]).status_code == 200
    assert len(free.contacts()) == 250


def test_a_list_that_does_not_exist_fails_the_request_naming_it(free):
    with client(free) as http:
        response = bulk(http, [{"email": "x@example.com", "subscribe": [{"listid": 77}]}])
    assert response.status_code == 400 and "77" in response.json()["message"]
    assert free.contacts() == []


# --- limits --------------------------------------------------------------------------------------------------


def test_bulk_rate_limit_answers_400_rate_limit_exceeded_without_retry_after():
    # 5 multi-contact and 2 single-contact imports per (scaled) minute of 10 s: the loops end well inside it.
    # The emulator's clock stands still, so the window cannot roll over on a slow machine.
    with Emulator(KEY, lists={LIST: "N"}, time_scale=6, bulk_per_minute=5, single_per_minute=2,
                  requests_per_second=1000, import_delay=0, clock=lambda: 1000.0).start() as server, \
            client(server) as http:
        statuses = []
        for i in range(10):
            response = bulk(http, [contact(f"m{i}a@example.com"), contact(f"m{i}b@example.com")])
            statuses.append(response.status_code)
            if response.status_code == 400:
                break
        assert statuses == [200] * 5 + [400]
        assert response.json() == {"success": 0, "message": "Rate limit exceeded.", "failureReasons": []}
        assert "Retry-After" not in response.headers
        # Single-contact requests have their own, smaller budget.
        singles = [bulk(http, [contact(f"s{i}@example.com")]).status_code for i in range(3)]
        assert singles == [200, 200, 400]
        assert len(server.contacts()) == 5 * 2 + 2  # refused requests imported nothing
        peaks = server.stats()["peaks"]
        assert peaks["bulkImportsPerMinute"] == 5 and peaks["singleImportsPerMinute"] == 2
        assert server.stats()["bulkImports"]["refused"] == 2
        server.reset_log()
        assert server.requests == [] and server.stats()["bulkImports"]["accepted"] == 0


def test_general_limit_answers_429_with_integer_retry_after_at_real_time():
    with Emulator(KEY, lists={LIST: "N"}, requests_per_second=3, clock=lambda: 1000.0).start() as server, \
            client(server) as http:
        statuses = [http.get("/lists/3") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[-1].json() == {"message": "Too Many Requests"}
    assert statuses[-1].headers["Retry-After"] == "1"


def test_general_limit_retry_after_is_scaled_and_fractional():
    # 2 requests per 0.25 s window.
    now = [1000.0]
    with Emulator(KEY, lists={LIST: "N"}, requests_per_second=2, time_scale=4, clock=lambda: now[0]).start() \
            as server, client(server) as http:
        assert [http.get("/lists/3").status_code for _ in range(2)] == [200, 200]
        now[0] += 0.1
        response = http.get("/lists/3")
        assert response.status_code == 429
        retry_after = response.headers["Retry-After"]
        assert "." in retry_after and abs(float(retry_after) - 0.15) < 0.011


def test_short_scaled_windows_are_stretched_keeping_the_average_rate():
    windows = Emulator(time_scale=60).stats()["windows"]
    assert windows["requestsPerSecond"] == {"limit": 75, "seconds": 0.25}  # 5/s at 60x = 300/s
    assert windows["bulkImportsPerMinute"] == {"limit": 100, "seconds": 1.0}
    assert Emulator(time_scale=1).stats()["windows"]["requestsPerSecond"] == {"limit": 5, "seconds": 1.0}


def test_latency_is_added_to_api_requests():
    with Emulator(KEY, latency=0.2, enforce_limits=False).start() as server, client(server) as http:
        started = time.monotonic()
        assert http.get("/lists/1").status_code == 200
        assert time.monotonic() - started >= 0.2


# --- faults --------------------------------------------------------------------------------------------------


def test_scripted_faults_answer_in_order_without_side_effects(free):
    free.faults.script(["429", "503", "500", "ratelimit400", "drop"], path="bulk_import")
    payload = [contact("faulty@example.com")]
    with client(free) as http:
        assert http.get("/lists/3").status_code == 200  # other routes are not scripted
        first, second, third, fourth = (bulk(http, payload) for _ in range(4))
        with pytest.raises(httpx.TransportError):
            bulk(http, payload)  # dropped: connection closed, no response
        assert free.contacts() == []
        final = bulk(http, payload)

    assert (first.status_code, first.json()) == (429, {"message": "Too Many Requests"})
    assert first.headers["Retry-After"] and second.headers["Retry-After"]
    assert second.status_code == 503 and third.status_code == 500
    assert fourth.status_code == 400 and fourth.json()["message"] == "Rate limit exceeded."
    assert final.status_code == 200 and free.contact("faulty@example.com") is not None
    log = free.bulk_import_requests()
    assert [entry["fault"] for entry in log] == ["429", "503", "500", "ratelimit400", "drop", None]
    assert [entry["status"] for entry in log] == [429, 503, 500, 400, 0, 200]
    assert all(entry["emails"] == ["faulty@example.com"] for entry in log)


def test_random_faults_hit_only_the_chosen_paths_and_can_be_cleared(free):
    free.faults.set(rate_503=1.0, paths=("bulk_import",))
    with client(free) as http:
        assert http.get("/lists/3").status_code == 200
        refused = bulk(http, [contact("r@example.com")])
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        free.faults.set()
        assert bulk(http, [contact("r@example.com")]).status_code == 200
    with pytest.raises(ValueError):
        free.faults.script(["teapot"])


def test_scripted_429_and_503_can_name_their_retry_after_once(emu):
    emu.faults.script(["429"], retry_after=1.5)  # any route
    emu.faults.script(["503"], path="bulk_import", retry_after=2)
    with client(emu) as http:
        refused = http.get("/lists/3")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1.5"
        assert http.get("/lists/3").status_code == 200  # once
        unavailable = bulk(http, [contact("later@example.com")])
        assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "2"
        emu.faults.script(["503"])
        default = http.get("/lists/3")
        assert default.status_code == 503 and float(default.headers["Retry-After"]) == round(1 / 60, 3)
        assert bulk(http, [contact("later@example.com")]).status_code == 200
        # Over HTTP, as a test in another process would steer it.
        assert httpx.post(emu.hostname + "/__emulator/faults",
                          json={"script": ["429"], "script_path": "lists", "retry_after": 0.25}).status_code == 200
        assert http.get("/lists/3").headers["Retry-After"] == "0.25"
    # The log says what each reply's Retry-After asked for, so a test can check the client's wait.
    assert [(e["status"], e["fault"], e["retryAfter"]) for e in emu.requests] == [
        (429, "429", 1.5), (200, None, None), (503, "503", 2.0), (503, "503", 0.017), (200, None, None),
        (429, "429", 0.25)]
    with pytest.raises(ValueError):
        emu.faults.script(["500"], retry_after=1)  # a 500 has no Retry-After
    with pytest.raises(ValueError):
        emu.faults.script(["429"], retry_after=0)


def test_retry_after_is_whole_seconds_at_real_time():
    with Emulator(KEY, lists={LIST: "N"}).start() as server, client(server) as http:
        server.faults.script(["429"], retry_after=1.2)
        assert http.get("/lists/3").headers["Retry-After"] == "2"


# --- list membership -----------------------------------------------------------------------------------------


def test_bulk_import_never_resubscribes_but_contact_lists_does(free):
    free.add_contact("gone@example.com", LIST, status=2, firstName="Gone")
    seeded = free.add_contact("other@example.com", 4, first_name="Ot", fields={1: "Rome"}, tags=["seed"])
    assert (seeded["firstName"], seeded["fields"], seeded["tags"], seeded["lists"]) == ("Ot", {"1": "Rome"},
                                                                                      ["seed"], {4: 1})
    with pytest.raises(TypeError):
        free.add_contact("typo@example.com", nickname="x")
    with client(free) as http:
        wait_completed(http, bulk(http, [contact("gone@example.com", last_name="Still"),
                                         contact("other@example.com")]).json()["batchId"])
        assert free.list_status("gone@example.com", LIST) == 2
        assert free.contact("gone@example.com")["lastName"] == "Still"  # data is still updated
        assert free.subscribers(LIST) == {"other@example.com"} and free.list_status("other@example.com", 4) == 1

        contact_id = free.contact("gone@example.com")["id"]
        response = http.post("/contactLists", json={"contactList": {"list": LIST, "contact": int(contact_id),
                                                                    "status": 1}})
        assert response.status_code == 200 and response.json()["contactList"]["status"] == "1"
        assert free.list_status("gone@example.com", LIST) == 1

        assert http.post("/contactLists", json={"contactList": {"list": LIST, "contact": 999999, "status": 1}}
                         ).status_code in (404, 422)
        assert http.post("/contactLists", json={"contactList": {"list": 99, "contact": int(contact_id),
                                                                "status": 1}}).status_code in (404, 422)


def test_bulk_import_unsubscribe_sets_status_2(free):
    free.add_contact("leaving@example.com", LIST)
    with client(free) as http:
        wait_completed(http, bulk(http, [{"email": "leaving@example.com",
                                          "unsubscribe": [{"listid": LIST}]}]).json()["batchId"])
    assert free.list_status("leaving@example.com", LIST) == 2
    assert free.subscribers(LIST) == set()


# --- contacts ------------------------------------------------------------------------------------------------


def test_contacts_paging_by_list_status_and_id(free):
    with client(free) as http:
        wait_completed(http, bulk(http, [contact(f"p{i:03d}@example.com") for i in range(230)]).json()["batchId"])
        free.add_contact("elsewhere@example.com", 4)
        free.unsubscribe("p007@example.com", LIST)

        seen, last_id = [], 0
        for _ in range(10):  # bounded: 229 subscribers in pages of 100
            page = http.get("/contacts", params={"listid": LIST, "status": 1, "limit": 500, "orders[id]": "ASC",
                                                 "id_greater": last_id}).json()
            if not page["contacts"]:
                break
            assert len(page["contacts"]) <= 100
            seen.extend(c["email"] for c in page["contacts"])
            last_id = int(page["contacts"][-1]["id"])
        assert seen == [f"p{i:03d}@example.com" for i in range(230) if i != 7]

        first = http.get("/contacts", params={"listid": LIST, "status": 1, "limit": 10}).json()
        assert first["meta"]["total"] == "229" and len(first["contacts"]) == 10
        offset = http.get("/contacts", params={"listid": LIST, "limit": 5, "offset": 225}).json()
        assert [c["email"] for c in offset["contacts"]] == [f"p{i}@example.com" for i in range(225, 230)]
        newest = http.get("/contacts", params={"orders[id]": "DESC", "limit": 1}).json()
        assert newest["contacts"][0]["email"] == "elsewhere@example.com" and newest["meta"]["total"] == "231"
        unsubscribed = http.get("/contacts", params={"listid": LIST, "status": 2}).json()
        assert [c["email"] for c in unsubscribed["contacts"]] == ["p007@example.com"]
        by_email = http.get("/contacts", params={"email": "P100@example.com"}).json()
        assert [c["email"] for c in by_email["contacts"]] == ["p100@example.com"]
        assert http.get("/contacts", params={"email": "nobody@example.com"}).json()["contacts"] == []


def test_contact_sync_creates_then_updates_and_get_contact_shows_it(free):
    with client(free) as http:
        body = {"contact": {"email": "Sync@Example.com", "firstName": "Sy", "lastName": "Nc",
                            "fieldValues": [{"field": "1", "value": "Oslo"}]}}
        created = http.post("/contact/sync", json=body)
        assert created.status_code == 201
        contact_id = created.json()["contact"]["id"]
        assert isinstance(contact_id, str) and created.json()["contact"]["email"] == "sync@example.com"
        body["contact"]["firstName"] = "Syn"
        updated = http.post("/contact/sync", json=body)
        assert updated.status_code == 200 and updated.json()["contact"]["id"] == contact_id
        assert http.post("/contact/sync", json={"contact": {"email": "nope"}}).status_code == 422

        shown = http.get(f"/contacts/{contact_id}").json()
        assert shown["contact"]["firstName"] == "Syn"
        assert shown["fieldValues"] == [{"contact": contact_id, "field": "1", "value": "Oslo"}]
        assert http.get("/contacts/424242").status_code == 404


# --- inspection over HTTP and the CLI ------------------------------------------------------------------------


def test_cli_prints_its_url_and_serves_api_and_controls_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--api-key", KEY, "--list", "3:Newsletter",
         "--time-scale", "60", "--no-limits", "--import-delay", "0"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = process.stdout.readline()
        assert line.startswith("emulator listening on http://127.0.0.1:")
        hostname = line.split()[-1]
        with httpx.Client(base_url=hostname, timeout=10) as http:
            assert http.get("/api/3/lists/3", headers={"Api-Token": KEY}).json()["list"]["name"] == "Newsletter"
            assert http.post("/__emulator/faults", json={"script": ["503"], "script_path": "bulk_import"}
                             ).status_code == 200
            body = orjson.dumps({"contacts": [contact("cli@example.com")]})
            headers = {"Api-Token": KEY, "Content-Type": "application/json"}
            assert http.post("/api/3/import/bulk_import", content=body, headers=headers).status_code == 503
            assert http.post("/api/3/import/bulk_import", content=body, headers=headers).status_code == 200

            seen = http.get("/__emulator/contact", params={"email": "CLI@example.com"}).json()["contact"]
            assert seen["email"] == "cli@example.com" and seen["lists"] == {"3": 1}
            stats = http.get("/__emulator/stats").json()
            assert stats["contacts"] == 1 and stats["subscribers"] == {"3": 1}
            assert stats["bulkImports"]["accepted"] == 1 and stats["bulkImports"]["refused"] == 1
            assert stats["bulkImports"]["contactsReceived"] == 1
            assert stats["requests"]["byStatus"] == {"200": 2, "503": 1}

            log = http.get("/__emulator/requests", params={"since": 1}).json()
            assert [entry["status"] for entry in log["requests"]] == [503, 200] and log["next"] == 3
            assert http.post("/__emulator/reset").status_code == 200
            assert http.get("/__emulator/stats").json()["contacts"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # exactly one line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
