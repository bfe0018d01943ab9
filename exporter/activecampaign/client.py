"""The ActiveCampaign API v3 calls the exporter makes, on one ``httpx.Client``, paced and retried.

One client per run. Keep-alive, timeouts, proxies and CA certificates are httpx's (``HTTPS_PROXY``,
``NO_PROXY``, ``SSL_CERT_FILE`` … from the environment). Tests pass ``transport=httpx.MockTransport(...)`` and
a fake ``clock``/``sleep`` to watch the waits.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import orjson

from ..errors import ConfigError, DestinationAccessError, ExporterError, TransientError
from ..list_status import ListStatus
from ..settings import RateLimits
from .bulk_import import BatchRejected, ImportStatus, bad_contacts, encode_bulk_body, failure_reasons
from .pacing import AccountPacers, Clock, Pacer, Sleep
from .refusals import (
    MAX_RETRY_AFTER_SECONDS,
    Backoff,
    is_rate_limit_400,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

USER_AGENT = "ci-activecampaign-exporter"


@dataclass
class ClientStats:
    """What a run's requests cost: sent, retried, refused (by kind) and the time spent waiting."""

    requests: int = 0
    retries: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    waited_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sent(self) -> None:
        with self._lock:
            self.requests += 1

    def refused(self, kind: str) -> None:
        with self._lock:
            self.refusals[kind] = self.refusals.get(kind, 0) + 1
            self.retries += 1

    def waited(self, seconds: float) -> None:
        with self._lock:
            self.waited_seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "refusals": dict(self.refusals),
                "waitedSeconds": round(self.waited_seconds, 3)}


class ActiveCampaignClient:
    """Paced, retried calls to one ActiveCampaign account; safe to share between threads."""

    def __init__(self, base_url: str, api_key: str, limits: RateLimits, *, max_attempts: int = 10,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 clock: Clock = time.monotonic, sleep: Sleep = time.sleep, wall_clock: Clock = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = _http_client(self.base_url, api_key, timeout, transport)
        self.pacers = AccountPacers(limits, clock=clock, sleep=sleep)
        self._backoff = Backoff(limits.requests_per_second)
        self._max_attempts = max_attempts
        self._sleep_fn = sleep
        self._wall_clock = wall_clock
        self.stats = ClientStats()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls -------------------------------------------------------------------------------------------

    def check_access(self, list_id: int) -> dict[str, Any]:
        """Check the key and that the list exists, before anything is sent. Returns the list."""
        response = self._request("GET", f"lists/{list_id}")
        if response.status_code == 404:
            raise DestinationAccessError(
                f"ActiveCampaign list {list_id} does not exist in the account at {self.base_url}; "
                "set destination.listId to the id shown in ActiveCampaign under Contacts > Lists"
            )
        self._raise_for_status(response, f"GET /lists/{list_id}")
        return _json(response).get("list", {})

    def bulk_import(self, encoded_contacts: list[bytes], emails: list[str], *,
                    exclude_automations: bool = False) -> str:
        """Queue one bulk import of contacts already encoded as JSON; returns its batch id.

        ``exclude_automations`` true: the imported contacts start none of the account's automations.

        Raises BatchRejected naming (by index) the contacts ActiveCampaign refused, when it names them.
        """
        pacer = self.pacers.bulk if len(encoded_contacts) > 1 else None  # single-contact imports have their own limit
        response = self._request("POST", "import/bulk_import", content=encode_bulk_body(encoded_contacts, exclude_automations), pacer=pacer)
        data = _json(response)
        if response.status_code == 400:
            raise BatchRejected(bad_contacts(data, emails), str(data.get("message") or "bulk import refused"))
        self._raise_for_status(response, "POST /import/bulk_import")
        batch_id = data.get("batchId")
        if not batch_id:
            raise TransientError(f"bulk import answered {response.status_code} without a batchId")
        return str(batch_id)

    def import_info(self, batch_id: str) -> ImportStatus:
        response = self._request("GET", "import/info", params={"batchId": batch_id}, pacer=self.pacers.polls)
        if response.status_code == 404:
            return ImportStatus("unknown")
        self._raise_for_status(response, "GET /import/info")
        data = _json(response)
        if not data.get("status"):
            return ImportStatus("waiting")  # ActiveCampaign answers false/empty when polled too soon
        return ImportStatus(str(data["status"]), [str(x) for x in data.get("success") or []],
                            [str(x).lower() for x in data.get("failure") or []], failure_reasons(data))

    def find_contact_id(self, email: str) -> str | None:
        response = self._request("GET", "contacts", params={"email": email})
        self._raise_for_status(response, "GET /contacts")
        contacts = _json(response).get("contacts") or []
        return str(contacts[0]["id"]) if contacts else None

    def unsubscribed_emails(self, list_id: int) -> set[str]:
        """Every contact unsubscribed from the list (by anyone), lower-cased, read a page of 100 at a time."""
        emails: set[str] = set()
        after = 0
        while True:
            params = {"listid": list_id, "status": int(ListStatus.UNSUBSCRIBED), "limit": 100,
                      "orders[id]": "ASC", "id_greater": after}
            response = self._request("GET", "contacts", params=params)
            self._raise_for_status(response, "GET /contacts")
            page = _json(response).get("contacts") or []
            for contact in page:
                emails.add(str(contact.get("email", "")).lower())
                after = max(after, int(contact["id"]))
            if len(page) < 100:
                return emails

    def list_membership(self, contact_id: str, list_id: int) -> dict[str, Any] | None:
        """The contact's membership of the list as ActiveCampaign keeps it (status, udate, unsubscribe details),
        or None when it is not on the list."""
        response = self._request("GET", f"contacts/{contact_id}/contactLists")
        self._raise_for_status(response, f"GET /contacts/{contact_id}/contactLists")
        for membership in _json(response).get("contactLists") or []:
            if isinstance(membership, dict) and str(membership.get("list")) == str(list_id):
                return membership
        return None

    def set_list_status(self, contact_id: str, list_id: int, status: ListStatus) -> None:
        """Subscribe or unsubscribe one contact; the only call that re-subscribes someone."""
        body = {"contactList": {"list": list_id, "contact": int(contact_id), "status": int(status)}}
        response = self._request("POST", "contactLists", content=orjson.dumps(body))
        self._raise_for_status(response, "POST /contactLists")

    # --- sending, pacing and retrying --------------------------------------------------------------------

    def _request(self, method: str, path: str, *, pacer: Pacer | None = None, params: dict[str, Any] | None = None,
                 content: bytes | None = None) -> httpx.Response:
        """Send with pacing and retries; returns the first answer that is not a refusal or a server fault."""
        headers = {"Content-Type": "application/json"} if content is not None else None
        for attempt in range(1, self._max_attempts + 1):
            if pacer is not None:
                pacer.acquire()
            self.pacers.general.acquire()
            self.stats.sent()
            try:
                response = self._http.request(method, path, params=params, content=content, headers=headers)
            except httpx.TransportError as exc:
                self.stats.refused("connection")
                log.warning("%s /%s: %s (attempt %d)", method, path, type(exc).__name__, attempt)
                self._wait(self._backoff.after(attempt))
                continue
            wait = self._refusal_wait(response, attempt, pacer)
            if wait is None:
                return response
            log.info("%s /%s: answered %d, retrying in %.2fs", method, path, response.status_code, wait)
            self._wait(wait)
        raise TransientError(
            f"ActiveCampaign did not accept {method} /{path} after {self._max_attempts} attempts; "
            "the run can be retried, nothing confirmed so far is lost"
        )

    def _refusal_wait(self, response: httpx.Response, attempt: int, pacer: Pacer | None) -> float | None:
        """How long to wait before retrying ``response``'s request; None when it is an answer to keep.

        A refusal holds back the pacer it concerns for every thread, not only this request."""
        status = response.status_code
        if status in (429, 503):
            self.stats.refused(str(status))
            wait = retry_after_seconds(response, self._wall_clock())
            if wait is not None and wait > MAX_RETRY_AFTER_SECONDS:
                raise TransientError(f"ActiveCampaign answered {status} and asked to wait {wait:.0f} s; the run "
                                     "stopped, and the next run resumes where it left off")
            wait = self._backoff.after(attempt) if wait is None else wait
            self.pacers.general.hold_off(wait)
            return wait
        if is_rate_limit_400(response, _json(response)):
            self.stats.refused("400-rate-limit")
            wait = self._backoff.after_rate_limit(attempt, (pacer or self.pacers.general).interval)
            (pacer or self.pacers.general).hold_off(wait)
            return wait
        if status >= 500:
            self.stats.refused(str(status))
            return self._backoff.after(attempt)
        return None

    def _wait(self, seconds: float) -> None:
        self.stats.waited(seconds)
        self._sleep_fn(seconds)

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise DestinationAccessError(
                f"ActiveCampaign refused the API key ({status}) at {self.base_url}; check that the secret holds the "
                "key from Settings > Developer of this account and that destination.hostname is this account's"
            )
        if status >= 400:
            detail = str(_json(response).get("message") or response.reason_phrase)
            raise ExporterError(f"{what} answered {status}: {detail}")


def _http_client(base_url: str, api_key: str, timeout: float, transport: httpx.BaseTransport | None) -> httpx.Client:
    try:
        return httpx.Client(
            base_url=base_url + "/", transport=transport, timeout=timeout,
            headers={"Api-Token": api_key, "Accept": "application/json", "User-Agent": USER_AGENT},
            # Every sender and poller thread may hold a connection: keep them all alive between requests.
            limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))
    except (ValueError, ImportError) as exc:  # httpx refuses the proxy the environment names (scheme, SOCKS)
        raise ConfigError(
            f"the proxy named in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY cannot be used ({type(exc).__name__}); name an "
            "http:// or https:// proxy there, or list ActiveCampaign's host in NO_PROXY") from None


def _json(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; {} for no body, malformed JSON or a bare value (ActiveCampaign sends ``false``)."""
    try:
        data = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
