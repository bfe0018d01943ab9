"""The checks made before anything is sent, shared by ``validate`` and every run: configuration, the source
(model.json and the mapped columns), the API key and the list."""
from __future__ import annotations

from dataclasses import dataclass

from azure.storage.blob import ContainerClient

from . import logsafe
from .activecampaign import ActiveCampaignClient
from .mapping import Mapper
from .secrets import get_api_key
from .settings import AppSettings, ExportConfig
from .source import ExportSource, open_source
from .storage import blob_service


@dataclass
class CheckedSource:
    """An export's source, read and matched against its mapping."""

    container: ContainerClient
    source: ExportSource
    mapper: Mapper


def check_source(export: ExportConfig, app: AppSettings) -> CheckedSource:
    """Read the export's model.json and check that every mapped column is in it. Raises a ConfigError saying
    what is wrong and how to fix it."""
    container = blob_service(app.export_storage).get_container_client(export.source.container)
    source = open_source(container, export.source.path, export.source.entity)
    return CheckedSource(container, source, Mapper(export.mapping, source.columns, export.destination.list_id))


def connect_destination(export: ExportConfig, app: AppSettings) -> tuple[ActiveCampaignClient, dict]:
    """A client for the export's ActiveCampaign account, with the key read from Key Vault (or the local
    setting) and checked against the list. Returns the client (the caller closes it) and the list."""
    api_key = get_api_key(export.destination.api_key_secret_name, app.key_vault_url)
    logsafe.register_secret(api_key)
    client = ActiveCampaignClient(export.destination.base_url, api_key, export.destination.rate_limits)
    try:
        return client, client.check_access(export.destination.list_id)
    except BaseException:
        client.close()
        raise
