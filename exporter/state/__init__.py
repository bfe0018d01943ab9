"""Per-export state in the app's storage: the run lock, the sync state and the resume journal.

- ``<export>/lock``: a blob lease; one run per export at a time; a crashed host's lease expires by itself.
- ``<export>/state.bin``: for every contact this export put on (or took off) the list, a 64-bit key of the
  email, a 64-bit fingerprint of what ActiveCampaign confirmed, a flag, and the email (needed to unsubscribe
  leavers). Numpy arrays sorted by key plus zlib-compressed email chunks: ~30 bytes a contact. Replaced
  atomically with an ETag condition.
- ``<export>/journal``: an append blob written during a run: batches submitted (with their contacts) and
  batches confirmed. A run that dies leaves it behind; the next run replays it, asks ActiveCampaign about
  batches that were in flight, folds everything confirmed into the state and only then starts sending.

Modules: ``lock`` (the run lock), ``seen_keys`` (keys seen in this run), ``emails`` (emails packed in one
buffer, and stored compressed), ``rows`` (contacts as parallel arrays), ``table`` (the sync state in memory),
``state_file`` (the file format, every version; version 5 carries checksums), ``journal`` (records, replay,
writer) and ``store`` (all of it in blob storage).
"""
from .emails import EmailStore, PackedEmails
from .journal import (
    Journal,
    JournalReplay,
    encode_confirmed,
    encode_submitted,
    replay_journal,
)
from .lock import LEASE_SECONDS, ExportLock, lock_blob_name
from .rows import StateRows
from .seen_keys import SeenKeys
from .state_file import (
    StateFileError,
    decode_rows,
    decode_state,
    encode_rows,
    encode_state,
    encode_state_pieces,
    read_state,
)
from .store import LoadedState, StateStore
from .table import SyncState

__all__ = [
    "LEASE_SECONDS",
    "EmailStore",
    "ExportLock",
    "Journal",
    "JournalReplay",
    "LoadedState",
    "PackedEmails",
    "SeenKeys",
    "StateFileError",
    "StateRows",
    "StateStore",
    "SyncState",
    "decode_rows",
    "decode_state",
    "encode_confirmed",
    "encode_rows",
    "encode_state",
    "encode_state_pieces",
    "encode_submitted",
    "lock_blob_name",
    "read_state",
    "replay_journal",
]
