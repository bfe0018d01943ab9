"""The function app without a Functions host: the trigger index, and the handlers called directly with real
azure.functions request objects against Azurite (real storage SDKs) and the ActiveCampaign emulator (real HTTP)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import (
    QueueClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from devtools.azurite import free_port
from devtools.sample_export import write_sample_export
from exporter.errors import ConfigError
from exporter.functions.admission import enqueue_run
from exporter.functions.clients import AppClients
from exporter.functions.messages import RunRequest, StartOptions
from exporter.functions.queue_worker import MAX_ATTEMPTS, RetryableRunFailure
from exporter.report import ReportStore, RunReport, new_run_id
from exporter.settings import LOCAL_APP_SETTINGS, RUN_QUEUE
from exporter.state import StateStore
from tests.helpers import LIST_ID, TIME_SCALE, export_dict

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789abcdef"
HOST = "http://localhost:7071"
OTHER_HOST = "youraccount.api-us1.com"  # never contacted: runs that reach ActiveCampaign use the emulator


# --- the trigger index ------------------------------------------------------------------------------------------


_index_lock = threading.Lock()


@lru_cache(maxsize=1)
def _index() -> dict[str, Any]:
    from function_app import app

    return {f.get_function_name(): f for f in app.get_functions()}


def indexed_functions() -> dict[str, Any]:
    """``app.get_functions()`` may run once per process, as in the host's worker (tests call from threads)."""
    with _index_lock:
        return _index()


def handler(name: str):
    return indexed_functions()[name].get_user_function()


def trigger_of(name: str) -> dict[str, Any]:
    function = indexed_functions()[name]
    return json.loads(function.get_function_json())["bindings"][0]


def test_every_trigger_is_declared_as_the_host_needs_it():
    http = {name: trigger_of(name) for name in
            ("list_exports", "start_all_export_runs", "start_export_run", "get_export_run")}
    assert {name: (t["route"], t["methods"]) for name, t in http.items()} == {
        "list_exports": ("exports", ["GET"]),
        "start_all_export_runs": ("exports/runs", ["POST"]),
        "start_export_run": ("exports/{name}/runs", ["POST"]),
        "get_export_run": ("exports/{name}/runs/{runId}", ["GET"]),
    }
    for t in http.values():
        assert t["type"] == "httpTrigger" and t["authLevel"] == "FUNCTION"
        assert not t["route"].split("/")[0] in ("admin", "runtime")  # the host's reserved routes

    timer = trigger_of("scheduled_exports")
    assert (timer["type"], timer["schedule"], timer["runOnStartup"]) == ("timerTrigger", "%EXPORT_SCHEDULE%", False)

    run_queue, poison = trigger_of("run_queued_export"), trigger_of("record_failed_export_run")
    assert (run_queue["type"], run_queue["queueName"], run_queue["connection"]) == (
        "queueTrigger", RUN_QUEUE, "AzureWebJobsStorage")
    assert (poison["type"], poison["queueName"], poison["connection"]) == (
        "queueTrigger", f"{RUN_QUEUE}-poison", "AzureWebJobsStorage")

    blob = trigger_of("export_on_arrival")
    assert (blob["type"], blob["path"], blob["connection"], blob["source"]) == (
        "blobTrigger", "%CI_EXPORT_CONTAINER%/{name}", "CI_EXPORT_STORAGE", "EventGrid")
    assert len(indexed_functions()) == 8


def test_importing_the_app_reads_no_settings_and_touches_no_storage(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("AzureWebJobsStorage", "CI_EXPORT_STORAGE", "EXPORTS_CONFIG")}
    env |= {"EXPORTS_CONFIG": str(tmp_path / "missing.json"), "AzureWebJobsStorage": "not a connection string"}
    code = "import function_app; print(len(function_app.app.get_functions()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"


def test_host_json_suits_long_queued_runs():
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    hours, minutes, _ = map(int, host["functionTimeout"].split(":"))
    assert hours * 60 + minutes >= 90  # a 1M-contact run takes ~40 minutes at ActiveCampaign's limit
    queues = host["extensions"]["queues"]
    assert queues["batchSize"] == 1 and queues["newBatchThreshold"] == 0
    assert queues["maxDequeueCount"] == MAX_ATTEMPTS
    assert queues["messageEncoding"] == "base64"
    assert host["logging"]["logLevel"]["default"] in ("Warning", "Error")


def test_local_settings_sample_has_exactly_the_settings_the_app_reads():
    sample = json.loads((REPO / "local.settings.sample.json").read_text())
    assert sample["IsEncrypted"] is False
    assert set(sample["Values"]) == set(LOCAL_APP_SETTINGS) | {"ACTIVECAMPAIGN_API_KEY"}
    assert sample["Values"]["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert sample["Values"]["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert sample["Values"]["KEY_VAULT_URL"] == ""


def test_funcignore_keeps_development_files_out_of_the_package():
    ignored = {line.strip() for line in (REPO / ".funcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in ("tests/", "emulator/", "devtools/", "bench/", "infra/", "docs/", "node_modules/", ".venv/",
                  ".git*", "local.settings.json"):
        assert entry in ignored
    for needed in ("exporter/", "function_app.py", "host.json", "requirements.txt"):
        assert needed not in ignored


# --- fixtures ---------------------------------------------------------------------------------------------------


def start_emulator(**options: Any):
    from emulator import Emulator

    return Emulator(api_key=API_KEY, lists={LIST_ID: "VIP newsletter"}, time_scale=TIME_SCALE, **options).start()


@pytest.fixture
def emulator():
    server = start_emulator()
    yield server
    server.stop()


@pytest.fixture
def slow_import_emulator():
    """Imports take ~1.5 s to complete, so a run holds its export's lock at least that long."""
    server = start_emulator(import_delay=90)
    yield server
    server.stop()


@pytest.fixture
def storage(azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(storage, unique_name):
    client = storage.create_container(unique_name[:63].rstrip("-"))
    yield client
    client.delete_container()


@pytest.fixture
def run_queue(azurite, app_env) -> QueueClient:
    """The run queue, emptied: tests share one Azurite."""
    queue = QueueClient.from_connection_string(azurite.connection_string, RUN_QUEUE,
                                               message_encode_policy=TextBase64EncodePolicy(),
                                               message_decode_policy=TextBase64DecodePolicy())
    if not queue_exists(queue):
        queue.create_queue()
    queue.clear_messages()
    return queue


def queue_exists(queue: QueueClient) -> bool:
    try:
        queue.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


@pytest.fixture
def reports(storage) -> ReportStore:
    return ReportStore(storage)


def configure(monkeypatch, *exports: dict[str, Any]) -> None:
    monkeypatch.setenv("EXPORTS_CONFIG", json.dumps({"exports": list(exports)}))


def take_messages(queue: QueueClient) -> list[QueueMessage]:
    """Receive and delete what is visible, as the host does, handing back what the queue trigger would get."""
    messages = []
    for message in queue.receive_messages(messages_per_page=32, visibility_timeout=30):
        messages.append(QueueMessage(id=message.id, body=message.content, dequeue_count=message.dequeue_count,
                                     pop_receipt=message.pop_receipt))
        queue.delete_message(message)
    return messages


def message_count(queue: QueueClient) -> int:
    """Visible and delayed messages."""
    return queue.get_queue_properties().approximate_message_count


def http(method: str, route: str, route_params: dict[str, str] | None = None, body: bytes = b"") -> func.HttpRequest:
    return func.HttpRequest(method=method, url=f"{HOST}/api/{route}?code=secret-function-key",
                            route_params=route_params or {}, body=body, headers={})


def start(name: str, body: bytes = b"") -> func.HttpResponse:
    return handler("start_export_run")(http("POST", f"exports/{name}/runs", {"name": name}, body))


def status(name: str, run_id: str) -> func.HttpResponse:
    return handler("get_export_run")(http("GET", f"exports/{name}/runs/{run_id}", {"name": name, "runId": run_id}))


def body_of(response: func.HttpResponse) -> dict[str, Any]:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


def small_export(container, rows: int = 300, seed: int = 5, path: str = "CustomerInsights_1/vip"):
    return write_sample_export(container, path=path, entity="VipCustomers", rows=rows, partitions=2, seed=seed,
                               with_stale_folder=False, bad_rows=False)


# --- HTTP start → queue → run → status ----------------------------------------------------------------------------


def test_http_start_queues_a_run_that_the_queue_handler_completes(
        monkeypatch, emulator, container, run_queue, unique_name):
    sample = small_export(container)
    name = unique_name
    configure(monkeypatch, export_dict(name, emulator.hostname, container.container_name, sample.path))

    response = start(name, b'{"fullRefresh": true}')
    assert response.status_code == 202
    started = body_of(response)
    run_id = started["runId"]
    assert started["export"] == name and started["status"] == "queued" and started["fullRefresh"] is True
    assert started["statusUrl"] == f"{HOST}/api/exports/{name}/runs/{run_id}"  # the key in ?code= is not echoed
    assert response.headers["Location"] == started["statusUrl"]
    assert body_of(status(name, run_id))["status"] == "queued"

    # One run per export: a second start while the first is queued queues nothing.
    second = start(name)
    assert second.status_code == 409
    assert body_of(second)["activeRun"]["runId"] == run_id

    messages = take_messages(run_queue)
    assert [json.loads(m.get_body())["runId"] for m in messages] == [run_id]
    handler("run_queued_export")(messages[0])

    report = body_of(status(name, run_id))
    assert report["status"] == "completed", report["errors"]
    assert report["trigger"] == "http" and report["fullRefresh"] is True
    assert report["counts"]["confirmed"] == len(sample.expected)
    assert emulator.subscribers(LIST_ID) == set(sample.expected)

    listed = body_of(handler("list_exports")(http("GET", "exports")))["exports"]
    assert [(e["name"], e["canRun"], e["lastRun"]["runId"], e["lastRun"]["status"]) for e in listed] == [
        (name, True, run_id, "completed")]

    # The run is over: a new start is accepted again.
    assert start(name).status_code == 202


def test_concurrent_starts_of_one_export_queue_one_run(monkeypatch, container, run_queue, unique_name):
    configure(monkeypatch, export_dict(unique_name, OTHER_HOST, container.container_name, "ci/vip"))
    barrier = threading.Barrier(4)
    answers: list[int] = []

    def start_at_once() -> None:
        barrier.wait()
        answers.append(start(unique_name).status_code)

    threads = [threading.Thread(target=start_at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == [202, 409, 409, 409]
    assert message_count(run_queue) == 1


def test_start_answers_clear_errors_and_queues_nothing(monkeypatch, container, run_queue, unique_name):
    enabled = export_dict(unique_name, OTHER_HOST, container.container_name, "ci/a")
    disabled = export_dict(f"{unique_name}-off", OTHER_HOST, container.container_name, "ci/b", enabled=False)
    no_consent = export_dict(f"{unique_name}-nc", OTHER_HOST, container.container_name, "ci/c", privacyConsent=False)
    configure(monkeypatch, enabled, disabled, no_consent)

    unknown = start("nope")
    assert unknown.status_code == 404
    assert body_of(unknown)["exports"] == [unique_name, f"{unique_name}-off", f"{unique_name}-nc"]
    assert unique_name in body_of(unknown)["error"]

    for bad in (b"not json", b"[true]", b'{"fullrefresh": true}', b'{"fullRefresh": "yes"}'):
        answer = start(unique_name, bad)
        assert answer.status_code == 400, bad
        assert body_of(answer)["error"]
    assert "fullRefresh" in body_of(start(unique_name, b'{"fullrefresh": true}'))["error"]

    off = start(f"{unique_name}-off")
    assert off.status_code == 409 and "disabled" in body_of(off)["reason"]
    consent = start(f"{unique_name}-nc")
    assert consent.status_code == 409 and "consent" in body_of(consent)["reason"]

    assert status(unique_name, new_run_id()).status_code == 404
    assert status(unique_name, "../../etc").status_code == 404
    assert message_count(run_queue) == 0


def test_bad_settings_fail_the_request_with_a_message_naming_the_setting(monkeypatch, app_env):
    monkeypatch.delenv("EXPORTS_CONFIG", raising=False)
    answer = handler("list_exports")(http("GET", "exports"))
    assert answer.status_code == 500 and "EXPORTS_CONFIG" in body_of(answer)["error"]

    monkeypatch.setenv("EXPORTS_CONFIG", '{"exports": [{"name": "x"}]}')
    answer = start("x")
    assert answer.status_code == 500 and "EXPORTS_CONFIG is invalid" in body_of(answer)["error"]

    with pytest.raises(ConfigError, match="EXPORTS_CONFIG is invalid"):  # the timer invocation fails, visibly
        handler("scheduled_exports")(TimerRequest(past_due=False))

    run_id = new_run_id()
    handler("run_queued_export")(queue_message(run_id, "x"))  # returns: no retry fixes a bad config
    failed = ReportStore(BlobServiceClient.from_connection_string(app_env["AzureWebJobsStorage"])).load("x", run_id)
    assert (failed.status, failed.error_kind) == ("failed", "config")
    assert "EXPORTS_CONFIG is invalid" in failed.errors[-1]

    monkeypatch.delenv("AzureWebJobsStorage")
    answer = handler("list_exports")(http("GET", "exports"))
    assert answer.status_code == 500 and "AzureWebJobsStorage" in body_of(answer)["error"]


def test_a_destination_other_than_activecampaign_is_a_config_error_unless_allowed(
        monkeypatch, app_env, run_queue, unique_name):
    configure(monkeypatch, export_dict(unique_name, "attacker.example.com", "customer-insights", "ci/a"))
    answer = start(unique_name)
    error = body_of(answer)["error"]
    assert answer.status_code == 500 and "destination.hostname" in error and "ALLOWED_DESTINATION_HOSTS" in error
    run_id = new_run_id()
    handler("run_queued_export")(queue_message(run_id, unique_name))  # returns: no retry fixes a bad config
    failed = ReportStore(BlobServiceClient.from_connection_string(app_env["AzureWebJobsStorage"])).load(
        unique_name, run_id)
    assert (failed.status, failed.error_kind) == ("failed", "config")
    assert "is not an ActiveCampaign API host" in failed.errors[-1]
    assert message_count(run_queue) == 0

    monkeypatch.setenv("ALLOWED_DESTINATION_HOSTS", "attacker.example.com")  # the operator's explicit choice
    listed = handler("list_exports")(http("GET", "exports"))
    assert listed.status_code == 200, listed.get_body()


def test_start_all_queues_every_export_that_may_run(monkeypatch, container, run_queue, reports, unique_name):
    a = export_dict(f"{unique_name}-a", OTHER_HOST, container.container_name, "ci/a")
    b = export_dict(f"{unique_name}-b", OTHER_HOST, container.container_name, "ci/b")
    off = export_dict(f"{unique_name}-off", OTHER_HOST, container.container_name, "ci/c", enabled=False)
    configure(monkeypatch, a, b, off)
    assert handler("start_all_export_runs")(http("POST", "exports/runs", body=b'{"fullRefresh": true}')
                                            ).status_code == 400

    answer = handler("start_all_export_runs")(http("POST", "exports/runs"))
    assert answer.status_code == 202
    body = body_of(answer)
    assert sorted(r["export"] for r in body["runs"]) == [f"{unique_name}-a", f"{unique_name}-b"]
    assert [s["export"] for s in body["skipped"]] == [f"{unique_name}-off"]
    assert reports.load(f"{unique_name}-off", body["skipped"][0]["runId"]).status == "skipped"
    assert message_count(run_queue) == 2

    again = handler("start_all_export_runs")(http("POST", "exports/runs"))
    assert again.status_code == 409  # both are still queued; nothing new
    assert message_count(run_queue) == 2


# --- timer ------------------------------------------------------------------------------------------------------


def test_timer_queues_enabled_exports_and_records_skipped_ones(
        monkeypatch, container, run_queue, reports, unique_name, caplog):
    go = export_dict(f"{unique_name}-go", OTHER_HOST, container.container_name, "ci/a")
    off = export_dict(f"{unique_name}-off", OTHER_HOST, container.container_name, "ci/b", enabled=False)
    no_consent = export_dict(f"{unique_name}-nc", OTHER_HOST, container.container_name, "ci/c",
                             privacyConsent=False)
    configure(monkeypatch, go, off, no_consent)

    with caplog.at_level(logging.INFO):
        handler("scheduled_exports")(TimerRequest(past_due=True))
    assert "past due" in caplog.text

    messages = take_messages(run_queue)
    assert [(json.loads(m.get_body())["export"], json.loads(m.get_body())["trigger"]) for m in messages] == [
        (f"{unique_name}-go", "timer")]
    assert reports.latest(f"{unique_name}-go")[0].status == "queued"
    skipped_off = reports.latest(f"{unique_name}-off")
    skipped_nc = reports.latest(f"{unique_name}-nc")
    assert [(r.status, r.trigger) for r in skipped_off + skipped_nc] == [("skipped", "timer")] * 2
    assert "disabled" in skipped_off[0].skip_reason
    assert "consent" in skipped_nc[0].skip_reason

    # The next tick while that run is still queued records a skip instead of queueing a second run.
    handler("scheduled_exports")(TimerRequest(past_due=False))
    assert message_count(run_queue) == 0
    skipped = [r for r in reports.latest(f"{unique_name}-go") if r.status == "skipped"]
    assert len(skipped) == 1 and "already queued" in skipped[0].skip_reason


# --- on arrival ---------------------------------------------------------------------------------------------------


def arrived(container, blob_name: str, write: bool = True) -> None:
    if write:
        container.upload_blob(blob_name, b'{"name": "model", "entities": []}', overwrite=True)
    blob = InputStream(name=f"{container.container_name}/{blob_name}", data=b"", length=0)
    handler("export_on_arrival")(blob)


def test_a_new_model_json_queues_one_delayed_run_of_the_export_that_reads_it(
        monkeypatch, container, run_queue, reports, unique_name):
    reader = export_dict(f"{unique_name}-a", OTHER_HOST, container.container_name, "CustomerInsights_1/a")
    other = export_dict(f"{unique_name}-b", OTHER_HOST, container.container_name, "CustomerInsights_1/b")
    off = export_dict(f"{unique_name}-off", OTHER_HOST, container.container_name, "CustomerInsights_1/a",
                      privacyConsent=False)
    configure(monkeypatch, reader, other, off)

    arrived(container, "CustomerInsights_1/a/VipCustomers/2026/01/01/0000/VipCustomers_1.csv")
    arrived(container, "CustomerInsights_1/unknown/model.json")
    arrived(container, "CustomerInsights_1/a/model.json.tmp")
    assert message_count(run_queue) == 0

    arrived(container, "CustomerInsights_1/a/model.json")
    assert message_count(run_queue) == 1
    assert run_queue.peek_messages() == []  # delayed: later writes of the same refresh join this run
    queued = reports.latest(f"{unique_name}-a")
    assert [(r.status, r.trigger) for r in queued] == [("queued", "arrival")]
    assert reports.latest(f"{unique_name}-b") == []
    assert [(r.status, r.trigger) for r in reports.latest(f"{unique_name}-off")] == [("skipped", "arrival")]

    arrived(container, "CustomerInsights_1/a/model.json")  # written again within the same refresh
    arrived(container, "CustomerInsights_1/a/model.json", write=False)  # the same event delivered twice
    assert message_count(run_queue) == 1
    assert [r.run_id for r in reports.latest(f"{unique_name}-a")] == [queued[0].run_id]


def test_an_arrival_run_that_meets_a_running_export_waits_for_it(monkeypatch, emulator, storage, container,
                                                                  run_queue, reports, unique_name):
    name = unique_name
    sample = small_export(container, rows=20)
    configure(monkeypatch, export_dict(name, emulator.hostname, container.container_name, sample.path))
    app_clients = AppClients.from_env()
    export = app_clients.exports().get(name)
    queued = enqueue_run(app_clients, export, "arrival", StartOptions(), run_id=new_run_id())
    take_messages(run_queue)
    timer_run = enqueue_run(app_clients, export, "timer", StartOptions(), run_id=new_run_id())
    timer_message = take_messages(run_queue)
    arrival_message = QueueMessage(id="1", body=RunRequest(queued.run_id, name, "arrival").to_json(),
                                   dequeue_count=1)

    with StateStore(storage).lock(name, "a-running-run"):
        report = handler("run_queued_export")(arrival_message)
        assert report is None  # the handler returns nothing to the host
        deferred = reports.load(name, queued.run_id)
        assert deferred.status == "queued" and "waiting" in deferred.errors[-1]
        assert message_count(run_queue) == 1  # sent again, delayed
        handler("run_queued_export")(timer_message[0])
        skipped = reports.load(name, timer_run.run_id)
        assert (skipped.status, skipped.error_kind) == ("skipped", "locked")
        assert message_count(run_queue) == 1  # a timer run is not retried


# --- queue handler outcomes ---------------------------------------------------------------------------------------


def queue_message(run_id: str, export: str, trigger: str = "http", dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id=run_id, body=RunRequest(run_id, export, trigger).to_json(),
                        dequeue_count=dequeue_count)


def test_two_queue_runs_of_one_export_at_once_make_one_run(monkeypatch, slow_import_emulator, container, run_queue,
                                                            reports, unique_name):
    emulator = slow_import_emulator
    sample = small_export(container, rows=600)
    configure(monkeypatch, export_dict(unique_name, emulator.hostname, container.container_name, sample.path))
    run_ids = [new_run_id(), new_run_id()]
    barrier = threading.Barrier(2)
    raised: list[BaseException] = []

    def run(run_id: str) -> None:
        barrier.wait()
        try:
            handler("run_queued_export")(queue_message(run_id, unique_name))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            raised.append(exc)

    threads = [threading.Thread(target=run, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert raised == []
    outcomes = sorted((r.status, r.error_kind) for r in (reports.load(unique_name, i) for i in run_ids))
    assert outcomes == [("completed", None), ("skipped", "locked")]
    completed = next(r for r in (reports.load(unique_name, i) for i in run_ids) if r.status == "completed")
    assert completed.counts["confirmed"] == len(sample.expected)
    assert emulator.subscribers(LIST_ID) == set(sample.expected)
    assert message_count(run_queue) == 0


def test_transient_failure_is_retried_and_the_poison_handler_records_giving_up(
        monkeypatch, container, run_queue, reports, unique_name):
    sample = small_export(container, rows=20)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every request fails to connect
    fast_retries = {"bulkImportsPerMinute": 60000, "requestsPerSecond": 5000}
    destination = {"hostname": closed, "listId": str(LIST_ID), "rateLimits": fast_retries}
    configure(monkeypatch, export_dict(unique_name, closed, container.container_name, sample.path,
                                       destination=destination))
    run_id = new_run_id()

    with pytest.raises(RetryableRunFailure, match=r"attempt 2 of 3"):
        handler("run_queued_export")(queue_message(run_id, unique_name, dequeue_count=2))
    failed = reports.load(unique_name, run_id)
    assert (failed.status, failed.error_kind) == ("failed", "transient")

    handler("record_failed_export_run")(queue_message(run_id, unique_name))
    gave_up = reports.load(unique_name, run_id)
    assert gave_up.status == "failed"
    assert gave_up.errors[-1].startswith("gave up after 3 attempts: ")
    assert "ActiveCampaign" in gave_up.errors[-1]


def test_configuration_errors_are_not_retried(monkeypatch, emulator, container, run_queue, reports, unique_name):
    sample = small_export(container, rows=20)
    wrong_list = {"hostname": emulator.hostname, "listId": "999"}
    configure(monkeypatch, export_dict(unique_name, emulator.hostname, container.container_name, sample.path,
                                       destination=wrong_list))
    run_id = new_run_id()
    handler("run_queued_export")(queue_message(run_id, unique_name))  # returns: no retry
    report = reports.load(unique_name, run_id)
    assert (report.status, report.error_kind) == ("failed", "config")
    assert "999" in report.errors[-1]

    handler("run_queued_export")(queue_message(run_id, unique_name, dequeue_count=2))  # redelivered: not re-run
    assert reports.load(unique_name, run_id).errors == report.errors

    removed = new_run_id()
    handler("run_queued_export")(queue_message(removed, "no-longer-configured"))
    gone = reports.load("no-longer-configured", removed)
    assert (gone.status, gone.error_kind) == ("failed", "config") and "no export named" in gone.errors[-1]

    handler("run_queued_export")(QueueMessage(id="x", body="not a run message", dequeue_count=1))


def test_a_poison_message_leaves_a_completed_run_alone(monkeypatch, container, run_queue, reports, unique_name):
    configure(monkeypatch, export_dict(unique_name, OTHER_HOST, container.container_name, "ci/a"))
    report = RunReport(run_id=new_run_id(), export=unique_name, trigger="timer", status="completed")
    reports.save(report)
    handler("record_failed_export_run")(queue_message(report.run_id, unique_name))
    assert reports.load(unique_name, report.run_id).status == "completed"

