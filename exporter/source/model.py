"""Read a Customer Insights (CI) segment export from Blob Storage: model.json plus CSV partitions.

Layout: ``<container>/<path>/model.json`` and ``<path>/<Entity>/yyyy/MM/dd/HHmm/<Entity>_<n>.csv``. Every CI run
writes a new timestamp folder and leaves older ones; only the partitions model.json lists are the current export.
Partitions are streamed in ranged downloads of ``DOWNLOAD_CHUNK_BYTES``, so memory does not grow with their size.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from ..errors import SourceError, TransientError
from .blob_stream import DOWNLOAD_CHUNK_BYTES, BlobStream
from .missing_model import model_missing
from .partitions import (
    check_partitions_exist,
    newest_timestamp_partitions,
    partition_blob,
)
from .paths import MODEL_FILE, join_path, model_display_path, model_folder
from .storage_errors import container_missing, error_code, storage_error

log = logging.getLogger("exporter.source")

_TEXT_CHUNK_CHARS = 64 * 1024  # how much TextIOWrapper decodes at a time; bigger is faster than the 8 KiB default


@dataclass(frozen=True)
class ExportSource:
    container: str
    path: str  # folder holding model.json (no leading/trailing slash)
    entity: str  # entity name actually used
    columns: list[str]  # in CSV order
    partitions: list[str]  # blob names, in model order
    has_header: bool
    model_refreshed: str | None  # newest partition refreshTime, else model modifiedTime, for the run report
    delimiter: str = ","


@dataclass(slots=True)
class RawRow:
    values: list[str]  # as parsed by csv; may have the wrong length for a broken row; [] when unparseable
    partition: str  # blob name
    record: int  # 1-based record number inside the partition (not counting a header or blank lines)
    line: int  # 1-based physical line where the record starts (quoted newlines span lines)
    error: str = ""  # why the CSV parser could not read this record, when it could not


# ---------------------------------------------------------------------------------------------------------------------
# open_source


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


# ---------------------------------------------------------------------------------------------------------------------
# iter_rows


def iter_rows(
    container_client: ContainerClient, source: ExportSource, *, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
) -> Iterator[RawRow]:
    """Stream every record of the export's partitions, in order. Never holds more than ~``chunk_bytes`` of a blob."""
    for partition in source.partitions:
        yield from _iter_partition(container_client, source, partition, chunk_bytes)


def _iter_partition(
    container_client: ContainerClient, source: ExportSource, partition: str, chunk_bytes: int
) -> Iterator[RawRow]:
    stream = BlobStream(container_client, partition, chunk_bytes)
    buffered = io.BufferedReader(stream, buffer_size=256 * 1024)
    text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
    text._CHUNK_SIZE = _TEXT_CHUNK_CHARS  # type: ignore[attr-defined]
    reader = csv.reader(text, delimiter=source.delimiter, strict=True)
    header_pending = source.has_header
    record = 0
    last_line = 0  # physical lines consumed so far; reader.line_num counts them exactly, for free
    try:
        while True:
            try:
                for values in reader:
                    if not values:
                        last_line = reader.line_num
                        continue
                    if header_pending:
                        header_pending = False
                        _check_header(values, source, partition)
                        last_line = reader.line_num
                        continue
                    record += 1
                    yield RawRow(values, partition, record, last_line + 1)
                    last_line = reader.line_num
                return
            except csv.Error as exc:
                # The reader starts a fresh record on the next line, so one bad record does not end the partition.
                record += 1
                yield RawRow([], partition, record, last_line + 1, f"unreadable CSV: {exc}")
                last_line = reader.line_num
    except UnicodeDecodeError as exc:
        offset = buffered.tell() - len(exc.object) + exc.start
        raise SourceError(
            f"partition {source.container}/{partition} is not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at "
            f"byte offset {offset}; Customer Insights writes UTF-8, so the "
            "file was changed or damaged: re-run the export in Customer Insights"
        ) from None
    finally:
        text.detach()  # do not let TextIOWrapper's close() chain into a half-read network stream
        stream.close()


def _check_header(values: list[str], source: ExportSource, partition: str) -> None:
    header = [v.strip() for v in values]
    if [h.lower() for h in header] != [c.lower() for c in source.columns]:
        raise SourceError(
            f"the header row of {source.container}/{partition} ({', '.join(header)}) does not match the columns in "
            f"model.json ({', '.join(source.columns)}); the export is inconsistent: re-run it in Customer Insights"
        )
