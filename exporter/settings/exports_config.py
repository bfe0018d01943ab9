"""The exports config model: one entry per export, each with a source, a destination and a column mapping.

The shape is a public contract (README, tests outside this repo): keep the key names.
Unknown keys are errors so that a typo such as ``listid`` cannot pass silently.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from .hostname import normalise_hostname
from .names import DEFAULT_SECRET_NAME, EXPORT_NAME_RE


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
    account: str | None = None  # column with the contact's account (company) name: customer_acct_name

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
        pairs = {"email": self.email, "firstName": self.first_name, "lastName": self.last_name, "phone": self.phone,
                 "account": self.account}
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
    # ActiveCampaign's own default: imported contacts start the account's automations (a welcome series…).
    # Strict: only a JSON true or false decides whether a million welcome emails go out.
    run_automations: bool = Field(True, alias="runAutomations", strict=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not EXPORT_NAME_RE.match(value):
            raise ValueError(
                f"{value!r} must be 1-63 lowercase letters, digits and dashes, starting with a letter or digit "
                "(it names folders in storage and URLs), e.g. \"vip-customers\""
            )
        return value

    def automations_summary(self) -> str:
        """What bulk imports do about the account's automations, as validate and a first run say it."""
        if self.run_automations:
            return "automations: run for imported contacts (runAutomations true)"
        return "automations: skipped for imported contacts (runAutomations false)"

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
