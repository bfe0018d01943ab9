"""An export's state in blob storage: load, save, lock and journal."""
from __future__ import annotations

from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient

from ..mapping import email_key
from ..settings import STATE_CONTAINER
from .journal import Journal, JournalReplay, replay_journal
from .lock import ExportLock
from .state_file import StateFileError, encode_state_pieces, read_state
from .table import SyncState


@dataclass
class LoadedState:
    """A loaded sync state with the ETag to save it against, and the previous run's journal if it left one."""

    state: SyncState
    etag: str | None
    problem: str | None = None  # why the stored state was unreadable (then the run is a full one)
    journal: JournalReplay | None = None


class StateStore:
    """Each export's lock, sync state and journal, as blobs under ``<export>/`` in the state container."""

    def __init__(self, service: BlobServiceClient) -> None:
        self.container = service.get_container_client(STATE_CONTAINER)

    def ensure_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def lock(self, export: str, run_id: str, wait_seconds: float = 0.0) -> ExportLock:
        self.ensure_container()
        lock = ExportLock(self.container, export, run_id)
        lock.wait_seconds = wait_seconds
        return lock

    def load(self, export: str, run_id: str, read_only: bool = False) -> LoadedState:
        """The stored state, or an empty one with ``problem`` set when it is missing or unreadable.

        An unreadable state is copied aside (unless ``read_only``) so the next run does not trip over it again.
        """
        blob = self.container.get_blob_client(f"{export}/state.bin")
        try:
            download = blob.download_blob()
            etag = download.properties.etag
        except ResourceNotFoundError:
            loaded = LoadedState(SyncState(), None, None)
        except HttpResponseError as exc:
            if not (read_only and exc.status_code == 404):
                raise
            loaded = LoadedState(SyncState(), None, None)
        else:
            try:
                # read as it downloads, 4 MiB at a time; a file without checksums has its keys checked
                loaded = LoadedState(read_state(download, key_of=email_key), etag)
            except StateFileError as exc:  # the decoder's one error for a file it cannot read
                aside = f"{export}/state.bin.unreadable-{run_id}"
                if not read_only:
                    self.container.get_blob_client(aside).start_copy_from_url(blob.url)
                loaded = LoadedState(SyncState(), etag, f"the sync state {STATE_CONTAINER}/{export}/state.bin is "
                                     f"unreadable ({exc}); it was kept as {aside} and this run sends every contact")
        if not read_only:
            loaded.journal = self._read_journal(export)
        return loaded

    def _read_journal(self, export: str) -> JournalReplay | None:
        try:
            data = self.container.get_blob_client(f"{export}/journal").download_blob().readall()
        except ResourceNotFoundError:
            return None
        return replay_journal(data)

    def save(self, export: str, state: SyncState, etag: str | None) -> str:
        """Replace the state atomically: fails (ResourceModifiedError) if someone else replaced it meanwhile."""
        blob = self.container.get_blob_client(f"{export}/state.bin")
        # Uploaded in blocks as it is encoded; the blob changes only when the block list is committed, and only if
        # the etag still matches.
        data = encode_state_pieces(state)
        if etag:
            result = blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
        else:
            try:
                result = blob.upload_blob(data, overwrite=False)
            except ResourceExistsError as exc:
                raise ResourceModifiedError("the sync state appeared while this run was going") from exc
        return result["etag"]

    def journal(self, export: str, bulk_rate: float) -> Journal:
        """A journal that groups about a quarter second of submitted batches per write (one at AC's real pace)."""
        return Journal(self.container, export, max_pending=max(1, min(32, round(bulk_rate * 0.25)))).start()

    def drop_journal(self, export: str) -> None:
        try:
            self.container.get_blob_client(f"{export}/journal").delete_blob()
        except ResourceNotFoundError:
            pass
