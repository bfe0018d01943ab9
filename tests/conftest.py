"""Shared fixtures: one Azurite per test session (real storage SDKs), settings pointing at it."""
from __future__ import annotations

import itertools
import os

import pytest

from devtools.azurite import start_azurite
from exporter.settings import AppSettings

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
        "ACTIVECAMPAIGN_API_KEY": "test-key-0123456789abcdef",
    }
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.delenv("EXPORTS_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def app_settings(app_env) -> AppSettings:
    return AppSettings.from_env(os.environ)
