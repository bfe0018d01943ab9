"""Helpers for end-to-end tests: export configs pointing at the emulator, and running the real pipeline."""
from __future__ import annotations

import csv
import io
import os
from typing import Any

from azure.storage.blob import BlobServiceClient

from exporter.report import ReportStore, RunReport
from exporter.run import RunOptions, run_export
from exporter.settings import AppSettings, ExportConfig, parse_exports_config

API_KEY = "test-key-0123456789abcdef"
LIST_ID = 3
TIME_SCALE = 60
MAPPING = {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "phone": "Phone",
           "fields": {"1": "City"}, "tags": ["ci-vip"]}


def export_dict(name: str, hostname: str, container: str, path: str, **overrides: Any) -> dict[str, Any]:
    export = {
        "name": name,
        "source": {"container": container, "path": path},
        "destination": {"hostname": hostname, "listId": str(LIST_ID),
                        "rateLimits": {"bulkImportsPerMinute": 100 * TIME_SCALE, "requestsPerSecond": 5 * TIME_SCALE}},
        "mapping": dict(MAPPING),
        "privacyConsent": True,
    }
    export.update(overrides)
    return export


def export_config(*args: Any, **overrides: Any) -> ExportConfig:
    return parse_exports_config({"exports": [export_dict(*args, **overrides)]}).exports[0]


def run(export: ExportConfig, **options: Any) -> RunReport:
    return run_export(export, AppSettings.from_env(os.environ), RunOptions(**options))


def rejected_rows(report: RunReport) -> list[dict[str, str]]:
    service = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
    text = ReportStore(service).rejected_csv(report)
    return list(csv.DictReader(io.StringIO(text)))
