"""Read a Customer Insights (CI) segment export from Blob Storage: model.json plus CSV partitions."""
from .locations import resolve_location
from .model import (
    DOWNLOAD_CHUNK_BYTES,
    ExportSource,
    RawRow,
    iter_rows,
    open_source,
)
from .paths import MODEL_FILE

__all__ = [
    "DOWNLOAD_CHUNK_BYTES",
    "MODEL_FILE",
    "ExportSource",
    "RawRow",
    "iter_rows",
    "open_source",
    "resolve_location",
]
