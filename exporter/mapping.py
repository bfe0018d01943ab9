"""Mapping: a raw CSV row → an ActiveCampaign contact, or a rejection with a reason.

Emails are trimmed and lower-cased (AC matches contacts case-insensitively) and checked for syntax (no DNS
lookups). Duplicates are found later, in bulk, by the diff stage: the first row with an email wins.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from email_validator import EmailNotValidError, validate_email

from .errors import SourceError
from .list_status import ListStatus
from .settings import Mapping


class Reason(str, Enum):
    MISSING_EMAIL = "missing_email"
    INVALID_EMAIL = "invalid_email"
    DUPLICATE_EMAIL = "duplicate_email"
    MALFORMED_ROW = "malformed_row"
    REJECTED_BY_ACTIVECAMPAIGN = "rejected_by_activecampaign"
    EXCLUDED_BY_ACTIVECAMPAIGN = "excluded_by_activecampaign"  # on the account's exclusion list
    NOT_CONFIRMED = "not_confirmed"
    OPTED_OUT = "opted_out"  # unsubscribed from the list by other means than this export: never subscribed again




@dataclass(slots=True)
class Contact:
    """One contact for bulk import. ``key`` identifies the email, ``encoded`` is the JSON object AC receives.

    ``fingerprint`` is filled in by the diff stage; ``list_status`` is what the import does to the contact's
    list membership. ``unsubscribed_at`` is set for a contact this export once took off the list: when that
    unsubscribe was confirmed (Unix seconds; 0 if unknown). ``resubscribe`` marks one of them the opt-out check
    cleared for subscribing again (bulk import does not, so it takes a separate call once confirmed).
    """

    key: int
    email: str
    customer_id: str
    encoded: bytes
    fingerprint: int = 0
    list_status: ListStatus = ListStatus.SUBSCRIBED
    unsubscribed_at: int = 0
    resubscribe: bool = False
    origin: tuple[str, int, int] | None = None  # (partition, record, line), for reporting a duplicate

    @property
    def payload(self) -> dict[str, Any]:
        """The contact as AC receives it, decoded (for tests and tools; the hot path only handles bytes)."""
        return orjson.loads(self.encoded) if self.encoded else {}


@dataclass(slots=True)
class Rejection:
    customer_id: str
    email: str
    reason: Reason
    detail: str
    where: str = ""


# A strict ASCII subset of what email-validator accepts, so the common case skips its ~20 µs per call: a local part
# of at most 64 characters, no "--" in the domain (punycode goes the slow way), and no special-use TLD.
_FAST_EMAIL = re.compile(
    r"(?=[^@]{1,64}@)[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@(?!.*--)"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?!(?:arpa|invalid|local|localhost|onion|test)\Z)[a-z]{2,63}"
)
_fast_email_match = _FAST_EMAIL.fullmatch


def describe_origin(origin: tuple[str, int, int] | None) -> str:
    if origin is None:
        return ""
    partition, record, line = origin
    return f"{partition} record {record} (line {line})"


def email_key(email: str) -> int:
    """Stable 64-bit key of a normalised email (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(email.encode(), digest_size=8).digest(), "big")


def _is_plainly_valid(email: str) -> bool:
    """The common case, decided without email-validator: a strict ASCII subset of valid addresses."""
    return len(email) <= 254 and _fast_email_match(email) is not None


def check_email(email: str) -> str | None:
    """Return None when ``email`` (already trimmed and lower-cased) is acceptable, else why not."""
    return None if _is_plainly_valid(email) else _validator_problem(email)


def _validator_problem(email: str) -> str | None:
    """email-validator's verdict, for what the fast path does not decide (~20 µs a call)."""
    try:
        validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


class Mapper:
    """Turns rows with the export's columns into contacts for one ActiveCampaign list."""

    def __init__(self, mapping: Mapping, columns: Sequence[str], list_id: int) -> None:
        index = {name: i for i, name in enumerate(columns)}
        index_folded = {name.lower(): i for i, name in enumerate(columns)}
        missing = [
            f"{target} → {column!r}" for target, column in mapping.columns().items()
            if column not in index and column.lower() not in index_folded
        ]
        if missing:
            raise SourceError(
                "mapping names columns that are not in model.json: " + ", ".join(missing)
                + f". Available columns: {', '.join(columns)}. Fix the column names under \"mapping\"."
            )

        def column(name: str) -> int:
            return index[name] if name in index else index_folded[name.lower()]

        self._width = len(columns)
        self._email = column(mapping.email)
        self._customer_id = index.get("CustomerId", index_folded.get("customerid"))
        optional = [("first_name", mapping.first_name), ("last_name", mapping.last_name), ("phone", mapping.phone),
                    ("customer_acct_name", mapping.account)]
        # The JSON is assembled from pre-encoded pieces around each value: ~3x faster than building a dict and
        # encoding it, and byte for byte what orjson.dumps(dict) gives (fingerprints depend on it).
        self._optional = [(b',"%s":' % key.encode(), column(name)) for key, name in optional if name]
        self._fields = [(b'{"id":%d,"value":' % int(field_id), column(name)) for field_id, name in mapping.fields.items()]
        tail = b"]" if self._fields else b""
        if mapping.tags:
            tail += b',"tags":' + orjson.dumps(list(mapping.tags))
        self._tail = tail + b',"subscribe":' + orjson.dumps([{"listid": list_id}]) + b"}"

    def malformed(self, values: Sequence[str], detail: str, where: str = "") -> Rejection:
        """A row the CSV parser could not read, or with the wrong number of columns."""
        return Rejection(self._value(values, self._customer_id), "", Reason.MALFORMED_ROW, detail, where)

    def map_row(self, values: Sequence[str], where: str = "") -> Contact | Rejection:
        if len(values) != self._width:
            return self.malformed(values, f"expected {self._width} columns as in model.json, found {len(values)}",
                                  where)
        customer_id = values[self._customer_id] if self._customer_id is not None else ""
        raw_email = values[self._email].strip()
        if not raw_email:
            return Rejection(customer_id, "", Reason.MISSING_EMAIL, "email column is empty", where)
        email = raw_email.lower()
        if not _is_plainly_valid(email):
            problem = _validator_problem(email)
            if problem:
                return Rejection(customer_id, raw_email, Reason.INVALID_EMAIL, problem, where)
        return Contact(email_key(email), email, customer_id, self._encode(email, values))

    def _encode(self, email: str, values: Sequence[str]) -> bytes:
        dumps = orjson.dumps
        parts = [b'{"email":', dumps(email)]
        for key_prefix, i in self._optional:
            value = values[i].strip()
            if value:  # empty optional values are not sent, so they do not blank what AC has
                parts += (key_prefix, dumps(value))
        separator = b',"fields":['
        for field_start, i in self._fields:
            parts += (separator, field_start, dumps(values[i]), b"}")
            separator = b","
        parts.append(self._tail)
        return b"".join(parts)

    @staticmethod
    def duplicate(contact: Contact) -> Rejection:
        """A later row with an email an earlier row already had (the diff stage finds them)."""
        return Rejection(contact.customer_id, contact.email, Reason.DUPLICATE_EMAIL, "an earlier row has the same email",
                         describe_origin(contact.origin))

    @staticmethod
    def _value(values: Sequence[str], i: int | None) -> str:
        if i is None or i >= len(values):
            return ""
        return values[i]
