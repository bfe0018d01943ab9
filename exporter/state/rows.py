"""Contacts as parallel arrays: key, fingerprint, list-status flag (a ``ListStatus``) and email.

For a subscribed contact the fingerprint is a digest of what ActiveCampaign received; for one this export
unsubscribed it is when that unsubscribe was confirmed (Unix seconds; 0 when unknown, as in older states)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .emails import PackedEmails


@dataclass
class StateRows:
    """Contacts as parallel arrays (what the journal carries and a run confirms)."""

    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    fingerprints: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    flags: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))
    emails: PackedEmails = field(default_factory=PackedEmails)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, keys: Iterable[int], fingerprints: Iterable[int], flags: Iterable[int], emails: list[str]) -> StateRows:
        return cls(np.fromiter(keys, np.uint64), np.fromiter(fingerprints, np.uint64),
                   np.fromiter(flags, np.uint8), PackedEmails.of(emails))

    @classmethod
    def concat(cls, parts: list[StateRows]) -> StateRows:
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.keys for p in parts]), np.concatenate([p.fingerprints for p in parts]),
                   np.concatenate([p.flags for p in parts]), PackedEmails.concat([p.emails for p in parts]))

    def take(self, indexes: np.ndarray) -> StateRows:
        return StateRows(self.keys[indexes], self.fingerprints[indexes], self.flags[indexes], self.emails.take(indexes))

    def without_emails(self, failed: set[str]) -> StateRows:
        if not failed:
            return self
        keep = np.array([i for i, e in enumerate(self.emails.tolist()) if e not in failed], np.int64)
        return self.take(keep)

    def latest_per_key(self) -> StateRows:
        """One row per key, the last one given, sorted by key."""
        _, first_in_reversed = np.unique(self.keys[::-1], return_index=True)
        return self.take(len(self) - 1 - first_in_reversed)
