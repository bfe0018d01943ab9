"""One ActiveCampaign account's data: contacts, lists, tags, list statuses and queued bulk imports.

Not thread-safe: the account serialises every call with its lock. A million contacts must fit in a few hundred
megabytes and stay cheap for Python's cyclic GC, so each contact is stored as a plain tuple of strings and ints
(custom fields as a flat tuple, tags as a shared tuple of tag ids): the GC stops tracking such tuples after their
first collection, where a million tracked objects would be rescanned over and over. Statuses live in one
``{contact id: status}`` dict per list. Readers get a ``Contact`` named tuple.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson

from .bulk import InvalidContact, field_pairs, list_id_of, tag_names, text_of

SUBSCRIBED = 1
# Why an applied import skipped a contact, in import/info "failureReasons". The exclusion text is ActiveCampaign's
# (its import reports); the other one is the emulator's own.
EXCLUDED_REASON = "Row skipped - It is on exclusion list"
FAILED_REASON = "Row skipped - Contact could not be imported"
UNSUBSCRIBED = 2
_TAG_SET_CACHE_SIZE = 10_000
# ActiveCampaign writes list membership dates in the account's time zone, with its UTC offset.
ACCOUNT_TIMEZONE = timezone(timedelta(hours=-5))
# What a person's own unsubscribe leaves on the membership (a campaign's unsubscribe link); an API or admin
# unsubscribe leaves these empty.
OWN_UNSUBSCRIBE = {"unsubreason": "I no longer want to receive these emails", "campaign": "7", "message": "12",
                   "ip4Unsub": "203.0.113.9"}
# Names and field values repeat a lot (first names, cities, tiers): keep one copy of each, up to this many.
_SHARED_STRINGS = 300_000


class Contact(NamedTuple):
    id: int
    email: str
    first_name: str
    last_name: str
    phone: str
    fields: tuple  # flat: (field_id, value, field_id, value, ...)
    tags: tuple[int, ...]
    account: str  # the account (company) name from customer_acct_name; "" when none

    def field_values(self) -> dict[int, str]:
        return _field_dict(self.fields)


# Positions in a stored record, which is a plain tuple laid out like Contact.
_ID, _EMAIL, _FIRST, _LAST, _PHONE, _FIELDS, _TAGS, _ACCOUNT = range(8)


def _field_dict(flat: tuple) -> dict[int, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _flat(values: dict[int, str]) -> tuple:
    return tuple([item for pair in values.items() for item in pair])


@dataclass
class ImportBatch:
    id: str
    accepted_at: float
    due_at: float
    # The request body as sent, parsed again when applied: holding a few hundred thousand parsed dicts until
    # then would cost the cyclic GC far more than a second parse costs.
    body: bytes | None  # released once applied
    emails: list[str] | None  # the contacts' lower-cased emails, in order
    items: list[Any] | None = None  # the parsed contacts, kept only for an import applied at once
    exclude_automations: bool = False  # whether the import asked not to start the account's automations
    applied: bool = False
    success: list[int] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)
    failure_reasons: list[dict[str, str]] = field(default_factory=list)  # {"email", "failureReason"} per failure


    def fail(self, email: str, reason: str) -> None:
        self.failure.append(email)
        self.failure_reasons.append({"email": email, "failureReason": reason})


class Store:
    def __init__(self, lists: dict[int, str]) -> None:
        self.lists: dict[int, str] = {}
        self._records: list[tuple | None] = [None]  # index is the contact id; ids start at 1
        self._ids: dict[str, int] = {}  # lower-cased email -> contact id
        self._tag_ids: dict[str, int] = {}  # lower-cased name -> id
        self._tag_names: list[str] = [""]  # index is the tag id
        self._tag_sets: dict[tuple[str, ...], tuple[int, ...]] = {}  # shared tuples: most contacts have the same tags
        self._strings: dict[str, str] = {}
        self._statuses: dict[int, dict[int, int]] = {}  # list id -> {contact id: status}
        self._status_counts: dict[int, list[int]] = {}  # list id -> [unused, subscribed, unsubscribed]
        # (list id, contact id) -> what an unsubscribe left on the membership: udate and, for a person's own
        # unsubscribe, its reason and campaign. Kept only while unsubscribed (few contacts, unlike statuses).
        self._unsubscribes: dict[tuple[int, int], dict[str, str]] = {}
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

    def set_status(self, contact_id: int, list_id: int, status: int, details: dict[str, str] | None = None) -> None:
        """Change a list membership. An unsubscribe records when (``udate``) and ``details`` (a person's own
        unsubscribe: reason, campaign, message); unsubscribing someone already unsubscribed changes nothing."""
        statuses = self._statuses[list_id]
        old = statuses.get(contact_id)
        if old == status:
            return
        if status == UNSUBSCRIBED:
            udate = datetime.now(UTC).astimezone(ACCOUNT_TIMEZONE).isoformat(timespec="seconds")
            self._unsubscribes[(list_id, contact_id)] = {"udate": udate, **(details or {})}
        else:
            self._unsubscribes.pop((list_id, contact_id), None)
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

    def memberships(self, contact_id: int) -> list[dict[str, str]]:
        """The contact's list memberships as ``contactLists`` shows them (unset fields as ActiveCampaign leaves
        them: null dates, "0" campaign and message, empty reason)."""
        out = []
        for list_id, status in self.statuses_of(contact_id).items():
            unsubscribe = self._unsubscribes.get((list_id, contact_id), {})
            out.append({"contact": str(contact_id), "list": str(list_id), "status": str(status),
                        "id": f"{list_id}-{contact_id}", "sdate": None, "udate": unsubscribe.get("udate"),
                        "unsubreason": unsubscribe.get("unsubreason", ""), "campaign": unsubscribe.get("campaign", "0"),
                        "message": unsubscribe.get("message", "0"), "ip4Unsub": unsubscribe.get("ip4Unsub", "0"),
                        "sourceid": "0"})
        return out

    def count_on_list(self, list_id: int, status: int | None) -> int:
        counts = self._status_counts[list_id]
        return counts[SUBSCRIBED] + counts[UNSUBSCRIBED] if status is None else counts[status]

    def emails_on_list(self, list_id: int, status: int) -> set[str]:
        records = self._records
        return {records[cid][_EMAIL] for cid, s in self._statuses.get(list_id, {}).items() if s == status}

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
        return len(self._ids)

    def by_email(self, email: str) -> Contact | None:
        contact_id = self._ids.get(email.lower())
        return None if contact_id is None else Contact._make(self._records[contact_id])

    def by_id(self, contact_id: int) -> Contact | None:
        if 0 < contact_id < len(self._records):
            record = self._records[contact_id]
            return None if record is None else Contact._make(record)
        return None

    def all_contacts(self) -> Iterator[Contact]:
        return (Contact._make(record) for record in self._records if record is not None)

    def ids_above(self, id_greater: int) -> range:
        return range(max(id_greater, 0) + 1, len(self._records))

    def upsert(self, email: str, first_name: str | None = None, last_name: str | None = None,
               phone: str | None = None, fields: Iterable[tuple[int, str]] = (),
               tags: Iterable[str] = (), account: str | None = None) -> tuple[Contact, bool]:
        """Create or update the contact with this (lower-cased) email; None/empty values leave data as it is."""
        tag_ids = tuple(dict.fromkeys(self.tag_id(name) for name in tags))
        contact_id, created = self._upsert(email, first_name, last_name, phone, list(fields), tag_ids, account)
        return Contact._make(self._records[contact_id]), created

    def _upsert(self, email: str, first: str | None, last: str | None, phone: str | None,
                pairs: list[tuple[int, str]] | tuple, tag_ids: tuple[int, ...],
                account: str | None = None) -> tuple[int, bool]:
        shared = self._shared
        contact_id = self._ids.get(email)
        if contact_id is None:
            contact_id = len(self._records)
            self._records.append((contact_id, email, shared(first) if first else "", shared(last) if last else "",
                                  phone or "", tuple([x for fid, value in pairs for x in (fid, shared(value))]),
                                  tag_ids, shared(account) if account else ""))
            self._ids[email] = contact_id
            return contact_id, True
        old = self._records[contact_id]
        fields = old[_FIELDS]
        if pairs:
            values = _field_dict(fields)
            values.update((fid, shared(value)) for fid, value in pairs)
            fields = _flat(values)
        tags = old[_TAGS]
        if tag_ids:
            tags = (tags + tuple(t for t in tag_ids if t not in tags)) if tags else tag_ids
        self._records[contact_id] = (contact_id, email, shared(first) if first else old[_FIRST],
                                     shared(last) if last else old[_LAST], phone or old[_PHONE], fields, tags,
                                     shared(account) if account else old[_ACCOUNT])
        return contact_id, False

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
            "account": contact.account,
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

    def apply_due(self, now: float, fail_emails: frozenset[str], limit: int | None = None,
                  through: ImportBatch | None = None, excluded: frozenset[str] = frozenset()) -> int:
        """Apply queued imports whose time has come, oldest first: at most ``limit`` of them, but always every
        one up to ``through`` when that one is due. Returns how many were applied."""
        applied = 0
        pending = self._pending
        must = through is not None and not through.applied and through.due_at <= now
        while pending and pending[0].due_at <= now and (must or limit is None or applied < limit):
            batch = pending.popleft()
            self._apply(batch, fail_emails, excluded)
            applied += 1
            must = must and batch is not through
        return applied

    def _apply(self, batch: ImportBatch, fail_emails: frozenset[str], excluded: frozenset[str]) -> None:
        items = batch.items if batch.items is not None else orjson.loads(batch.body)["contacts"] if batch.body else ()
        for item, email in zip(items, batch.emails or ()):
            if email in excluded:
                batch.fail(email, EXCLUDED_REASON)
                continue
            if email in fail_emails:
                batch.fail(email, FAILED_REASON)
                continue
            try:
                batch.success.append(self._apply_contact(item, email))
            except InvalidContact as exc:
                batch.fail(email, f"Row skipped - {exc}")
        batch.body = batch.emails = batch.items = None
        batch.applied = True

    def _apply_contact(self, item: dict[str, Any], email: str) -> int:
        """Upsert one bulk-imported contact and return its id; reads everything first so a bad value changes
        nothing."""
        get = item.get
        first, last, phone, account = get("first_name"), get("last_name"), get("phone"), get("customer_acct_name")
        if first is not None and type(first) is not str:
            first = text_of(first, "first_name")
        if last is not None and type(last) is not str:
            last = text_of(last, "last_name")
        if phone is not None and type(phone) is not str:
            phone = text_of(phone, "phone")
        if account is not None and type(account) is not str:
            account = text_of(account, "customer_acct_name")
        account = account.strip() if account else account
        fields, tags = get("fields"), get("tags")
        pairs = field_pairs(fields) if fields else ()
        tag_ids = self._tag_set(tags) if tags else ()
        subscribe, unsubscribe = get("subscribe"), get("unsubscribe")
        subscribe = [list_id_of(entry["listid"]) for entry in subscribe] if subscribe else ()
        unsubscribe = [list_id_of(entry["listid"]) for entry in unsubscribe] if unsubscribe else ()

        contact_id, _ = self._upsert(email, first, last, phone, pairs, tag_ids, account)
        for list_id in subscribe:
            # Only contacts new to the list are subscribed: bulk import never re-subscribes someone who
            # unsubscribed (only contactLists does), and a subscribed contact stays as it is.
            if self._statuses[list_id].get(contact_id) is None:
                self.set_status(contact_id, list_id, SUBSCRIBED)
        for list_id in unsubscribe:
            self.set_status(contact_id, list_id, UNSUBSCRIBED)
        return contact_id

    def _shared(self, text: str) -> str:
        strings = self._strings
        found = strings.get(text)
        if found is not None:
            return found
        if len(strings) < _SHARED_STRINGS:
            strings[text] = text
        return text

    def _tag_set(self, tags: Any) -> tuple[int, ...]:
        key = tuple(tags) if isinstance(tags, list) else tags
        try:
            cached = self._tag_sets.get(key)
        except TypeError as exc:  # an unhashable tag
            raise InvalidContact("invalid tags") from exc
        if cached is None:
            cached = tuple(dict.fromkeys(self.tag_id(name) for name in tag_names(tags)))
            if len(self._tag_sets) < _TAG_SET_CACHE_SIZE:
                self._tag_sets[key] = cached
        return cached
