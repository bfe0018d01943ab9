"""One ActiveCampaign account's data: contacts, lists, tags, list statuses and queued bulk imports.

Not thread-safe: the account serialises every call with its lock. Contacts are stored compactly (a slotted
object per contact, custom fields as a flat tuple, tags as tag ids, statuses in one dict per list) so a million
of them fit in a few hundred megabytes.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple

SUBSCRIBED = 1
UNSUBSCRIBED = 2

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}"
)


def is_valid_email(email: str) -> bool:
    """AC-like syntax check: local@domain.tld in ASCII, no spaces, no empty dot-separated parts."""
    return len(email) <= 254 and _EMAIL.fullmatch(email) is not None and email.index("@") <= 64


def normalise_email(email: str) -> str:
    # Reuse the same string object when it is already lower-case: the log and the store then share it.
    return email if email.islower() else email.lower()


class Contact:
    __slots__ = ("id", "email", "first_name", "last_name", "phone", "fields", "tags")

    def __init__(self, contact_id: int, email: str) -> None:
        self.id = contact_id
        self.email = email
        self.first_name = ""
        self.last_name = ""
        self.phone = ""
        self.fields: tuple = ()  # flat (field_id, value, field_id, value, ...)
        self.tags: tuple[int, ...] = ()

    def field_values(self) -> dict[int, str]:
        values = self.fields
        return {values[i]: values[i + 1] for i in range(0, len(values), 2)}


class ImportContact(NamedTuple):
    """One contact of an accepted bulk import, parsed and waiting to be applied."""

    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    fields: tuple[tuple[int, str], ...]
    tags: tuple[str, ...]
    subscribe: tuple[int, ...]
    unsubscribe: tuple[int, ...]


@dataclass
class ImportBatch:
    id: str
    accepted_at: float
    due_at: float
    contacts: list[ImportContact] | None  # released once applied
    applied: bool = False
    success: list[int] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)


class Store:
    def __init__(self, lists: dict[int, str]) -> None:
        self.lists: dict[int, str] = {}
        self._contacts: list[Contact | None] = [None]  # index is the contact id; ids start at 1
        self._by_email: dict[str, Contact] = {}
        self._tag_ids: dict[str, int] = {}  # lower-cased name -> id
        self._tag_names: list[str] = [""]  # index is the tag id
        self._statuses: dict[int, dict[int, int]] = {}  # list id -> {contact id: status}
        self._status_counts: dict[int, list[int]] = {}  # list id -> [unused, subscribed, unsubscribed]
        self._list_versions: dict[int, int] = {}
        self._sorted_ids: dict[tuple[int, int | None], tuple[int, list[int]]] = {}
        self._batches: dict[str, ImportBatch] = {}
        self._pending: deque[ImportBatch] = deque()
        for list_id, name in lists.items():
            self.add_list(name, list_id)

    # --- lists -------------------------------------------------------------------------------------------

    def add_list(self, name: str, list_id: int | None = None) -> int:
        if list_id is None:
            list_id = max(self.lists, default=0) + 1
        self.lists[list_id] = name
        self._statuses.setdefault(list_id, {})
        self._status_counts.setdefault(list_id, [0, 0, 0])
        self._list_versions.setdefault(list_id, 0)
        return list_id

    def set_status(self, contact_id: int, list_id: int, status: int) -> None:
        statuses = self._statuses[list_id]
        old = statuses.get(contact_id)
        if old == status:
            return
        counts = self._status_counts[list_id]
        if old is not None:
            counts[old] -= 1
        counts[status] += 1
        statuses[contact_id] = status
        self._list_versions[list_id] += 1

    def status(self, contact_id: int, list_id: int) -> int | None:
        statuses = self._statuses.get(list_id)
        return None if statuses is None else statuses.get(contact_id)

    def statuses_of(self, contact_id: int) -> dict[int, int]:
        return {list_id: s[contact_id] for list_id, s in self._statuses.items() if contact_id in s}

    def count_on_list(self, list_id: int, status: int | None) -> int:
        counts = self._status_counts[list_id]
        return counts[SUBSCRIBED] + counts[UNSUBSCRIBED] if status is None else counts[status]

    def emails_on_list(self, list_id: int, status: int) -> set[str]:
        contacts = self._contacts
        return {contacts[cid].email for cid, s in self._statuses.get(list_id, {}).items() if s == status}

    def ids_on_list(self, list_id: int, status: int | None) -> list[int]:
        """Sorted ids of the list's contacts (with that status); cached until the list changes, so paging is cheap."""
        version = self._list_versions[list_id]
        cached = self._sorted_ids.get((list_id, status))
        if cached is not None and cached[0] == version:
            return cached[1]
        statuses = self._statuses[list_id]
        ids = sorted(statuses if status is None else (cid for cid, s in statuses.items() if s == status))
        self._sorted_ids[(list_id, status)] = (version, ids)
        return ids

    # --- contacts ----------------------------------------------------------------------------------------

    @property
    def contact_count(self) -> int:
        return len(self._by_email)

    @property
    def max_id(self) -> int:
        return len(self._contacts) - 1

    def by_email(self, email: str) -> Contact | None:
        return self._by_email.get(email.lower())

    def by_id(self, contact_id: int) -> Contact | None:
        if 0 < contact_id < len(self._contacts):
            return self._contacts[contact_id]
        return None

    def all_contacts(self) -> Iterator[Contact]:
        return (c for c in self._contacts if c is not None)

    def ids_above(self, id_greater: int) -> range:
        return range(max(id_greater, 0) + 1, len(self._contacts))

    def upsert(self, email: str, first_name: str | None = None, last_name: str | None = None,
               phone: str | None = None, fields: Iterable[tuple[int, str]] = (),
               tags: Iterable[str] = ()) -> tuple[Contact, bool]:
        """Create or update the contact with this (lower-cased) email; None/empty values leave data as it is."""
        contact = self._by_email.get(email)
        created = contact is None
        if contact is None:
            contact = Contact(len(self._contacts), email)
            self._contacts.append(contact)
            self._by_email[email] = contact
        if first_name:
            contact.first_name = first_name
        if last_name:
            contact.last_name = last_name
        if phone:
            contact.phone = phone
        if fields:
            self._set_fields(contact, fields)
        if tags:
            self._add_tags(contact, tags)
        return contact, created

    def _set_fields(self, contact: Contact, fields: Iterable[tuple[int, str]]) -> None:
        if not contact.fields:
            contact.fields = tuple(item for pair in fields for item in pair)
            return
        values = contact.field_values()
        values.update(fields)
        contact.fields = tuple(item for pair in values.items() for item in pair)

    def _add_tags(self, contact: Contact, names: Iterable[str]) -> None:
        tags = contact.tags
        for name in names:
            tag_id = self.tag_id(name)
            if tag_id not in tags:
                tags = tags + (tag_id,)
        contact.tags = tags

    def tag_id(self, name: str) -> int:
        key = name.lower()
        tag_id = self._tag_ids.get(key)
        if tag_id is None:
            tag_id = len(self._tag_names)
            self._tag_ids[key] = tag_id
            self._tag_names.append(name)
        return tag_id

    def tag_name(self, tag_id: int) -> str:
        return self._tag_names[tag_id]

    def view(self, contact: Contact) -> dict[str, Any]:
        """The inspection form of a contact (what tests assert on)."""
        return {
            "id": str(contact.id),
            "email": contact.email,
            "firstName": contact.first_name,
            "lastName": contact.last_name,
            "phone": contact.phone,
            "fields": {str(k): v for k, v in contact.field_values().items()},
            "tags": [self._tag_names[t] for t in contact.tags],
            "lists": self.statuses_of(contact.id),
        }

    # --- bulk imports ------------------------------------------------------------------------------------

    def queue_import(self, batch: ImportBatch) -> None:
        self._batches[batch.id] = batch
        self._pending.append(batch)

    def batch(self, batch_id: str) -> ImportBatch | None:
        return self._batches.get(batch_id)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def apply_due(self, now: float, fail_emails: frozenset[str]) -> int:
        """Apply every queued import whose time has come, oldest first. Returns how many were applied."""
        applied = 0
        pending = self._pending
        while pending and pending[0].due_at <= now:
            self._apply(pending.popleft(), fail_emails)
            applied += 1
        return applied

    def _apply(self, batch: ImportBatch, fail_emails: frozenset[str]) -> None:
        for item in batch.contacts or ():
            if item.email in fail_emails:
                batch.failure.append(item.email)
                continue
            contact, _ = self.upsert(item.email, item.first_name, item.last_name, item.phone, item.fields, item.tags)
            for list_id in item.subscribe:
                # Bulk import never re-subscribes someone who unsubscribed; only contactLists does.
                if self.status(contact.id, list_id) != UNSUBSCRIBED:
                    self.set_status(contact.id, list_id, SUBSCRIBED)
            for list_id in item.unsubscribe:
                self.set_status(contact.id, list_id, UNSUBSCRIBED)
            batch.success.append(contact.id)
        batch.contacts = None
        batch.applied = True
