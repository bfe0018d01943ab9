"""Read a Customer Insights (CI) segment export from Blob Storage: model.json plus CSV partitions.

Layout: ``<container>/<path>/model.json`` and ``<path>/<Entity>/yyyy/MM/dd/HHmm/<Entity>_<n>.csv``. Every CI run
writes a new timestamp folder and leaves older ones; only the partitions model.json lists are the current export.
Partitions are streamed in ranged downloads of ``DOWNLOAD_CHUNK_BYTES``, so memory does not grow with their size.

``open_source`` reads model.json into an ``ExportSource``; ``iter_rows`` streams its records as ``RawRow``s.

Modules:
    model           model.json -> ExportSource: entity, columns, partitions, CSV format settings
    partitions      which blobs are the current export's partitions (listed, or the newest timestamp folder)
    locations       a partition location (URL, abfs(s)/wasb(s), relative path) -> blob name in the container
    rows            RawRow and iter_rows: CSV records of the partitions, with their partition, record and line
    blob_stream     BlobStream: a raw stream over one blob in ETag-pinned ranged downloads
    paths           MODEL_FILE and the blob paths around it
    missing_model   the "no model.json here; these folders have one" error
    storage_errors  storage SDK errors as SourceError/TransientError that name the fix
"""
from .blob_stream import DOWNLOAD_CHUNK_BYTES
from .locations import resolve_location
from .model import ExportSource, open_source
from .paths import MODEL_FILE
from .rows import RawRow, iter_rows

__all__ = [
    "DOWNLOAD_CHUNK_BYTES",
    "MODEL_FILE",
    "ExportSource",
    "RawRow",
    "iter_rows",
    "open_source",
    "resolve_location",
]
