"""`make demo`: a real export from a sample Customer Insights export in Azurite into the ActiveCampaign emulator.

Starts Azurite and the emulator on free 127.0.0.1 ports, writes a realistic export (several partitions, an older
stale folder, quoted newlines, non-ASCII names, bad emails, a broken row), runs the exporter's real CLI
(validate, run, a second incremental run after the segment changed, status) and stops everything it started.
The emulator keeps ActiveCampaign's limits but runs 60× faster, and answers some requests with 429/503/dropped
connections so the demo shows the retries at work.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from devtools.azurite import start_azurite
from devtools.sample_export import write_sample_export
from emulator import Emulator

REPO = Path(__file__).resolve().parent.parent
WORKDIR = REPO / ".demo"
LIST_ID = 3
API_KEY = "demo-api-key-not-a-real-secret"
TIME_SCALE = 60
CONTAINER = "customer-insights"
EXPORT_PATH = "CustomerInsights_5f1c1c53-demo/vip-customers"


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def demo_config(hostname: str) -> dict:
    return {"exports": [{
        "name": "vip-customers",
        "source": {"container": CONTAINER, "path": EXPORT_PATH, "entity": "VipCustomers"},
        "destination": {"hostname": hostname, "listId": str(LIST_ID),
                        # The emulator runs AC's limits 60x faster; tell the exporter the same.
                        "rateLimits": {"bulkImportsPerMinute": 100 * TIME_SCALE, "requestsPerSecond": 5 * TIME_SCALE}},
        "mapping": {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "phone": "Phone",
                    "fields": {"1": "City", "2": "LoyaltyTier"}, "tags": ["ci-vip"]},
        "privacyConsent": True, "enabled": True, "removeMissing": True,
    }]}


def exporter_cli(args: list[str], env: dict[str, str]) -> int:
    print(f"$ python -m exporter {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=env, cwd=REPO, check=False).returncode


def main() -> int:
    WORKDIR.mkdir(exist_ok=True)
    banner("Starting Azurite and the ActiveCampaign emulator (127.0.0.1, free ports)")
    with start_azurite() as azurite, Emulator(api_key=API_KEY, lists={LIST_ID: "VIP newsletter"},
                                              time_scale=TIME_SCALE, latency=0.05).start() as emulator:
        print(f"Azurite blob endpoint: http://127.0.0.1:{azurite.blob_port}")
        print(f"ActiveCampaign emulator: {emulator.hostname} (limits time-scaled x{TIME_SCALE})")
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.create_container(CONTAINER)

        banner("Writing a sample Customer Insights export into Azurite")
        first_refresh = datetime.now(UTC) - timedelta(hours=6)
        sample = write_sample_export(container, path=EXPORT_PATH, entity="VipCustomers", rows=5000, partitions=3,
                                     seed=7, with_stale_folder=True, bad_rows=True, when=first_refresh)
        for name in sample.partitions:
            print(f"  {CONTAINER}/{name}")
        print(f"  {sample.total_rows} rows; an older export folder sits beside it and must not be sent")

        config_path = WORKDIR / "exports.json"
        config_path.write_text(json.dumps(demo_config(emulator.hostname), indent=2), encoding="utf-8")
        env = dict(os.environ, CI_EXPORT_STORAGE=azurite.connection_string,
                   AzureWebJobsStorage=azurite.connection_string, ACTIVECAMPAIGN_API_KEY=API_KEY)
        env.pop("KEY_VAULT_URL", None)

        banner("Checking config, source and destination (nothing is sent)")
        if exporter_cli(["validate", "--config", str(config_path)], env) != 0:
            return 1

        banner("First run: every valid contact, with faults injected (429, 503, dropped connections, a bad batch)")
        emulator.faults.script(["429", "503", "drop"], path="bulk_import")
        emulator.faults.set(rate_429=0.05, rate_503=0.05, rate_drop=0.05, paths=("bulk_import",))
        emulator.reject_emails({sorted(sample.expected)[100]})  # valid to us, refused by "ActiveCampaign"
        if exporter_cli(["run", "--config", str(config_path)], env) != 0:
            return 1
        emulator.faults.set()
        subscribed = emulator.subscribers(LIST_ID)
        stale = [e for e in subscribed if e in set(sample.stale_emails)]
        print(f"\nActiveCampaign list {LIST_ID} now has {len(subscribed)} subscribers: every valid contact but the one "
              f"ActiveCampaign refused ({len(sample.expected) - 1}); stale-folder contacts on it: {len(stale)}")

        banner("The segment changes: a newer export with some rows changed, dropped and added")
        write_sample_export(container, path=EXPORT_PATH, entity="VipCustomers", rows=5000, partitions=3, seed=7,
                            with_stale_folder=False, bad_rows=True,
                            changes={"modify": 0.02, "drop": 0.01, "add": 25}, when=datetime.now(UTC))
        before = len(emulator.bulk_import_requests())
        if exporter_cli(["run", "--config", str(config_path)], env) != 0:
            return 1
        print(f"\nSecond run used {len(emulator.bulk_import_requests()) - before} bulk import requests "
              "(only changed, added and departed contacts travel)")

        banner("Run history")
        exporter_cli(["status", "--config", str(config_path)], env)
        print(f"\nDemo files are in {WORKDIR.relative_to(REPO)}/; Azurite and the emulator stop now.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
