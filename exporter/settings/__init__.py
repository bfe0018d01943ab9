"""Configuration: the exports config (JSON) and the app settings (environment).

The exports config shape is a public contract (README, tests outside this repo): keep the key names.
Unknown keys are errors so that a typo such as ``listid`` cannot pass silently.
"""
from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .exports_config import (
    Destination,
    ExportConfig,
    ExportsConfig,
    Mapping,
    RateLimits,
    Source,
)
from .hostname import normalise_hostname
from .names import (
    DEFAULT_EXPORT_CONTAINER,
    DEFAULT_EXPORT_SCHEDULE,
    DEFAULT_SECRET_NAME,
    EXPORT_NAME_RE,
    RUN_QUEUE,
    RUNS_CONTAINER,
    STATE_CONTAINER,
)

# App settings the code reads in Azure (identity-based connections, no keys). infra/ must set exactly these.
AZURE_APP_SETTINGS = frozenset(
    {
        "EXPORTS_CONFIG",
        "EXPORT_SCHEDULE",
        "KEY_VAULT_URL",
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
    {"EXPORTS_CONFIG", "EXPORT_SCHEDULE", "KEY_VAULT_URL", "CI_EXPORT_CONTAINER", "CI_EXPORT_STORAGE",
     "AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"}
)


def load_exports_config(source: str) -> ExportsConfig:
    """Load and validate the exports config from a file path or from JSON text (``EXPORTS_CONFIG``)."""
    text = source.strip()
    origin = "EXPORTS_CONFIG"
    if not text.startswith("{"):
        path = Path(text)
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(f"config file {origin} not found; pass --config PATH or set EXPORTS_CONFIG") from None
        except OSError as exc:
            raise ConfigError(f"config file {origin} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parse_exports_config(data, origin)


def parse_exports_config(data: Any, origin: str = "config") -> ExportsConfig:
    try:
        return ExportsConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, data) for error in exc.errors()]
        raise ConfigError(f"{origin} is invalid:\n" + "\n".join(f"  - {p}" for p in problems)) from None


def _describe(error: Mapping[str, Any], data: Any) -> str:
    location = _location(error["loc"], data)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        hint = _suggest(key, error["loc"][:-1])
        return f"{location}: unknown key {key!r}{hint}"
    if kind == "missing":
        return f"{location}: required, but missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def _location(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(str(item))
    text = ".".join(parts) or "config"
    try:
        index = loc[1] if loc[0] == "exports" else None
        if isinstance(index, int):
            name = data["exports"][index].get("name")
            if name:
                text += f" (export {name!r})"
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return text


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _suggest(key: str, parent: tuple[Any, ...]) -> str:
    names = [p for p in parent if isinstance(p, str)]
    path: dict[tuple[str, ...], type[BaseModel]] = {
        (): ExportsConfig,
        ("exports",): ExportConfig,
        ("exports", "source"): Source,
        ("exports", "destination"): Destination,
        ("exports", "destination", "rateLimits"): RateLimits,
        ("exports", "mapping"): Mapping,
    }
    model = path.get(tuple(names), ExportConfig)
    known = _known_keys(model)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5) or [k for k in known if k.lower() == key.lower()]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; allowed keys here: {', '.join(known)}"


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
    def from_env(cls, env: MappingType[str, str] | None = None) -> AppSettings:
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


def _storage_target(env: MappingType[str, str], name: str) -> StorageTarget:
    connection = (env.get(name) or "").strip()
    if connection == "UseDevelopmentStorage=true":
        connection = AZURITE_CONNECTION_STRING
    blob_uri = (env.get(f"{name}__blobServiceUri") or "").strip() or None
    queue_uri = (env.get(f"{name}__queueServiceUri") or "").strip() or None
    return StorageTarget(name, connection or None, blob_uri, queue_uri)


AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_ACCOUNT_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
__all__ = [
    "AZURE_APP_SETTINGS",
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_CONNECTION_STRING",
    "DEFAULT_EXPORT_CONTAINER",
    "DEFAULT_EXPORT_SCHEDULE",
    "DEFAULT_SECRET_NAME",
    "EXPORT_NAME_RE",
    "LOCAL_APP_SETTINGS",
    "RUNS_CONTAINER",
    "RUN_QUEUE",
    "STATE_CONTAINER",
    "AppSettings",
    "Destination",
    "ExportConfig",
    "ExportsConfig",
    "Mapping",
    "RateLimits",
    "Source",
    "StorageTarget",
    "load_exports_config",
    "normalise_hostname",
    "parse_exports_config",
]
