"""Stream the records of an export's CSV partitions as ``RawRow``s, in order, without holding a whole blob.

Each partition is read through ``BlobStream`` (ranged downloads), a buffer and a UTF-8 text wrapper into
``csv.reader``. A record the parser cannot read becomes a ``RawRow`` with an error, and reading goes on; invalid
UTF-8 stops the run, since the file was damaged.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from azure.storage.blob import ContainerClient

from ..errors import SourceError
from .blob_stream import DOWNLOAD_CHUNK_BYTES, BlobStream
from .model import ExportSource

_TEXT_CHUNK_CHARS = 64 * 1024  # how much TextIOWrapper decodes at a time; bigger is faster than the 8 KiB default


@dataclass(slots=True)
class RawRow:
    """One CSV record of a partition, as read, with where it came from (for rejections and error messages)."""

    values: list[str]  # as parsed by csv; may have the wrong length for a broken row; [] when unparseable
    partition: str  # blob name
    record: int  # 1-based record number inside the partition (not counting a header or blank lines)
    line: int  # 1-based physical line where the record starts (quoted newlines span lines)
    error: str = ""  # why the CSV parser could not read this record, when it could not


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
    last_line = 0  # physical lines consumed so far, from reader.line_num: csv counts them, quoted newlines too
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
