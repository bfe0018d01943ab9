"""Opt-outs are final: a contact unsubscribed from the list by anything but this export (a campaign's unsubscribe
link, a preference page, an admin, another integration) is never subscribed again by the exporter.

Bulk import never re-subscribes anyone; only ``contactLists`` does, and the exporter uses it only for a contact
it took off the list itself (mirror mode) and that has come back, and only when that unsubscribe is still the
last thing that happened to the contact on the list. When in doubt, the contact stays unsubscribed.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..activecampaign import ActiveCampaignClient
from ..mapping import Contact, Reason, Rejection, describe_origin

# This export's unsubscribe is applied by ActiveCampaign between sending it and confirming it (at most the poll
# timeout, 10 minutes at ActiveCampaign's pace), and the two clocks may differ a little.
APPLIED_BEFORE_CONFIRMED_SECONDS = 15 * 60
CLOCK_SKEW_SECONDS = 2 * 60
_UNSET = {None, "", "0", 0}


def unsubscribed_by_this_export_last(membership: dict[str, Any] | None, unsubscribed_at: int) -> bool:
    """Whether the list membership ActiveCampaign shows is this export's own unsubscribe, confirmed at
    ``unsubscribed_at`` (Unix seconds), with nothing after it. False whenever that cannot be told."""
    if membership is None or str(membership.get("status")) != "2" or not unsubscribed_at:
        return False
    if any(membership.get(detail) not in _UNSET for detail in ("unsubreason", "campaign", "message")):
        return False  # a person's own unsubscribe (a campaign's link, a form) leaves these; an API one does not
    udate = _timestamp(membership.get("udate"))
    if udate is None:
        return False
    return unsubscribed_at - APPLIED_BEFORE_CONFIRMED_SECONDS <= udate <= unsubscribed_at + CLOCK_SKEW_SECONDS


def _timestamp(value: Any) -> float | None:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


class OptOutCheck:
    """Holds back every contact to send that is unsubscribed from the list, unless this export unsubscribed it
    last; clears those for re-subscribing."""

    def __init__(self, client: ActiveCampaignClient, list_id: int) -> None:
        self._client = client
        self._list_id = list_id
        self._unsubscribed = client.unsubscribed_emails(list_id)
        self.cleared: dict[str, str] = {}  # email → contact id, for the contacts to subscribe again

    def hold_back(self, contact: Contact) -> Rejection | None:
        """Why ``contact`` must not be sent (an opt-out), or None; marks a returner cleared for re-subscribing."""
        if contact.email not in self._unsubscribed:
            return None  # on the list, or new to it: bulk import subscribes only contacts new to the list
        if contact.unsubscribed_at:
            contact_id = self._client.find_contact_id(contact.email)
            membership = self._client.list_membership(contact_id, self._list_id) if contact_id else None
            if contact_id and unsubscribed_by_this_export_last(membership, contact.unsubscribed_at):
                contact.resubscribe = True
                self.cleared[contact.email] = contact_id
                return None
        return Rejection(contact.customer_id, contact.email, Reason.OPTED_OUT,
                         f"unsubscribed from list {self._list_id} other than by this export; it is never subscribed "
                         "again by the exporter", describe_origin(contact.origin))
