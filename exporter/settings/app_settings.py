"""The app settings: what the code reads from the environment, and which settings Azure and local runs provide."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from .config_loading import load_exports_config
from .exports_config import ExportsConfig
from .hostname import ALLOWED_HOSTS_SETTING
from .names import DEFAULT_EXPORT_SCHEDULE

# App settings the code reads in Azure (identity-based connections, no keys). infra/ must set exactly these.
AZURE_APP_SETTINGS = frozenset(
    {
        "EXPORTS_CONFIG",
        "EXPORT_SCHEDULE",
        "KEY_VAULT_URL",
        ALLOWED_HOSTS_SETTING,  # read when the exports config is validated (exporter.settings.hostname)
        "CI_EXPORT_CONTAINER",
        "CI_EXPORT_STORAGE__blobServiceUri",
        "CI_EXPORT_STORAGE__queueServiceUri",  # read by the host: the blob trigger's poison queue
        "CI_EXPORT_STORAGE__credential",
        "CI_EXPORT_STORAGE__clientId",
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # Entra ID auth for telemetry (local auth disabled)
    }
)
# Local development uses connection strings instead (Azurite); see local.settings.sample.json.
LOCAL_APP_SETTINGS = frozenset(
    {"EXPORTS_CONFIG", "EXPORT_SCHEDULE", "KEY_VAULT_URL", ALLOWED_HOSTS_SETTING, "CI_EXPORT_CONTAINER",
     "CI_EXPORT_STORAGE", "AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"}
)

# Azurite's well-known development account; "UseDevelopmentStorage=true" stands for this connection string.
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_ACCOUNT_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


@dataclass(frozen=True)
class StorageTarget:
    """Where a storage account is: a connection string (local/Azurite) or a service URI (managed identity)."""

    setting: str
    connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None

    def describe(self) -> str:
        if self.connection_string:
            return f"{self.setting} (connection string)"
        return f"{self.setting}__blobServiceUri={self.blob_service_uri}"


@dataclass(frozen=True)
class AppSettings:
    export_storage: StorageTarget
    app_storage: StorageTarget
    key_vault_url: str | None
    exports_config: str | None
    export_schedule: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppSettings:
        env = os.environ if env is None else env
        return cls(
            export_storage=_storage_target(env, "CI_EXPORT_STORAGE"),
            app_storage=_storage_target(env, "AzureWebJobsStorage"),
            key_vault_url=(env.get("KEY_VAULT_URL") or "").strip() or None,
            exports_config=env.get("EXPORTS_CONFIG") or None,
            export_schedule=env.get("EXPORT_SCHEDULE") or DEFAULT_EXPORT_SCHEDULE,
        )

    def load_exports(self, path: str | None = None) -> ExportsConfig:
        source = path or self.exports_config
        if not source:
            raise ConfigError("no exports config: pass --config PATH or set the app setting EXPORTS_CONFIG")
        return load_exports_config(source)


def _storage_target(env: Mapping[str, str], name: str) -> StorageTarget:
    """Storage account ``name``: a connection string, or its ``__blobServiceUri``/``__queueServiceUri`` settings."""
    connection = (env.get(name) or "").strip()
    if connection == "UseDevelopmentStorage=true":
        connection = AZURITE_CONNECTION_STRING
    blob_uri = (env.get(f"{name}__blobServiceUri") or "").strip() or None
    queue_uri = (env.get(f"{name}__queueServiceUri") or "").strip() or None
    return StorageTarget(name, connection or None, blob_uri, queue_uri)
