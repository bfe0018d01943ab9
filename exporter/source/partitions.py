"""Which blobs are the current export's partitions.

Every Customer Insights run writes a new ``<Entity>/yyyy/MM/dd/HHmm/`` folder and leaves the older ones, so only
the partitions model.json lists are the current export; they are checked to exist before any row is read. When
model.json lists none (older exports), the newest timestamp folder that holds CSV files is read instead.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from typing import Any

from azure.storage.blob import ContainerClient

from ..errors import SourceError
from .locations import resolve_location
from .paths import join_path, model_display_path

_TIMESTAMP_LEVELS = (4, 2, 2, 4)  # yyyy/MM/dd/HHmm


def partition_blob(container_client: ContainerClient, partition: dict[str, Any], model_folder: str) -> str:
    """Blob name of one partition entry of model.json (``model_folder`` holds that model.json)."""
    location = partition.get("location")
    if not isinstance(location, str) or not location.strip():
        raise SourceError(
            f"partition {partition.get('name')!r} in {model_display_path(container_client, model_folder)} "
            "has no location"
        )
    return resolve_location(
        location.strip(), container_client.container_name, container_client.account_name, model_folder
    )


def check_partitions_exist(container_client: ContainerClient, partitions: list[str]) -> None:
    """Refuse an export whose listed partitions are not all there (it is incomplete or still being written)."""
    folders = sorted({posixpath.dirname(p) for p in partitions})
    present: set[str] = set()
    for folder in folders:
        prefix = folder + "/" if folder else None
        present.update(b.name for b in container_client.walk_blobs(name_starts_with=prefix, delimiter="/"))
    missing = [p for p in partitions if p not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SourceError(
            f"model.json lists {len(missing)} partition(s) that are not in container "
            f"{container_client.container_name!r}: {shown}. The export is incomplete or still being written; "
            "re-run after the Customer Insights export finishes"
        )


def newest_timestamp_partitions(container_client: ContainerClient, path: str, entity: str) -> tuple[list[str], str]:
    """The CSV files of the newest ``<path>/<entity>/yyyy/MM/dd/HHmm/`` folder that has any, and that folder."""
    root = join_path(path, entity) + "/"
    for folder in _timestamp_folders_newest_first(container_client, root, _TIMESTAMP_LEVELS):
        names = [
            b.name for b in container_client.walk_blobs(name_starts_with=folder, delimiter="/")
            if b.name.lower().endswith(".csv")
        ]
        if names:
            return sorted(names, key=_natural_key), folder
    raise SourceError(
        f"model.json at {model_display_path(container_client, path)} lists no partitions for entity {entity!r} "
        f"and there is no yyyy/MM/dd/HHmm folder with CSV files under {container_client.container_name}/{root}; "
        "the export has not run yet or is still being written: run it in Customer Insights and retry after it "
        "finishes"
    )


def _timestamp_folders_newest_first(
    container_client: ContainerClient, prefix: str, levels: tuple[int, ...]
) -> Iterator[str]:
    """Folders ``prefix/yyyy/MM/dd/HHmm/`` (one level of digits per entry of ``levels``), newest first."""
    if not levels:
        yield prefix
        return
    children = []
    for item in container_client.walk_blobs(name_starts_with=prefix, delimiter="/"):
        child = item.name[len(prefix):].rstrip("/")
        if item.name.endswith("/") and len(child) == levels[0] and child.isdigit():
            children.append(child)
    for child in sorted(children, reverse=True):
        yield from _timestamp_folders_newest_first(container_client, f"{prefix}{child}/", levels[1:])


def _natural_key(name: str) -> list[Any]:
    """Sort ``X_2.csv`` before ``X_10.csv``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
