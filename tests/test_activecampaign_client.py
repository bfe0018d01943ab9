"""The ActiveCampaign client without a server: answers come from ``httpx.MockTransport``, time from a fake clock."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest

from exporter.activecampaign import (
    BODY_OVERHEAD,
    ActiveCampaignClient,
    Pacer,
    bad_contacts,
    encode_bulk_body,
    is_exclusion,
)
from exporter.errors import ConfigError, DestinationAccessError, TransientError
from exporter.settings import RateLimits

BASE = "https://acme.api-us1.com/api/3"
LIMITS = RateLimits()  # ActiveCampaign's own: 5 requests a second, 100 bulk imports a minute


class FakeTime:
    """A clock that moves only when someone sleeps; remembers every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def client_with(handler, time: FakeTime, **kwargs) -> ActiveCampaignClient:
    return ActiveCampaignClient(BASE, "secret-key", LIMITS, transport=httpx.MockTransport(handler),
                                clock=time.clock, sleep=time.sleep, wall_clock=time.clock, **kwargs)


class Recorder:
    """Answers with the next of ``answers`` (the last one repeats) and records (fake time, method, path)."""

    def __init__(self, time: FakeTime, *answers: httpx.Response) -> None:
        self.time = time
        self.answers = list(answers)
        self.seen: list[tuple[float, str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((self.time.now, request.method, request.url.path))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


LIST_OK = httpx.Response(200, json={"list": {"id": "3", "name": "VIP"}})


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_waited_before_the_retry(status):
    time = FakeTime()
    server = Recorder(time, httpx.Response(status, headers={"Retry-After": "7"}), LIST_OK)
    with client_with(server, time) as client:
        assert client.check_access(3)["name"] == "VIP"
        assert client.stats.refusals == {str(status): 1}
    (refused_at, *_), (retried_at, *_) = server.seen
    assert retried_at - refused_at >= 7.0
    assert client.stats.waited_seconds == 7.0


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_as_an_http_date_is_measured_against_the_answers_own_date(status):
    time = FakeTime()
    sent = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)  # far from the fake clock: only the difference counts
    headers = {"Date": format_datetime(sent, usegmt=True),
               "Retry-After": format_datetime(sent + timedelta(seconds=12), usegmt=True)}
    server = Recorder(time, httpx.Response(status, headers=headers), LIST_OK)
    with client_with(server, time) as client:
        client.check_access(3)
    assert server.seen[1][0] - server.seen[0][0] >= 12.0
    assert 12.0 in time.slept


def test_retry_after_as_an_http_date_without_a_date_header_is_measured_against_the_clock():
    time = FakeTime(start=datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC).timestamp())
    until = datetime(2026, 12, 2, 12, 0, 9, tzinfo=UTC)
    server = Recorder(time, httpx.Response(429, headers={"Retry-After": format_datetime(until, usegmt=True)}),
                      LIST_OK)
    with client_with(server, time) as client:
        client.check_access(3)
    assert server.seen[1][0] - server.seen[0][0] >= 9.0


def test_a_refusal_holds_back_every_request_that_shares_the_accounts_pacer():
    # While the refused request waits out its Retry-After, another thread asks for something else: it must not
    # reach ActiveCampaign inside the window either.
    time = FakeTime()
    answers = {"/api/3/lists/3": [httpx.Response(429, headers={"Retry-After": "7"}), LIST_OK],
               "/api/3/contacts": [httpx.Response(200, json={"contacts": [{"id": "42"}]})]}
    seen: list[tuple[float, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((time.now, request.url.path))
        queue = answers[request.url.path]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    others: list[str | None] = []

    def sleep(seconds: float) -> None:
        if not others:  # the refused request's wait: meanwhile another thread looks a contact up
            others.append(None)
            others[0] = client.find_contact_id("someone@example.com")
        time.sleep(seconds)

    client = ActiveCampaignClient(BASE, "secret-key", LIMITS, transport=httpx.MockTransport(handler),
                                  clock=time.clock, sleep=sleep, wall_clock=time.clock)
    with client:
        client.check_access(3)
    refused_at = seen[0][0]
    other_at = next(t for t, path in seen if path == "/api/3/contacts")
    assert others == ["42"]
    assert other_at >= refused_at + 7.0


def test_400_rate_limit_holds_the_bulk_pacer_and_the_import_is_retried():
    time = FakeTime()
    server = Recorder(time, httpx.Response(400, json={"success": 0, "message": "Rate limit exceeded.",
                                                      "failureReasons": []}),
                      httpx.Response(200, json={"batchId": "b-1", "queued_contacts": 2}))
    with client_with(server, time) as client:
        batch_id = client.bulk_import([b'{"email":"a@example.com"}', b'{"email":"b@example.com"}'],
                                      ["a@example.com", "b@example.com"])
        assert batch_id == "b-1"
        assert client.stats.refusals == {"400-rate-limit": 1}
        bulk_slot = client.pacers.bulk.interval
    assert server.seen[1][0] - server.seen[0][0] >= bulk_slot


def test_a_whole_batch_400_names_the_refused_contacts():
    time = FakeTime()
    server = Recorder(time, httpx.Response(400, json={"success": 0, "message": "Invalid contacts", "failureReasons": [
        {"contact": 1, "failureReason": "Invalid email address"}]}))
    with client_with(server, time) as client, pytest.raises(Exception) as raised:
        client.bulk_import([b"{}", b"{}"], ["a@example.com", "b@@example.com"])
    assert raised.value.bad == {1: "Invalid email address"}


def test_requests_carry_the_key_json_and_the_api_path():
    time = FakeTime()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"batchId": "b-9"})

    with client_with(handler, time) as client:
        client.bulk_import([b'{"email":"a@example.com"}'], ["a@example.com"])
    (request,) = requests
    assert str(request.url) == f"{BASE}/import/bulk_import"
    assert request.headers["Api-Token"] == "secret-key"
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == b'{"contacts":[{"email":"a@example.com"}],"exclude_automations":false}'


def test_a_bulk_import_can_exclude_automations_and_batching_leaves_room_for_either_body():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"success": 1, "batchId": "b-1"})

    with client_with(handler, FakeTime()) as client:
        client.bulk_import([b'{"email":"a@example.com"}'], ["a@example.com"], exclude_automations=True)
    assert requests[0].content == b'{"contacts":[{"email":"a@example.com"}],"exclude_automations":true}'
    for exclude in (False, True):
        assert len(encode_bulk_body([], exclude)) <= BODY_OVERHEAD
        body = encode_bulk_body([b'{"email":"a@example.com"}', b'{"email":"b@example.com"}'], exclude)
        assert orjson.loads(body)["exclude_automations"] is exclude


def test_a_refused_key_is_a_destination_error_that_does_not_show_the_key():
    time = FakeTime()
    client = client_with(Recorder(time, httpx.Response(403, json={"message": "Forbidden"})), time)
    with client, pytest.raises(DestinationAccessError) as raised:
        client.check_access(3)
    assert "secret-key" not in str(raised.value)
    assert "403" in str(raised.value)


def test_connection_failures_are_retried_then_reported_as_transient():
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with client_with(handler, time, max_attempts=3) as client:
        with pytest.raises(TransientError, match="after 3 attempts"):
            client.check_access(3)
        assert client.stats.refusals == {"connection": 3}
    assert len([s for s in time.slept if s > 0]) >= 3  # backed off after each failure


def test_a_retry_after_beyond_what_a_run_waits_stops_the_run():
    time = FakeTime()
    client = client_with(Recorder(time, httpx.Response(429, headers={"Retry-After": "86400"})), time)
    with client, pytest.raises(TransientError, match="asked to wait 86400 s"):
        client.check_access(3)


def test_import_info_answering_false_means_still_waiting():
    time = FakeTime()
    with client_with(Recorder(time, httpx.Response(200, content=b"false")), time) as client:
        assert client.import_info("b-1").status == "waiting"


def test_pacer_holds_a_thread_that_reserved_its_slot_before_the_hold():
    time = FakeTime(start=0.0)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        if not sleeps:  # another thread's Retry-After arrives while this one sleeps towards its slot
            pacer.hold_off(7.0)
        sleeps.append(seconds)
        time.sleep(seconds)

    pacer = Pacer(4.0, clock=time.clock, sleep=sleep)
    pacer.acquire()  # t=0
    pacer.acquire()  # reserves t=0.25, then sleeps towards it
    assert time.now >= 7.0


def test_pacer_spaces_requests_and_hold_off_delays_everyone():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.acquire()
    assert now[0] == 101.0  # 5 starts at 4/s: 0, .25, .5, .75, 1.0
    pacer.hold_off(3.0)
    pacer.acquire()
    assert now[0] == 104.0


def test_pacer_never_lets_late_threads_bunch_up():
    now = [0.0]
    pacer = Pacer(100.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    starts = []
    for _ in range(10):
        pacer.acquire()
        starts.append(now[0])
    now[0] += 5.0  # the process was starved: its slots are long past
    for _ in range(200):
        pacer.acquire()
        starts.append(now[0])
    for t in starts:  # any 0.25 s window holds at most 25 starts (100/s)
        assert sum(1 for u in starts if t <= u < t + 0.25) <= 25


def test_pacer_holds_the_servers_window_even_where_spacing_would_allow_more():
    # Threads held up by a CPU stall wake with their slots behind them, free to start back to back; the server's
    # own window (97 of AC's 100 a minute here) must still hold. Spacing at 10/s stands in for that catch-up.
    now = [0.0]
    pacer = Pacer(10.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                  window_limit=97, window_seconds=60.0)
    starts = []
    for _ in range(300):
        pacer.acquire()
        starts.append(now[0])
    for t in starts:
        assert sum(1 for u in starts if t <= u < t + 60.0 - 1e-9) <= 97
    assert starts[96] < 10 and starts[97] >= 60.0  # the first 97 go at 10/s, the 98th waits for the window


def test_whole_batch_400_reasons_map_to_contacts_by_index_or_email():
    emails = ["a@example.com", "b@example.com", "c@example.com"]
    data = {"failureReasons": [{"contact": 2, "failureReason": "Invalid email address"},
                               {"email": "A@example.com", "failureReason": "bad"}]}
    assert bad_contacts(data, emails) == {2: "Invalid email address", 0: "bad"}
    assert bad_contacts({"failureReasons": []}, emails) == {}




@pytest.mark.parametrize("proxy", ["ftp://user:hunter2@proxy.example:21", "socks5://user:hunter2@proxy.example:1080"])
def test_a_proxy_httpx_cannot_use_is_a_config_error_naming_the_fix(monkeypatch, proxy):
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(ConfigError, match="HTTPS_PROXY") as raised:
        ActiveCampaignClient(BASE, "secret-key", LIMITS)
    assert "hunter2" not in str(raised.value) and "NO_PROXY" in str(raised.value)



def test_import_info_carries_failure_reasons_when_the_answer_has_them():
    answers = [{"status": "completed", "success": ["1"], "failure": ["Out@Example.com", "late@example.com"],
                "failureReasons": [{"email": "Out@Example.com", "failureReason": "Row skipped - It is on exclusion list"},
                                   "not an object", {"email": "x@example.com"}]},
               {"status": "completed", "success": [], "failure": ["a@example.com"]}]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers.pop(0))

    with client_with(handler, FakeTime()) as client:
        with_reasons, without = client.import_info("b-1"), client.import_info("b-2")
    assert with_reasons.failure == ["out@example.com", "late@example.com"]
    assert with_reasons.failure_reasons == {"out@example.com": "Row skipped - It is on exclusion list"}
    assert without.failure == ["a@example.com"] and without.failure_reasons == {}
    assert is_exclusion("Row skipped - It is on exclusion list") and not is_exclusion("Invalid email address")
