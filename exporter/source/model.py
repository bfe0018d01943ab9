"""model.json of a Customer Insights export, read into an ``ExportSource``: entity, columns, partitions, CSV format.

model.json is a CDM model: its entities' attributes give the CSV columns in order, their partitions the CSV files of
the current export, and fileFormatSettings or cdm:traits whether those files have a header row and which delimiter.
Everything that is wrong with it is a ``SourceError`` that says what to fix.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from ..errors import SourceError, TransientError
from .missing_model import model_missing
from .partitions import (
    check_partitions_exist,
    newest_timestamp_partitions,
    partition_blob,
)
from .paths import MODEL_FILE, join_path, model_display_path, model_folder
from .storage_errors import container_missing, error_code, storage_error

log = logging.getLogger("exporter.source")  # named after the package, not this module: log lines name the reader


@dataclass(frozen=True)
class ExportSource:
    """What one run reads: the current export of one entity."""

    container: str
    path: str  # folder holding model.json (no leading/trailing slash)
    entity: str  # entity name actually used
    columns: list[str]  # in CSV order
    partitions: list[str]  # blob names, in model order
    has_header: bool
    model_refreshed: str | None  # newest partition refreshTime, else model modifiedTime, for the run report
    delimiter: str = ","


def open_source(container_client: ContainerClient, path: str, entity: str | None) -> ExportSource:
    """Read model.json at ``path`` and describe the current export of ``entity`` (the only one when None)."""
    path = _normalise_path(path)
    model, model_modified = _read_model(container_client, path)
    where = model_display_path(container_client, path)
    chosen = _choose_entity(_local_entities(model, where), entity, where)
    columns = _columns(chosen, where)
    listed = [p for p in chosen.get("partitions") or [] if isinstance(p, dict)]
    has_header, delimiter = _csv_settings(chosen, listed, where)
    if listed:
        partitions = [partition_blob(container_client, p, path) for p in listed]
        check_partitions_exist(container_client, partitions)
        refreshed = _newest(p.get("refreshTime") for p in listed)
    else:
        partitions, folder = newest_timestamp_partitions(container_client, path, chosen["name"])
        refreshed = None
        log.warning(
            "model.json lists no partitions for %s; reading the newest folder %s (%d CSV files)",
            chosen["name"], folder, len(partitions),
        )
    model_refreshed = refreshed or _text(model.get("modifiedTime")) or model_modified
    return ExportSource(
        container=container_client.container_name,
        path=path,
        entity=chosen["name"],
        columns=columns,
        partitions=partitions,
        has_header=has_header,
        model_refreshed=model_refreshed,
        delimiter=delimiter,
    )


def _normalise_path(path: str) -> str:
    path = path.strip().strip("/")
    folder = model_folder(path)  # someone pasted the model.json path itself
    return path if folder is None else folder


def _read_model(container_client: ContainerClient, path: str) -> tuple[dict[str, Any], str | None]:
    """model.json as a dict, and when its blob was last modified (ISO 8601), the report's fallback refresh time."""
    name = join_path(path, MODEL_FILE)
    try:
        downloader = container_client.download_blob(name)
        data = downloader.readall()  # model.json is small; only partitions must be streamed
    except ResourceNotFoundError as exc:
        if error_code(exc) == "ContainerNotFound":
            raise container_missing(container_client) from None
        raise model_missing(container_client, path) from None
    except HttpResponseError as exc:
        raise storage_error(container_client, name, exc) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"cannot reach blob storage at {container_client.url}: {exc}") from None
    modified = downloader.properties.last_modified
    shown = model_display_path(container_client, path)
    try:
        model = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{shown} is not UTF-8 (invalid byte at offset {exc.start}); "
            "re-run the export in Customer Insights"
        ) from None
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{shown} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}, "
            f"{len(data)} bytes); it may still be being written: re-run after the Customer Insights export finishes"
        ) from None
    if not isinstance(model, dict):
        raise SourceError(f"{shown} is not a CDM model (expected a JSON object)")
    return model, modified.isoformat() if modified else None


def _local_entities(model: dict[str, Any], where: str) -> list[dict[str, Any]]:
    entities = model.get("entities")
    if not isinstance(entities, list):
        raise SourceError(f"{where} is not a CDM model: it has no \"entities\" list")
    usable = [
        e for e in entities
        if isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("$type", "LocalEntity") == "LocalEntity"
    ]
    if not usable:
        raise SourceError(f"{where} lists no entities (LocalEntity); re-run the export in Customer Insights")
    return usable


def _choose_entity(entities: list[dict[str, Any]], wanted: str | None, where: str) -> dict[str, Any]:
    names = ", ".join(e["name"] for e in entities)
    if wanted is None:
        if len(entities) == 1:
            return entities[0]
        raise SourceError(f"{where} has several entities ({names}); set source.entity to the one to export")
    for entity in entities:
        if entity["name"] == wanted:
            return entity
    folded = [e for e in entities if e["name"].lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    raise SourceError(f"entity {wanted!r} is not in {where}; entities there: {names}. Fix source.entity")


def _columns(entity: dict[str, Any], where: str) -> list[str]:
    attributes = entity.get("attributes")
    if not isinstance(attributes, list) or not attributes:
        raise SourceError(f"entity {entity['name']!r} in {where} has no attributes, so the CSV columns are unknown")
    columns = []
    for i, attribute in enumerate(attributes):
        name = attribute.get("name") if isinstance(attribute, dict) else None
        if not isinstance(name, str) or not name:
            raise SourceError(f"attribute #{i + 1} of entity {entity['name']!r} in {where} has no name")
        columns.append(name)
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise SourceError(f"entity {entity['name']!r} in {where} names columns twice: {', '.join(duplicates)}")
    return columns


def _csv_settings(entity: dict[str, Any], partitions: list[dict[str, Any]], where: str) -> tuple[bool, str]:
    entity_settings = _format_settings(entity)
    settings = [{**entity_settings, **_format_settings(p)} for p in partitions] or [entity_settings]
    headers = {_truthy(s.get("columnHeaders", False)) for s in settings}
    delimiters = {str(s.get("delimiter") or ",") for s in settings}
    if len(headers) > 1 or len(delimiters) > 1:
        raise SourceError(f"partitions in {where} disagree on columnHeaders or delimiter; re-run the export in CI")
    delimiter = delimiters.pop()
    if len(delimiter) != 1:
        raise SourceError(f"{where} gives delimiter {delimiter!r}; only single-character delimiters are supported")
    return headers.pop(), delimiter


def _format_settings(item: dict[str, Any]) -> dict[str, Any]:
    """CSV settings of an entity or partition: ``fileFormatSettings`` and ``cdm:traits`` arguments."""
    found: dict[str, Any] = {}
    for trait in item.get("cdm:traits") or []:
        if isinstance(trait, dict):
            for argument in trait.get("arguments") or []:
                if isinstance(argument, dict) and argument.get("name") in ("columnHeaders", "delimiter"):
                    found[argument["name"]] = argument.get("value")
    settings = item.get("fileFormatSettings")
    if isinstance(settings, dict):
        found.update({k: settings[k] for k in ("columnHeaders", "delimiter") if k in settings})
    return found


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _newest(times: Iterator[Any]) -> str | None:
    # CI writes ISO 8601 UTC times, which sort as text.
    texts = [t for t in times if isinstance(t, str) and t]
    return max(texts) if texts else None
