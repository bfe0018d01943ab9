"""The run lock: one run per export at a time, held as a renewed lease on the blob ``<export>/lock``."""
from __future__ import annotations

import logging
import threading
import time
from typing import Self

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from ..errors import RunLocked

log = logging.getLogger(__name__)

LEASE_SECONDS = 15  # the shortest lease Azure allows: a crashed run's lock frees quickly


def lock_blob_name(export: str) -> str:
    """The blob whose lease is an export's run lock (in the state container)."""
    return f"{export}/lock"


class ExportLock:
    """A renewed blob lease per export. A second run fails fast with RunLocked naming the holder."""

    def __init__(self, container: ContainerClient, export: str, run_id: str) -> None:
        self._blob = container.get_blob_client(lock_blob_name(export))
        self._export = export
        self._run_id = run_id
        self._lease: BlobLeaseClient | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.wait_seconds = 0.0

    def acquire(self, wait_seconds: float = 0.0) -> Self:
        """Take the lock, waiting up to ``wait_seconds`` (long enough for a crashed run's lease to expire)."""
        try:
            self._blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        deadline = time.monotonic() + wait_seconds
        while self._lease is None:
            try:
                self._lease = self._blob.acquire_lease(lease_duration=LEASE_SECONDS)
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                if time.monotonic() >= deadline:
                    holder = (self._blob.get_blob_properties().metadata or {}).get("runid", "another run")
                    raise RunLocked(f"export {self._export!r} is already running (run {holder}); this run was "
                                    f"skipped. A crashed run's lock expires within {LEASE_SECONDS} s") from None
                time.sleep(1.0)
        self._blob.set_blob_metadata({"runid": self._run_id}, lease=self._lease)
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self._export}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                self._lease.renew()  # type: ignore[union-attr]
            except HttpResponseError as exc:  # lost the lease: the next renewal or release will tell
                log.error("could not renew the run lock of %s: %s", self._export, exc.message)

    def release(self) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join(timeout=5)
        if self._lease:
            try:
                self._lease.release()
            except HttpResponseError:
                pass
            self._lease = None

    def __enter__(self) -> Self:
        return self.acquire(self.wait_seconds)

    def __exit__(self, *exc: object) -> None:
        self.release()
