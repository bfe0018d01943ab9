"""A contact's status on an ActiveCampaign list, as the API numbers it (``contactLists`` status)."""
from __future__ import annotations

from enum import IntEnum


class ListStatus(IntEnum):
    SUBSCRIBED = 1  # on the list (put there by this export, as the sync state records it)
    UNSUBSCRIBED = 2  # taken off the list (by this export's mirror mode, as the sync state records it)
