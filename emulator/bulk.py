"""Bulk import requests: the accept-time check (outside the account lock) and the conversion at apply time.

At acceptance AC checks what makes the whole request fail: the number of contacts, every email's syntax, and
the lists named in subscribe/unsubscribe. The rest of a contact (names, fields, tags) is read when the import is
applied; a contact whose data cannot be read is reported in import/info "failure", as AC does.
This is the emulator's hot path (a million contacts in the benchmark), hence the inlined loops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .emails import is_valid_email

MAX_CONTACTS = 250
MAX_BODY_BYTES = 400_000
INVALID_EMAIL = "Invalid email address"


@dataclass
class BulkRequest:
    body: bytes
    error: str | None = None  # the body is not a bulk import at all (bad JSON, no contacts array)
    count: int = 0
    emails: list[str] = field(default_factory=list)  # lower-cased, "" when missing; in the request's order
    failures: list[dict[str, Any]] = field(default_factory=list)
    list_ids: set[int] = field(default_factory=set)
    items: list[Any] | None = None  # the parsed contacts
    exclude_automations: bool = False  # AC's default when the body does not say


class InvalidContact(ValueError):
    pass


def parse_bulk_request(body: bytes, rejected_emails: frozenset[str]) -> BulkRequest:
    request = BulkRequest(body)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        request.error = "The request body is not valid JSON."
        return request
    items = data.get("contacts") if isinstance(data, dict) else None
    if not isinstance(items, list):
        request.error = 'The request body must have a "contacts" array.'
        return request
    request.count = len(items)
    request.items = items
    request.exclude_automations = data.get("exclude_automations") in (True, 1, "1", "true")
    emails, failures, list_refs = request.emails, request.failures, set()
    for index, item in enumerate(items):
        try:
            raw = item["email"]
            email = raw if raw.islower() else raw.lower()
        except (TypeError, KeyError, AttributeError):
            raw, email = item.get("email") if isinstance(item, dict) else None, ""
        emails.append(email)
        if not email or not is_valid_email(email) or email in rejected_emails:
            failures.append(_failure(index, raw, INVALID_EMAIL))
            continue
        try:
            for key in ("subscribe", "unsubscribe"):
                for entry in item.get(key) or ():
                    list_refs.add(entry["listid"])
        except (TypeError, KeyError):
            failures.append(_failure(index, raw, "Invalid subscribe/unsubscribe: expected an array of {listid}"))
    for ref in list_refs:
        list_id = list_id_of(ref)
        if list_id is None:
            failures.extend(_failure(i, item.get("email"), f"Invalid listid {ref!r}")
                            for i, item in enumerate(items) if ref in _refs_of(item))
            failures.sort(key=lambda failure: failure["contact"])
        else:
            request.list_ids.add(list_id)
    return request


def _failure(index: int, email: Any, reason: str) -> dict[str, Any]:
    return {"contact": index, "email": email if isinstance(email, str) else "", "failureReason": reason}


def _refs_of(item: Any) -> list[Any]:
    try:
        return [entry["listid"] for key in ("subscribe", "unsubscribe") for entry in item.get(key) or ()]
    except (TypeError, KeyError, AttributeError):
        return []


def list_id_of(ref: Any) -> int | None:
    if type(ref) is int:
        return ref if ref > 0 else None
    if isinstance(ref, str) and ref.isascii() and ref.isdigit() and int(ref) > 0:
        return int(ref)
    return None


def text_of(value: Any, what: str) -> str | None:
    """A name, phone or field value as AC stores it: text; numbers become text; None means not given."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise InvalidContact(f"invalid {what}")


def field_pairs(fields: Any) -> list[tuple[int, str]]:
    if not isinstance(fields, list):
        raise InvalidContact("invalid fields")
    pairs = []
    for entry in fields:
        try:
            field_id, value = entry["id"], entry["value"]
        except (TypeError, KeyError) as exc:
            raise InvalidContact("invalid fields") from exc
        if type(field_id) is not int:
            field_id = list_id_of(field_id)
            if field_id is None:
                raise InvalidContact("invalid custom field id")
        if type(value) is not str:
            value = text_of(value, "custom field value")
            if value is None:
                continue
        pairs.append((field_id, value))
    return pairs


def tag_names(tags: Any) -> tuple[str, ...]:
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidContact("invalid tags")
    return tuple(tag.strip() for tag in tags if tag.strip())

