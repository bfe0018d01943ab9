"""Configuration: the exports config (JSON) and the app settings (environment).

- ``names``: container, queue, schedule and secret names shared with infra/, and the export-name rule.
- ``exports_config``: the exports config model (pydantic; unknown keys are errors).
- ``config_loading``: reading the config from a file or JSON text, with friendly validation errors.
- ``hostname``: ``destination.hostname`` checks and normalisation (which hosts an export may send to: ActiveCampaign's,
  the local emulator, and those in the app setting ``ALLOWED_DESTINATION_HOSTS``).
- ``app_settings``: ``AppSettings`` from the environment, the Azure and local setting contracts, Azurite.

Other code imports from ``exporter.settings`` itself, which re-exports the public names listed in ``__all__``.
"""
from __future__ import annotations

from .app_settings import (
    AZURE_APP_SETTINGS,
    AZURITE_ACCOUNT_KEY,
    AZURITE_CONNECTION_STRING,
    LOCAL_APP_SETTINGS,
    AppSettings,
    StorageTarget,
)
from .config_loading import load_exports_config, parse_exports_config
from .exports_config import (
    Destination,
    ExportConfig,
    ExportsConfig,
    Mapping,
    RateLimits,
    Source,
)
from .hostname import ALLOWED_HOSTS_SETTING, allowed_destination_hosts, normalise_hostname
from .names import (
    DEFAULT_EXPORT_CONTAINER,
    DEFAULT_EXPORT_SCHEDULE,
    DEFAULT_SECRET_NAME,
    EXPORT_NAME_RE,
    RUN_QUEUE,
    RUNS_CONTAINER,
    STATE_CONTAINER,
)

__all__ = [
    "ALLOWED_HOSTS_SETTING",
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
    "allowed_destination_hosts",
    "load_exports_config",
    "normalise_hostname",
    "parse_exports_config",
]
