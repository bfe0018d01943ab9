"""Read a Customer Insights (CI) segment export from Blob Storage: model.json plus CSV partitions."""
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
