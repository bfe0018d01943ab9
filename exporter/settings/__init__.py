"""Configuration: the exports config (JSON) and the app settings (environment).

The exports config shape is a public contract (README, tests outside this repo): keep the key names.
Unknown keys are errors so that a typo such as ``listid`` cannot pass silently.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class RateLimits(_Strict):
    bulk_imports_per_minute: float = Field(100, alias="bulkImportsPerMinute", gt=0)
    requests_per_second: float = Field(5, alias="requestsPerSecond", gt=0)


class Source(_Strict):
    container: str = Field(min_length=3, max_length=63)
    path: str = Field(min_length=1)
    entity: str | None = None

    @field_validator("container")
    @classmethod
    def _container_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", value):
            raise ValueError(
                "is not a valid blob container name (3-63 lowercase letters, digits and single dashes)"
            )
        return value

    @field_validator("path")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        value = value.strip().strip("/")
        if not value:
            raise ValueError("must name the folder that holds model.json, e.g. CustomerInsights_<id>/<exportName>")
        return value


class Destination(_Strict):
    hostname: str
    api_key_secret_name: str = Field(DEFAULT_SECRET_NAME, alias="apiKeySecretName", min_length=1)
    list_id: int = Field(alias="listId", gt=0)
    rate_limits: RateLimits = Field(default_factory=RateLimits, alias="rateLimits")

    @field_validator("list_id", mode="before")
    @classmethod
    def _list_id(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        # pydantic turns ValueError (not TypeError) into a validation error naming the field
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("must be the numeric id of an ActiveCampaign list, e.g. \"3\"")  # noqa: TRY004
        if isinstance(value, str):
            raise ValueError(  # noqa: TRY004
                f"{value!r} is not a list id: use the number shown in ActiveCampaign under Lists (e.g. \"3\")"
            )
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return normalise_hostname(value)

    @property
    def base_url(self) -> str:
        """``https://host/api/3``; plain http only for a local emulator (``http://127.0.0.1:PORT``)."""
        if self.hostname.startswith("http://"):
            return f"{self.hostname}/api/3"
        return f"https://{self.hostname}/api/3"

    def summary(self) -> dict[str, Any]:
        """Where contacts go, as run reports and the exports list show it: ``{"hostname", "listId"}``."""
        return {"hostname": self.hostname, "listId": self.list_id}


class Mapping(_Strict):
    email: str = Field(min_length=1)
    first_name: str | None = Field(None, alias="firstName")
    last_name: str | None = Field(None, alias="lastName")
    phone: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("fields")
    @classmethod
    def _field_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for field_id in value:
            if not field_id.isdigit():
                raise ValueError(
                    f"key {field_id!r} must be an ActiveCampaign custom field id (a number), "
                    "see Contacts > Fields in ActiveCampaign"
                )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise ValueError("tags must be non-empty names")
        return [tag.strip() for tag in value]

    def columns(self) -> dict[str, str]:
        """Target name → source column, for every mapped column."""
        pairs = {"email": self.email, "firstName": self.first_name, "lastName": self.last_name, "phone": self.phone}
        mapped = {target: column for target, column in pairs.items() if column}
        mapped.update({f"fields.{field_id}": column for field_id, column in self.fields.items()})
        return mapped


class ExportConfig(_Strict):
    name: str
    source: Source
    destination: Destination
    mapping: Mapping
    privacy_consent: bool = Field(False, alias="privacyConsent")
    enabled: bool = True
    remove_missing: bool = Field(False, alias="removeMissing")
    max_removal_share: float = Field(0.2, alias="maxRemovalShare", ge=0, le=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not EXPORT_NAME_RE.match(value):
            raise ValueError(
                f"{value!r} must be 1-63 lowercase letters, digits and dashes, starting with a letter or digit "
                "(it names folders in storage and URLs), e.g. \"vip-customers\""
            )
        return value

    def skip_reason(self) -> str | None:
        """Why this export must not run, or None when it may."""
        if not self.enabled:
            return "disabled by an administrator (\"enabled\": false)"
        if not self.privacy_consent:
            return (
                "no data-privacy consent: data leaves the Customer Insights compliance boundary; "
                "set \"privacyConsent\": true once you agree"
            )
        return None


class ExportsConfig(_Strict):
    exports: list[ExportConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ExportsConfig:
        seen: set[str] = set()
        for export in self.exports:
            if export.name in seen:
                raise ValueError(f"export name {export.name!r} is used twice; names must be unique")
            seen.add(export.name)
        return self

    def get(self, name: str) -> ExportConfig:
        for export in self.exports:
            if export.name == name:
                return export
        known = ", ".join(e.name for e in self.exports)
        raise ConfigError(f"no export named {name!r} in the config; configured exports: {known}")


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
