"""Blob and queue clients from app settings: a connection string locally, managed identity in Azure."""
from __future__ import annotations

from functools import lru_cache

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from .errors import ConfigError
from .settings import StorageTarget

# Stream big blobs in bounded pieces instead of holding them whole.
CHUNK_BYTES = 4 * 1024 * 1024


@lru_cache(maxsize=1)
def _credential():
    from azure.identity import (
        DefaultAzureCredential,  # imported lazily: only Azure needs it
    )

    return DefaultAzureCredential()


def blob_service(target: StorageTarget) -> BlobServiceClient:
    if target.connection_string:
        return BlobServiceClient.from_connection_string(
            target.connection_string, max_chunk_get_size=CHUNK_BYTES, max_single_get_size=CHUNK_BYTES
        )
    if target.blob_service_uri:
        return BlobServiceClient(target.blob_service_uri, credential=_credential(),
                                 max_chunk_get_size=CHUNK_BYTES, max_single_get_size=CHUNK_BYTES)
    raise ConfigError(
        f"storage is not configured: set {target.setting} (a connection string, e.g. UseDevelopmentStorage=true "
        f"locally) or {target.setting}__blobServiceUri (managed identity in Azure)"
    )


def queue_service(target: StorageTarget) -> QueueServiceClient:
    if target.connection_string:
        return QueueServiceClient.from_connection_string(target.connection_string)
    if target.queue_service_uri:
        return QueueServiceClient(target.queue_service_uri, credential=_credential())
    raise ConfigError(
        f"queue storage is not configured: set {target.setting} or {target.setting}__queueServiceUri"
    )
