"""``BlobStream``: a read-only raw stream over one blob, downloaded in ranges so memory does not grow with its size."""
from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from ..errors import SourceError, TransientError
from .storage_errors import error_code

DOWNLOAD_CHUNK_BYTES = 4 * 1024 * 1024  # one ranged download of a partition


class BlobStream(io.RawIOBase):
    """A read-only raw stream over one blob, fetched in ranges of ``chunk_bytes`` pinned to the first ETag.

    The next range downloads in a background thread while the current one is parsed, so network latency overlaps
    with CSV parsing; at most two ranges are in memory. The ETag pin turns a blob rewritten mid-read into an error
    instead of a mix of two exports.
    """

    def __init__(self, container_client: ContainerClient, name: str, chunk_bytes: int) -> None:
        super().__init__()
        self._blob = container_client.get_blob_client(name)
        self._name = f"{container_client.container_name}/{name}"
        self._chunk_bytes = chunk_bytes
        self._etag: str | None = None
        self._ranges: Iterator[tuple[int, int]] | None = None
        self._pending: Future[bytes] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._delivered = 0
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._delivered

    def readinto(self, buffer: Any) -> int:
        if not self._chunk:
            self._chunk = memoryview(self._fetch_next())
            if not self._chunk:
                return 0
        count = min(len(buffer), len(self._chunk))
        buffer[:count] = self._chunk[:count]
        self._chunk = self._chunk[count:]
        self._delivered += count
        return count

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        super().close()

    def _fetch_next(self) -> bytes:
        if self._ranges is None:
            properties = self._call(self._blob.get_blob_properties)
            self._etag = properties.etag
            step = self._chunk_bytes
            self._ranges = ((o, min(step, properties.size - o)) for o in range(0, properties.size, step))
            self._pending = self._submit_next()
        if self._pending is None:
            return b""
        data = self._pending.result()
        self._pending = self._submit_next()
        return data

    def _submit_next(self) -> Future[bytes] | None:
        assert self._ranges is not None
        spec = next(self._ranges, None)
        if spec is None:
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-prefetch")
        return self._executor.submit(self._download_range, *spec)

    def _download_range(self, offset: int, length: int) -> bytes:
        downloader = self._call(
            self._blob.download_blob,
            offset=offset,
            length=length,
            etag=self._etag,
            match_condition=MatchConditions.IfNotModified,
        )
        data = b"".join(downloader.chunks())  # one range: at most chunk_bytes, never the whole blob
        if len(data) != length:
            raise TransientError(
                f"partition {self._name}: got {len(data)} bytes at offset {offset}, expected {length}; retry the run"
            )
        return data

    def _call(self, method: Any, **kwargs: Any) -> Any:
        """Call the storage SDK; its errors become ones that say what happened to the partition and what to do."""
        try:
            return method(**kwargs)
        except ResourceModifiedError:
            raise TransientError(
                f"partition {self._name} changed while it was being read (Customer Insights is writing a new "
                "export); retry the run after the export finishes"
            ) from None
        except ResourceNotFoundError:
            raise SourceError(
                f"partition {self._name} disappeared while the export was being read; re-run after the Customer "
                "Insights export finishes"
            ) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"reading partition {self._name} failed: {exc}") from None
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise SourceError(
                    f"access to partition {self._name} was denied ({error_code(exc) or 403}); give the function "
                    "app's identity the 'Storage Blob Data Reader' role on the export's storage account"
                ) from None
            raise TransientError(f"reading partition {self._name} failed: {exc.message}") from None
