"""Shared fixtures: one Azurite per test session (real storage SDKs), settings pointing at it."""
from __future__ import annotations

import itertools
import os

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import start_azurite
from emulator import Emulator
from exporter.settings import AppSettings
from tests.helpers import API_KEY, LIST_ID, TIME_SCALE

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def azurite():
    with start_azurite() as server:
        yield server


@pytest.fixture
def unique_name(request) -> str:
    """A name unique in this session, usable as a container or export name."""
    base = "".join(ch for ch in request.node.name.lower() if ch.isalnum())[:40]
    return f"t{next(_ids)}-{base}"


@pytest.fixture
def app_env(azurite, monkeypatch) -> dict[str, str]:
    """Environment as the function app sees it locally; the API key from an env var (no Key Vault)."""
    env = {
        "CI_EXPORT_STORAGE": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "ACTIVECAMPAIGN_API_KEY": API_KEY,
    }
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.delenv("EXPORTS_CONFIG", raising=False)
    monkeypatch.delenv("ALLOWED_DESTINATION_HOSTS", raising=False)  # ActiveCampaign's hosts and the emulator only
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def app_settings(app_env) -> AppSettings:
    return AppSettings.from_env(os.environ)


@pytest.fixture
def container(azurite, unique_name):
    """A new, empty blob container in the session's Azurite; deleted afterwards."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.create_container(unique_name[:63].rstrip("-"))
    yield client
    client.delete_container()


@pytest.fixture
def emulator():
    """The ActiveCampaign emulator on a free 127.0.0.1 port, limits time-scaled like tests.helpers' configs."""
    server = Emulator(api_key=API_KEY, lists={LIST_ID: "VIP newsletter"}, time_scale=TIME_SCALE).start()
    yield server
    server.stop()
