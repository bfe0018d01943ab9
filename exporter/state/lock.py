"""The run lock: one run per export at a time, held as a renewed lease on the blob ``<export>/lock``."""
from __future__ import annotations

import logging
import threading
import time
from typing import Self

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from ..errors import LockLost, RunLocked

log = logging.getLogger(__name__)

LEASE_SECONDS = 15  # the shortest lease Azure allows: a crashed run's lock frees quickly
RENEW_EVERY = LEASE_SECONDS / 3
# The run counts its lock as lost once this long has passed since the last renewal that succeeded began: the
# lease may expire before another renewal could reach storage.
HELD_FOR_SURE = LEASE_SECONDS - 2
# A renewal, or the release, tries once and waits this long at most (the SDK's own retries take minutes).
_ONE_TRY = {"retry_total": 0, "connection_timeout": 3, "read_timeout": RENEW_EVERY}


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
        self._renewed_at = 0.0  # when the last renewal that succeeded was sent (monotonic)
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
        self._renewed_at = time.monotonic()
        self._blob.set_blob_metadata({"runid": self._run_id}, lease=self._lease)
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self._export}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            sent = time.monotonic()
            try:
                self._lease.renew(**_ONE_TRY)  # type: ignore[union-attr]
            except AzureError as exc:  # any failure: storage unreachable, the lease taken, a timeout
                log.error("could not renew the run lock of %s: %s", self._export, type(exc).__name__)
            else:
                self._renewed_at = sent

    def check(self) -> None:
        """Raises LockLost when the lock may no longer be held (renewals have failed for too long)."""
        unrenewed = time.monotonic() - self._renewed_at
        if self._lease is not None and unrenewed > HELD_FOR_SURE:
            raise LockLost(f"the run lock of export {self._export!r} could not be renewed for {unrenewed:.0f} s "
                           "(is the app's storage reachable?); the run stopped sending so that it never runs alongside "
                           "another. The next run resumes where it left off")

    def release(self) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join(timeout=5)
        if self._lease:
            try:
                self._lease.release(**_ONE_TRY)
            except AzureError:  # unreachable or already expired: the lease frees itself within LEASE_SECONDS
                pass
            self._lease = None

    def __enter__(self) -> Self:
        return self.acquire(self.wait_seconds)

    def __exit__(self, *exc: object) -> None:
        self.release()
