"""Parsing and checking a bulk import request body, outside the account lock (it is the costly part)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .store import ImportContact, is_valid_email, normalise_email

MAX_CONTACTS = 250
MAX_BODY_BYTES = 400_000
INVALID_EMAIL = "Invalid email address"


@dataclass
class BulkRequest:
    size: int
    error: str | None = None  # the body is not a bulk import at all (bad JSON, no contacts array)
    count: int = 0
    emails: list[str] = field(default_factory=list)
    contacts: list[ImportContact] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    list_ids: set[int] = field(default_factory=set)


class _Invalid(ValueError):
    pass


def parse_bulk_request(body: bytes, rejected_emails: frozenset[str]) -> BulkRequest:
    request = BulkRequest(len(body))
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
    for index, item in enumerate(items):
        raw_email = item.get("email") if isinstance(item, dict) else None
        email = normalise_email(raw_email) if isinstance(raw_email, str) else ""
        request.emails.append(email)
        try:
            if not email or not is_valid_email(email) or email in rejected_emails:
                raise _Invalid(INVALID_EMAIL)
            contact = _parse_contact(item, email)
        except _Invalid as exc:
            request.failures.append({"contact": index, "email": raw_email if isinstance(raw_email, str) else "",
                                     "failureReason": str(exc)})
            continue
        request.contacts.append(contact)
        request.list_ids.update(contact.subscribe)
        request.list_ids.update(contact.unsubscribe)
    return request


def _parse_contact(item: dict[str, Any], email: str) -> ImportContact:
    return ImportContact(
        email,
        _text(item.get("first_name"), "first_name"),
        _text(item.get("last_name"), "last_name"),
        _text(item.get("phone"), "phone"),
        _fields(item.get("fields")),
        _tags(item.get("tags")),
        _list_ids(item.get("subscribe"), "subscribe"),
        _list_ids(item.get("unsubscribe"), "unsubscribe"),
    )


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(f"Invalid value for {name}")


def _fields(value: Any) -> tuple[tuple[int, str], ...]:
    if not value:
        return ()
    if not isinstance(value, list):
        raise _Invalid("Invalid fields: expected an array of {id, value}")
    fields = []
    for entry in value:
        if not isinstance(entry, dict):
            raise _Invalid("Invalid fields: expected an array of {id, value}")
        field_id = _positive_int(entry.get("id"), "Invalid custom field id")
        text = _text(entry.get("value"), "custom field value")
        if text is not None:
            fields.append((field_id, text))
    return tuple(fields)


def _tags(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise _Invalid("Invalid tags: expected an array of tag names")
    return tuple(tag.strip() for tag in value if tag.strip())


def _list_ids(value: Any, name: str) -> tuple[int, ...]:
    if not value:
        return ()
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _Invalid(f"Invalid {name}: expected an array of {{listid}}")
    return tuple(_positive_int(entry.get("listid"), f"Invalid listid in {name}") for entry in value)


def _positive_int(value: Any, message: str) -> int:
    if isinstance(value, bool):
        raise _Invalid(message)
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise _Invalid(message)
