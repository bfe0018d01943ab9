"""The bulk import API's vocabulary: request limits and body, whole-batch refusals, and an import's status."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ExporterError

MAX_CONTACTS_PER_REQUEST = 250
MAX_REQUEST_BYTES = 400_000
# The longer of the two bodies' fixed parts ("false" is one byte longer than "true"), so batching stays under the
# request limit whichever an export sends.
BODY_OVERHEAD = len(b'{"contacts":[],"exclude_automations":false}')
FINISHED = frozenset({"completed", "failed", "interrupted"})


def encode_bulk_body(encoded_contacts: list[bytes], exclude_automations: bool = False) -> bytes:
    """A bulk import request body from contacts already encoded as JSON objects.

    ``exclude_automations`` true keeps the imported contacts from starting the account's automations (a welcome
    series, say); false is ActiveCampaign's default."""
    tail = b'],"exclude_automations":true}' if exclude_automations else b'],"exclude_automations":false}'
    return b'{"contacts":[' + b",".join(encoded_contacts) + tail


class BatchRejected(ExporterError):
    """ActiveCampaign refused a whole bulk request because of some of its contacts (e.g. one malformed email)."""

    def __init__(self, bad: dict[int, str], message: str) -> None:
        super().__init__(message)
        self.bad = bad  # index in the request → ActiveCampaign's reason; empty when it named none


@dataclass
class ImportStatus:
    """What ``import/info`` says about one bulk import."""

    status: str  # waiting | claimed | active | completed | failed | interrupted | unknown
    success: list[str] = field(default_factory=list)  # contact ids
    failure: list[str] = field(default_factory=list)  # emails, lower-cased
    # Why, per failed email, when the answer says ("failureReasons"; ActiveCampaign documents only "failure").
    failure_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def is_exclusion(reason: str) -> bool:
    """Whether ActiveCampaign's reason for skipping a contact is the account's exclusion list
    ("Row skipped - It is on exclusion list")."""
    return "exclusion list" in reason.lower()


def failure_reasons(data: dict[str, Any]) -> dict[str, str]:
    """Email (lower-cased) → reason, from an import/info answer's "failureReasons"; {} when it has none."""
    reasons: dict[str, str] = {}
    for item in data.get("failureReasons") or []:
        if isinstance(item, dict) and item.get("email"):
            reason = item.get("failureReason") or item.get("reason") or item.get("message")
            if reason:
                reasons[str(item["email"]).lower()] = str(reason)
    return reasons


def bad_contacts(data: dict[str, Any], emails: list[str]) -> dict[int, str]:
    """Which contacts a whole-batch 400 names, by index in the request. Empty when it named none."""
    by_email = {email: i for i, email in enumerate(emails)}
    bad: dict[int, str] = {}
    for item in data.get("failureReasons") or []:
        if isinstance(item, dict):
            reason = str(item.get("failureReason") or item.get("reason") or item.get("message") or "refused")
            index = item.get("contact")
            email = str(item.get("email") or "").lower()
            if isinstance(index, int) and 0 <= index < len(emails):
                bad[index] = reason
            elif email in by_email:
                bad[by_email[email]] = reason
        elif isinstance(item, str):
            for email, i in by_email.items():
                if email in item.lower():
                    bad[i] = item
    return bad
