"""Contacts grouped into bulk import requests, by count (≤ 250) and encoded size (< 400,000 bytes)."""
from __future__ import annotations

from dataclasses import dataclass

from ..activecampaign import BODY_OVERHEAD, MAX_CONTACTS_PER_REQUEST, MAX_REQUEST_BYTES
from ..mapping import Contact

# Clearly under ActiveCampaign's request size limit.
MAX_BATCH_BYTES = MAX_REQUEST_BYTES - 10_000


@dataclass(slots=True)
class Batch:
    """Contacts for one bulk import request."""

    contacts: list[Contact]

    @property
    def emails(self) -> list[str]:
        return [c.email for c in self.contacts]

    @property
    def encoded(self) -> list[bytes]:
        return [c.encoded for c in self.contacts]

    def subset(self, indexes: list[int]) -> Batch:
        return Batch([self.contacts[i] for i in indexes])


class Batcher:
    """Collects contacts and hands back a batch each time one is full."""

    def __init__(self, max_count: int = MAX_CONTACTS_PER_REQUEST, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._contacts: list[Contact] = []
        self._bytes = BODY_OVERHEAD

    def add(self, contact: Contact) -> Batch | None:
        """Add a contact; returns a batch when one is full."""
        size = len(contact.encoded) + 1
        ready = None
        if self._contacts and self._bytes + size > self._max_bytes:
            ready = self.flush()
        self._contacts.append(contact)
        self._bytes += size
        if ready is None and len(self._contacts) >= self._max_count:
            ready = self.flush()
        return ready

    def flush(self) -> Batch | None:
        """The contacts collected so far as a batch (None when there are none)."""
        if not self._contacts:
            return None
        batch = Batch(self._contacts)
        self._contacts, self._bytes = [], BODY_OVERHEAD
        return batch
