"""The diff stage: which contacts differ from what ActiveCampaign confirmed last time, on whole arrays."""
from __future__ import annotations

import hashlib

import numpy as np

from ..list_status import ListStatus
from ..mapping import Contact, Mapper, Rejection
from ..state import SeenKeys, SyncState

DIFF_CHUNK = 2048  # contacts compared at a time


def fingerprints(contacts: list[Contact]) -> np.ndarray:
    """A 64-bit digest of exactly what ActiveCampaign receives for each contact (values, tags, list); never 0,
    which means "nothing of it is on the list".

    The digests are joined and read as one array, which is cheaper than an int per contact."""
    blake2b = hashlib.blake2b
    digests = np.frombuffer(b"".join([blake2b(c.encoded, digest_size=8).digest() for c in contacts]), ">u8")
    digests = digests.astype(np.uint64)
    digests[digests == 0] = 1
    return digests


class Diff:
    """Compares contacts with the sync state, chunk by chunk, and remembers every key it has seen (mirror mode
    needs them to find who left, and a key seen twice is a duplicate row)."""

    def __init__(self, state: SyncState, full_refresh: bool = False) -> None:
        self._state = state
        self._full_refresh = full_refresh
        self.seen = SeenKeys()
        self.unchanged = 0

    def changes(self, chunk: list[Contact]) -> tuple[list[Contact], list[Rejection]]:
        """The contacts of ``chunk`` to send (new or changed, with their fingerprint and, for one this export
        took off the list, when it did) and the duplicates to reject. Only those get a Python step each."""
        keys = np.fromiter((c.key for c in chunk), np.uint64, len(chunk))
        first = self.seen.add_new(keys)
        old_fps, old_flags = self._state.lookup(keys)
        fps = fingerprints(chunk)
        unchanged = first & (old_flags == ListStatus.SUBSCRIBED) & (old_fps == fps)
        if self._full_refresh:
            unchanged[:] = False
        self.unchanged += int(np.count_nonzero(unchanged))
        duplicates = [Mapper.duplicate(chunk[i]) for i in np.flatnonzero(~first).tolist()]
        changed = first & ~unchanged
        # For a contact this export unsubscribed, the state's fingerprint column holds when that was confirmed.
        unsubscribed_at = np.where(old_flags[changed] == ListStatus.UNSUBSCRIBED, old_fps[changed], 0)
        to_send = []
        for i, fp, at in zip(np.flatnonzero(changed).tolist(), fps[changed].tolist(), unsubscribed_at.tolist()):
            contact = chunk[i]
            contact.fingerprint = fp
            contact.unsubscribed_at = at
            to_send.append(contact)
        return to_send, duplicates
