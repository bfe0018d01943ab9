"""What the sink reports to the run: a batch accepted, confirmed or not confirmed, a contact rejected.

The sink's threads only put these on its queue; the run takes them on its own thread and is the only writer of
the sync state, the journal and the report.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from ..list_status import ListStatus
from ..mapping import Contact, Rejection
from ..state import StateRows


@dataclass(frozen=True, slots=True)
class SentBatch:
    """A bulk import ActiveCampaign accepted, as confirming it needs it (the contacts' payloads are dropped).

    Up to the sink's ``max_unconfirmed`` of them wait for ActiveCampaign to process them, so they are compact:
    state rows as arrays and the customer ids as one JSON list.
    """

    batch_id: str
    rows: StateRows  # key, fingerprint (0 for a removal until the run records when it was confirmed), status, email
    customer_ids: bytes  # a JSON list in the batch's order; read only when ActiveCampaign reports failures
    returners: tuple[str, ...]  # emails this export once unsubscribed, to subscribe again once confirmed

    @classmethod
    def of(cls, batch_id: str, contacts: list[Contact]) -> SentBatch:
        rows = StateRows.of((c.key for c in contacts), (c.fingerprint for c in contacts),
                          (c.list_status for c in contacts), [c.email for c in contacts])
        rows.fingerprints[rows.flags != ListStatus.SUBSCRIBED] = 0
        return cls(batch_id, rows, orjson.dumps([c.customer_id for c in contacts]),
                   tuple(c.email for c in contacts if c.resubscribe))

    def sources(self) -> Iterator[tuple[str, str]]:
        """(customer id, email) of each contact, in the batch's order."""
        return zip(orjson.loads(self.customer_ids), self.rows.emails.tolist())


@dataclass(frozen=True, slots=True)
class BatchAccepted:
    """ActiveCampaign queued the import; it is not processed yet."""

    batch: SentBatch


@dataclass(frozen=True, slots=True)
class BatchConfirmed:
    """ActiveCampaign processed the import; ``failed_emails`` are the contacts it reported as failed, and
    ``failure_reasons`` its reason for those it gave one for (the run decides what each means)."""

    batch: SentBatch
    failed_emails: frozenset[str]
    failure_reasons: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchNotConfirmed:
    """ActiveCampaign ended the import without completing it, or did not finish it in time."""

    batch: SentBatch
    reason: str


@dataclass(frozen=True, slots=True)
class ContactRejected:
    """ActiveCampaign refused a contact in a whole-batch 400; the rest of its batch was sent again."""

    rejection: Rejection


SinkEvent = BatchAccepted | BatchConfirmed | BatchNotConfirmed | ContactRejected
