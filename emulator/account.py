"""One ActiveCampaign account behind /api/3: auth, limits, faults, the routes, and the request log.

``Account.handle`` takes a parsed HTTP request and returns a ``Reply`` (or ``DROP``); it knows nothing about
sockets, so the HTTP server stays a thin layer. All state changes happen under ``Account.lock``.
"""
from __future__ import annotations

import math
import random
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import orjson

from .bulk import MAX_BODY_BYTES, MAX_CONTACTS, BulkRequest, parse_bulk_request
from .emails import is_valid_email, normalise_email
from .limits import Fault, Faults, PeakCounter, SlidingWindow
from .store import SUBSCRIBED, UNSUBSCRIBED, Contact, ImportBatch, Store

API_PREFIX = "/api/3"
BULK_IMPORT_PATH = API_PREFIX + "/import/bulk_import"
MAX_PAGE = 100
DEFAULT_PAGE = 20
# Imports are applied lazily, oldest first, by the requests that come after they are due. Capping how many one
# request applies spreads the work when many fall due at once (a saturated benchmark) instead of stalling one
# request for a second; import/info applies everything up to the batch it is asked about.
APPLY_PER_REQUEST = 8
RATE_LIMIT_BODY = {"success": 0, "message": "Rate limit exceeded.", "failureReasons": []}
MIN_WINDOW = 0.25  # real seconds; see Config.window


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class _Drop:
    """Close the connection without answering."""

    status = 0


DROP = _Drop()


def json_reply(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps(data), headers)


def _message(status: int, message: str) -> Reply:
    return json_reply(status, {"message": message})


def _unprocessable(title: str, code: str, pointer: str) -> Reply:
    return json_reply(422, {"errors": [{"title": title, "detail": "", "code": code,
                                        "source": {"pointer": f"/data/attributes/{pointer}"}}]})


def _bulk_refusal(message: str, failures: Sequence[dict[str, Any]] = ()) -> Reply:
    return json_reply(400, {"success": 0, "message": message, "failureReasons": list(failures)})


@dataclass(frozen=True)
class Config:
    api_key: str = "test-key"
    time_scale: float = 1.0
    latency: float = 0.0
    enforce_limits: bool = True
    bulk_per_minute: int = 100
    single_per_minute: int = 20
    requests_per_second: int = 5
    import_delay: float = 1.0
    seed: int = 0

    def scaled(self, seconds: float) -> float:
        return seconds / self.time_scale

    def window(self, limit: int, seconds: float) -> SlidingWindow:
        """AC's ``limit`` per ``seconds``, time-scaled. A scaled window is never shorter than MIN_WINDOW real
        seconds (its limit grows in proportion, so the average rate is exact): at ×60, "5 per second" would
        otherwise be "5 per 17 ms", where ordinary thread-scheduling jitter, 60 times smaller against AC's real
        one-second window, would decide what gets refused."""
        scaled = self.scaled(seconds)
        if scaled >= MIN_WINDOW or self.time_scale <= 1:
            return SlidingWindow(limit, scaled)
        factor = MIN_WINDOW / scaled
        return SlidingWindow(max(limit, round(limit * factor)), MIN_WINDOW)


class _Log:
    """Every /api/3 request, in arrival order, with counters kept alongside so stats never scan it."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.by_status: dict[str, int] = {}
        self.bulk_accepted = 0
        self.bulk_refused = 0
        self.contacts_received = 0
        self.first_accepted: float | None = None
        self.last_accepted: float | None = None

    def add(self, entry: dict[str, Any]) -> None:
        entry["seq"] = len(self.entries)
        self.entries.append(entry)
        key = str(entry["status"])
        self.by_status[key] = self.by_status.get(key, 0) + 1
        if entry["path"] == BULK_IMPORT_PATH and entry["method"] == "POST":
            if entry["status"] == 200:
                self.bulk_accepted += 1
                self.contacts_received += entry["contacts"] or 0
                self.first_accepted = entry["time"] if self.first_accepted is None else self.first_accepted
                self.last_accepted = entry["time"]
            else:
                self.bulk_refused += 1


class Account:
    def __init__(self, config: Config, lists: dict[int, str], clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.faults = Faults(config.seed)
        self.rejected_emails: frozenset[str] = frozenset()
        self.fail_emails: frozenset[str] = frozenset()
        self.excluded_emails: frozenset[str] = frozenset()  # the account's exclusion list
        self._initial_lists = dict(lists)
        self._clock = clock
        self.started = clock()
        self.reset()

    def reset(self) -> None:
        """Back to the starting state: initial lists only, no contacts, no log, no faults, empty windows."""
        config = self.config
        with self.lock:
            self.store = Store(self._initial_lists)
            self.log = _Log()
            self.faults.clear()
            self.rejected_emails = frozenset()
            self.fail_emails = frozenset()
            self.excluded_emails = frozenset()
            self._random = random.Random(config.seed)
            self._general = config.window(config.requests_per_second, 1.0)
            self._bulk = config.window(config.bulk_per_minute, 60.0)
            self._single = config.window(config.single_per_minute, 60.0)
            self.windows = {"requestsPerSecond": self._general, "bulkImportsPerMinute": self._bulk,
                            "singleImportsPerMinute": self._single}
            # Measured over the same windows as the limits, so a peak compares directly with its window's limit.
            self.peaks = {name: PeakCounter(window.seconds) for name, window in self.windows.items()}

    def now(self) -> float:
        return self._clock()

    # --- the request pipeline ----------------------------------------------------------------------------

    def handle(self, method: str, target: str, token: str | None, body: bytes) -> Reply | _Drop:
        # AC counts a request against its limits when it arrives, not after it waited for this process's lock or
        # CPU: timing it here keeps the emulator's own stalls from bunching well-paced requests into refusals.
        arrived = self._clock()
        if self.config.latency:
            time.sleep(self.config.latency)  # server processing time, real seconds
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        entry: dict[str, Any] = {"method": method, "path": path, "contacts": None, "emails": None,
                                 "arrived": round(arrived - self.started, 6)}
        bulk = None
        if method == "POST" and path == BULK_IMPORT_PATH:
            bulk = parse_bulk_request(body, self.rejected_emails)
            entry["contacts"] = bulk.count
            entry["emails"] = bulk.emails
            entry["excludeAutomations"] = bulk.exclude_automations
        fault = self.faults.draw(path)
        if fault is not None:
            reply: Reply | _Drop = self._fault_reply(fault)
        elif token != self.config.api_key:
            reply = _message(403, "Forbidden")
        else:
            reply = self._admit_and_route(method, path, dict(parse_qsl(split.query)), body, bulk, entry, arrived)
        entry["status"] = reply.status
        entry["fault"] = None if fault is None else fault.kind
        # What the reply's Retry-After asked for, in seconds, as the client reads it; None without one.
        headers = reply.headers if isinstance(reply, Reply) else ()
        entry["retryAfter"] = next((float(value) for name, value in headers if name == "Retry-After"), None)
        with self.lock:
            entry["time"] = round(self._clock() - self.started, 6)
            self.log.add(entry)
        return reply

    def _admit_and_route(self, method: str, path: str, query: dict[str, str], body: bytes,
                         bulk: BulkRequest | None, entry: dict[str, Any], arrived: float) -> Reply:
        with self.lock:
            now = self._clock()
            self.store.apply_due(now, self.fail_emails, limit=APPLY_PER_REQUEST, excluded=self.excluded_emails)
            if self.config.enforce_limits:
                wait = self._general.admit(arrived)
                if wait is not None:
                    return _message(429, "Too Many Requests")._replace(
                        headers=(("Retry-After", self._retry_after(wait)),))
            self.peaks["requestsPerSecond"].add(arrived)
            if bulk is not None:
                return self._bulk_import(bulk, now, entry, arrived)
            return self._route(method, path[len(API_PREFIX):], query, body, now)

    def _retry_after(self, seconds: float) -> str:
        if self.config.time_scale == 1:
            return str(max(1, math.ceil(seconds)))
        return f"{max(seconds, 0.001):.3f}".rstrip("0").rstrip(".")

    def _fault_reply(self, fault: Fault) -> Reply | _Drop:
        kind = fault.kind
        seconds = self.config.scaled(1.0) if fault.retry_after is None else fault.retry_after
        retry = (("Retry-After", self._retry_after(seconds)),)
        if kind == "429":
            return _message(429, "Too Many Requests")._replace(headers=retry)
        if kind == "503":
            return _message(503, "Service Unavailable")._replace(headers=retry)
        if kind == "500":
            return _message(500, "Internal Server Error")
        if kind == "ratelimit400":
            return json_reply(400, RATE_LIMIT_BODY)
        return DROP

    def _route(self, method: str, route: str, query: dict[str, str], body: bytes, now: float) -> Reply:
        parts = route.strip("/").split("/")
        key = (method, parts[0] if parts else "", len(parts))
        if key == ("GET", "import", 2) and parts[1] == "info":
            return self._import_info(query, now)
        if key == ("GET", "lists", 1):
            return self._get_lists(query)
        if key == ("GET", "lists", 2):
            return self._get_list(parts[1])
        if key == ("POST", "lists", 1):
            return self._create_list(body)
        if key == ("GET", "contacts", 1):
            return self._list_contacts(query)
        if key == ("GET", "contacts", 2):
            return self._get_contact(parts[1])
        if key == ("GET", "contacts", 3) and parts[2] == "contactLists":
            return self._get_contact_lists(parts[1])
        if key == ("POST", "contacts", 1):
            return self._sync_contact(body, create_only=True)
        if key == ("POST", "contact", 2) and parts[1] == "sync":
            return self._sync_contact(body, create_only=False)
        if key == ("POST", "contactLists", 1):
            return self._set_contact_list(body)
        return _message(404, f"No route for {method} {API_PREFIX}{route}")

    # --- bulk import -------------------------------------------------------------------------------------

    def _bulk_import(self, bulk: BulkRequest, now: float, entry: dict[str, Any], arrived: float) -> Reply:
        if len(bulk.body) >= MAX_BODY_BYTES:
            return _bulk_refusal(f"The request body is {len(bulk.body)} bytes; a bulk import request must be smaller "
                                 f"than {MAX_BODY_BYTES} bytes.")
        if bulk.error:
            return _bulk_refusal(bulk.error)
        if bulk.count == 0:
            return _bulk_refusal("No contacts to import: the contacts array is empty.")
        if bulk.count > MAX_CONTACTS:
            return _bulk_refusal(f"The request has {bulk.count} contacts; a bulk import request may contain at most "
                                 f"{MAX_CONTACTS} contacts.")
        if self.config.enforce_limits:
            window = self._bulk if bulk.count > 1 else self._single
            if window.admit(arrived) is not None:
                return json_reply(400, RATE_LIMIT_BODY)
        self.peaks["bulkImportsPerMinute" if bulk.count > 1 else "singleImportsPerMinute"].add(arrived)
        if bulk.failures:
            return _bulk_refusal("Failed to import contacts.", bulk.failures)
        missing = sorted(bulk.list_ids - self.store.lists.keys())
        if missing:
            return _bulk_refusal(f"List {', '.join(map(str, missing))} does not exist; cannot subscribe or "
                                 "unsubscribe contacts to it.")
        due_at = now + self.config.scaled(self.config.import_delay)
        # An import applied at once reuses the contacts parsed at acceptance; a queued one parses its body again
        # when applied (see ImportBatch).
        batch = ImportBatch(self._new_batch_id(), now, due_at, bulk.body, bulk.emails,
                            items=bulk.items if due_at <= now else None,
                            exclude_automations=bulk.exclude_automations)
        self.store.queue_import(batch)
        # an import_delay of 0 applies now
        self.store.apply_due(now, self.fail_emails, limit=0, through=batch, excluded=self.excluded_emails)
        entry["batchId"] = batch.id
        return json_reply(200, {"success": 1, "queued_contacts": bulk.count, "batchId": batch.id,
                                "message": "Contact import queued"})

    def _new_batch_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _import_info(self, query: dict[str, str], now: float) -> Reply:
        batch_id = query.get("batchId", "")
        batch = self.store.batch(batch_id)
        if batch is None:
            return _message(404, f"No Result found for import with batchId {batch_id}")
        self.store.apply_due(now, self.fail_emails, limit=0, through=batch, excluded=self.excluded_emails)
        if batch.applied:
            return json_reply(200, {"status": "completed", "success": [str(i) for i in batch.success],
                                    "failure": batch.failure, "failureReasons": batch.failure_reasons})
        # AC answers an empty status when polled within about a second of queueing.
        if now - batch.accepted_at < self.config.scaled(min(1.0, self.config.import_delay)):
            return json_reply(200, {"status": False})
        return json_reply(200, {"status": "waiting", "success": [], "failure": []})

    # --- lists -------------------------------------------------------------------------------------------

    def _list_json(self, list_id: int) -> dict[str, Any]:
        name = self.store.lists[list_id]
        return {"id": str(list_id), "name": name, "stringid": "-".join(name.lower().split()),
                "sender_url": "", "sender_reminder": "", "userid": "1",
                "links": {"contactGoalLists": f"{API_PREFIX}/lists/{list_id}/contactGoalLists"}}

    def _get_lists(self, query: dict[str, str]) -> Reply:
        ids = sorted(self.store.lists)
        limit, offset = _paging(query)
        return json_reply(200, {"lists": [self._list_json(i) for i in ids[offset:offset + limit]],
                                "meta": {"total": str(len(ids))}})

    def _get_list(self, raw_id: str) -> Reply:
        list_id = _int(raw_id)
        if list_id not in self.store.lists:
            return _message(404, f"No Result found for _List with id {raw_id}")
        return json_reply(200, {"list": self._list_json(list_id)})

    def _create_list(self, body: bytes) -> Reply:
        data = _object(body, "list")
        name = data.get("name") if data else None
        if not isinstance(name, str) or not name.strip():
            return _unprocessable("The list name was not provided.", "field_missing", "name")
        return json_reply(201, {"list": self._list_json(self.store.add_list(name.strip()))})

    # --- contacts ----------------------------------------------------------------------------------------

    def _contact_json(self, contact: Contact) -> dict[str, Any]:
        cid = str(contact.id)
        return {"id": cid, "email": contact.email, "firstName": contact.first_name, "lastName": contact.last_name,
                "phone": contact.phone, "orgid": "0", "deleted": "0",
                "links": {"contactLists": f"{API_PREFIX}/contacts/{cid}/contactLists",
                          "fieldValues": f"{API_PREFIX}/contacts/{cid}/fieldValues",
                          "contactTags": f"{API_PREFIX}/contacts/{cid}/contactTags"}}

    def _field_values_json(self, contact: Contact) -> list[dict[str, str]]:
        cid = str(contact.id)
        return [{"contact": cid, "field": str(field_id), "value": value}
                for field_id, value in contact.field_values().items()]

    def _list_contacts(self, query: dict[str, str]) -> Reply:
        limit, offset = _paging(query)
        descending = query.get("orders[id]", "ASC").upper() == "DESC"
        ids, lo = self._matching_ids(query)
        total = len(ids) - lo
        if descending:
            end = len(ids) - offset
            page = [ids[i] for i in range(end - 1, max(lo, end - limit) - 1, -1)]
        else:
            start = lo + offset
            page = [ids[i] for i in range(start, min(len(ids), start + limit))]
        store = self.store
        return json_reply(200, {"contacts": [self._contact_json(store.by_id(i)) for i in page],
                                "meta": {"total": str(total), "page_input": {"limit": limit, "offset": offset}}})

    def _matching_ids(self, query: dict[str, str]) -> tuple[Sequence[int], int]:
        """Ascending ids matching the filters, and the index of the first one above id_greater."""
        store = self.store
        id_greater = _int(query.get("id_greater")) or 0
        status = _int(query.get("status"))
        status = status if status in (SUBSCRIBED, UNSUBSCRIBED) else None
        list_id = _int(query.get("listid"))
        if "email" in query:
            contact = store.by_email(query["email"].strip())
            found = contact is not None and contact.id > id_greater and self._matches(contact.id, list_id, status)
            return ([contact.id] if found else []), 0
        if list_id is not None:
            if list_id not in store.lists:
                return [], 0
            ids = store.ids_on_list(list_id, status)
            return ids, bisect_right(ids, id_greater)
        if status is not None:
            return [i for i in store.ids_above(id_greater) if self._matches(i, None, status)], 0
        return store.ids_above(id_greater), 0

    def _matches(self, contact_id: int, list_id: int | None, status: int | None) -> bool:
        if list_id is not None:
            current = self.store.status(contact_id, list_id)
            return current is not None and (status is None or current == status)
        return status is None or status in self.store.statuses_of(contact_id).values()

    def _get_contact(self, raw_id: str) -> Reply:
        contact = self.store.by_id(_int(raw_id) or 0)
        if contact is None:
            return _message(404, f"No Result found for Subscriber with id {raw_id}")
        store, cid = self.store, str(contact.id)
        return json_reply(200, {
            "contact": self._contact_json(contact),
            "fieldValues": self._field_values_json(contact),
            "contactLists": store.memberships(contact.id),
            "contactTags": [{"contact": cid, "tag": str(tag_id)} for tag_id in contact.tags],
            "tags": [{"id": str(tag_id), "tag": store.tag_name(tag_id)} for tag_id in contact.tags],
        })

    def _get_contact_lists(self, raw_id: str) -> Reply:
        contact = self.store.by_id(_int(raw_id) or 0)
        if contact is None:
            return _message(404, f"No Result found for Subscriber with id {raw_id}")
        memberships = self.store.memberships(contact.id)
        return json_reply(200, {"contactLists": memberships, "meta": {"total": str(len(memberships))}})

    def _sync_contact(self, body: bytes, *, create_only: bool) -> Reply:
        data = _object(body, "contact")
        email = data.get("email") if data else None
        if not isinstance(email, str) or not is_valid_email(email.strip()):
            return _unprocessable("Contact Email Address is not valid.", "email_invalid", "email")
        email = normalise_email(email.strip())
        if create_only and self.store.by_email(email) is not None:
            return _unprocessable("Email address already exists in the system.", "duplicate", "email")
        fields = []
        for entry in data.get("fieldValues") or []:
            field_id = _int(entry.get("field")) if isinstance(entry, dict) else None
            if field_id is None or entry.get("value") is None:
                return _unprocessable("Field value is not valid.", "field_invalid", "fieldValues")
            fields.append((field_id, str(entry["value"])))
        contact, created = self.store.upsert(email, _str(data.get("firstName")), _str(data.get("lastName")),
                                             _str(data.get("phone")), fields)
        return json_reply(201 if created else 200,
                          {"fieldValues": self._field_values_json(contact), "contact": self._contact_json(contact)})

    def _set_contact_list(self, body: bytes) -> Reply:
        data = _object(body, "contactList")
        if data is None:
            return _unprocessable("The contactList was not provided.", "field_missing", "contactList")
        list_id, contact_id, status = _int(data.get("list")), _int(data.get("contact")), _int(data.get("status"))
        contact = self.store.by_id(contact_id or 0)
        if contact is None:
            return _unprocessable("The related contact does not exist.", "related_missing", "contact")
        if list_id not in self.store.lists:
            return _unprocessable("The related list does not exist.", "related_missing", "list")
        if status not in (SUBSCRIBED, UNSUBSCRIBED):
            return _unprocessable("The status is not valid; use 1 (active) or 2 (unsubscribed).", "field_invalid",
                                  "status")
        self.store.set_status(contact.id, list_id, status)
        return json_reply(200, {"contacts": [self._contact_json(contact)],
                                "contactList": {"contact": str(contact.id), "list": str(list_id), "status": str(status),
                                                "id": f"{list_id}-{contact.id}"}})


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
        return int(value)
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _paging(query: dict[str, str]) -> tuple[int, int]:
    limit = _int(query.get("limit"))
    limit = DEFAULT_PAGE if limit is None or limit <= 0 else min(limit, MAX_PAGE)
    return limit, max(_int(query.get("offset")) or 0, 0)


def _object(body: bytes, key: str) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    inner = data.get(key) if isinstance(data, dict) else None
    return inner if isinstance(inner, dict) else None
