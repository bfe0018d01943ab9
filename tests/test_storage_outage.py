"""The app's storage goes away mid-run (Azurite paused with SIGSTOP for longer than the lock's lease): the run
stops sending and fails instead of running on without its lock, and the next run delivers everything.

A real exporter process, a real Azurite process for the app's storage (the export itself stays readable in the
session's Azurite), and the emulator over HTTP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.azurite import start_azurite
from devtools.sample_export import write_sample_export
from emulator import Emulator
from exporter.state.lock import HELD_FOR_SURE
from tests.helpers import API_KEY, LIST_ID, export_config, export_dict, run

REPO = Path(__file__).resolve().parent.parent
TIME_SCALE = 2  # slow enough that the run is still sending when storage goes away
STOPS_SENDING_WITHIN = 30.0
JOURNAL_LAG = 5.0  # seconds of accepted imports the journal may not have written yet when storage stops


@pytest.fixture
def app_storage():
    """An Azurite of its own for the app's storage (lock, journal, state, reports), so it can be paused."""
    server = start_azurite()
    yield server
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def test_a_run_that_cannot_renew_its_lock_stops_sending_and_fails_and_the_next_run_delivers_everything(
        azurite, app_storage, container, tmp_path, monkeypatch, unique_name):
    export_path = write_sample_export(container, path="CustomerInsights_1/vip", rows=30000, partitions=2, seed=5,
                                      with_stale_folder=False, bad_rows=False)
    with Emulator(api_key=API_KEY, lists={LIST_ID: "VIP"}, time_scale=TIME_SCALE).start() as emulator:
        name = unique_name[:40].rstrip("-")
        limits = {"bulkImportsPerMinute": 100 * TIME_SCALE, "requestsPerSecond": 5 * TIME_SCALE}
        config = tmp_path / "exports.json"
        config.write_text(json.dumps({"exports": [export_dict(
            name, emulator.hostname, container.container_name, export_path.path,
            destination={"hostname": emulator.hostname, "listId": str(LIST_ID), "rateLimits": limits})]}))
        env = {**os.environ, "CI_EXPORT_STORAGE": azurite.connection_string,
               "AzureWebJobsStorage": app_storage.connection_string, "ACTIVECAMPAIGN_API_KEY": API_KEY}
        env.pop("KEY_VAULT_URL", None)
        exporter = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)], cwd=REPO,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while emulator.stats()["bulkImports"]["accepted"] < 30:  # well under way: a quarter sent
                assert exporter.poll() is None and time.monotonic() < deadline, "the run never got going"
                time.sleep(0.05)
            os.kill(app_storage.process.pid, signal.SIGSTOP)
            paused_at = emulator.account.now() - emulator.account.started
            # Past the lease and the allowance: the run must have stopped sending by then.
            time.sleep(STOPS_SENDING_WITHIN + 2)
            late = [r for r in emulator.requests if r["method"] == "POST" and r["status"] == 200
                    and r["arrived"] > paused_at + STOPS_SENDING_WITHIN]
            last_sent = max(r["arrived"] for r in emulator.bulk_import_requests(accepted_only=True))
            os.kill(app_storage.process.pid, signal.SIGCONT)
            output, _ = exporter.communicate(timeout=300)
        finally:
            if exporter.poll() is None:
                exporter.kill()
        assert late == [], f"{len(late)} imports were sent more than {STOPS_SENDING_WITHIN} s after storage went away"
        assert exporter.returncode == 1, output
        assert "could not be renewed" in output
        assert HELD_FOR_SURE < STOPS_SENDING_WITHIN

        expected = set(export_path.expected)
        assert len(emulator.subscribers(LIST_ID)) < len(expected)  # it stopped part-way
        monkeypatch.setenv("AzureWebJobsStorage", app_storage.connection_string)
        monkeypatch.setenv("CI_EXPORT_STORAGE", azurite.connection_string)
        monkeypatch.setenv("ACTIVECAMPAIGN_API_KEY", API_KEY)
        monkeypatch.delenv("KEY_VAULT_URL", raising=False)
        export = export_config(name, emulator.hostname, container.container_name, export_path.path,
                               destination={"hostname": emulator.hostname, "listId": str(LIST_ID),
                                            "rateLimits": limits})
        again = run(export)
        assert again.status == "completed", again.errors
        assert emulator.subscribers(LIST_ID) == expected
        accepted = emulator.bulk_import_requests(accepted_only=True)
        sent = [e for r in accepted for e in r["emails"]]
        # Sent twice: only what went out while storage could not take journal records (plus the journal's own
        # few seconds of grouping at most), never what was recorded before.
        unrecorded = sum(len(r["emails"]) for r in accepted if paused_at - JOURNAL_LAG < r["arrived"] <= last_sent)
        assert unrecorded < len(set(sent)) / 2  # what was recorded before the outage is a real part of it
        assert len(sent) - len(set(sent)) <= unrecorded
