"""Mirror mode: contacts this export put on the list that left the segment are unsubscribed, unless there are
so many that the export is more likely wrong than the segment (the brake); contacts that come back are
subscribed again, unless they opted out meanwhile (see opt_outs)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import orjson

from ..activecampaign import ActiveCampaignClient
from ..list_status import ListStatus
from ..mapping import Contact


def brake_message(leavers: int, list_size: int, list_id: int, max_share: float, forced: bool) -> str | None:
    """Why mirror mode must not unsubscribe ``leavers`` of the ``list_size`` contacts it keeps on the list, or
    None when it may."""
    list_size = max(list_size, 1)
    share = leavers / list_size
    if share <= max_share or forced:
        return None
    return (f"mirror mode would unsubscribe {leavers} of the {list_size} contacts this export keeps on list {list_id} "
            f"({share:.0%}, above maxRemovalShare {max_share:.0%}); nothing was unsubscribed. If the export is right, "
            "run again with --force-removal (or \"forceRemoval\": true on demand)")


def removals(keys: Iterable[int], emails: Iterable[str], list_id: int) -> Iterator[Contact]:
    """The bulk-import contacts that take each leaver off the list."""
    for key, email in zip(keys, emails):
        yield Contact(key, email, "", orjson.dumps({"email": email, "unsubscribe": [{"listid": list_id}]}),
                      list_status=ListStatus.UNSUBSCRIBED)


def resubscribe(client: ActiveCampaignClient, list_id: int, contact_ids: Iterable[str]) -> int:
    """Subscribe contacts this export once took off the list again (bulk import does not); only contacts the
    opt-out check cleared come here. Returns how many."""
    done = 0
    for contact_id in contact_ids:
        client.set_list_status(contact_id, list_id, ListStatus.SUBSCRIBED)
        done += 1
    return done
