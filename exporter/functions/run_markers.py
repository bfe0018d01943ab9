"""Run markers: ``exporter-state/<export>/run-marker.json`` names the newest run queued for an export."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, ContainerClient

from ..report import utc_now


@dataclass(frozen=True)
class ModelVersion:
    """The model.json an arrival saw."""

    blob: str
    etag: str
    last_modified: str

    def as_dict(self) -> dict[str, str]:
        return {"blob": self.blob, "etag": self.etag, "lastModified": self.last_modified, "seenAt": utc_now()}


@dataclass
class Marker:
    """A marker as read: its JSON (empty if there is none) and the ETag to replace it with (None: create it)."""

    data: dict[str, Any]
    etag: str | None


class RunMarkers:
    """``<export>/run-marker.json``: the newest run queued for an export, and the last model.json that queued one."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def _blob(self, export: str) -> BlobClient:
        return self._container.get_blob_client(f"{export}/run-marker.json")

    def read(self, export: str) -> Marker:
        try:
            download = self._blob(export).download_blob()
            data = json.loads(download.readall())
            return Marker(data if isinstance(data, dict) else {}, download.properties.etag)
        except ResourceNotFoundError:
            return Marker({}, None)
        except ValueError:  # unreadable: replace it (with its ETag, so a concurrent writer still wins)
            return Marker({}, self._blob(export).get_blob_properties().etag)

    def replace(self, export: str, data: dict[str, Any], etag: str | None) -> bool:
        """Write the marker only if nobody replaced it since it was read; False if someone did."""
        body = json.dumps(data).encode()
        try:
            if etag:
                self._blob(export).upload_blob(body, overwrite=True, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
            else:
                self._blob(export).upload_blob(body, overwrite=False)
        except (ResourceModifiedError, ResourceExistsError):
            return False
        except ResourceNotFoundError:  # the container does not exist yet
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            return self.replace(export, data, etag) if not etag else False
        return True
