"""ActiveCampaign API v3 client: pacing, retries and the bulk import calls the exporter needs.

Every request goes through one shared pacer per account (AC limits all keys of an account together), so
several bulk imports in flight never exceed the limits; refusals (429/503 with Retry-After, 400 "Rate limit
exceeded.") push the pacer back for every thread, not just the one that was refused.
"""
from __future__ import annotations

import base64
import http.client
import logging
import math
import random
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote, urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx
import orjson

from .errors import ConfigError, DestinationAccessError, ExporterError, TransientError
from .settings import RateLimits

log = logging.getLogger(__name__)

MAX_CONTACTS_PER_REQUEST = 250
MAX_REQUEST_BYTES = 400_000
# Headroom under AC's sliding windows, so thread and network jitter never push a request over a limit. The bulk
# limit sets the run's pace, so its margin is thin; the general limit has spare room, so it gets a wide one.
# 98 of 100 bulk imports a minute leaves two requests' time (1.2 s at AC's real pace) for jitter between our
# start times and AC's arrival times; 99 drew dozens of refusals in the time-scaled benchmark, 98 none or a few.
BULK_PACING_MARGIN = 0.98
GENERAL_PACING_MARGIN = 0.85
# import/info polls may use this share of what bulk imports leave of the general limit; bulk imports come first.
POLL_SHARE = 0.8
RATE_LIMIT_MESSAGE = "rate limit exceeded"


class Pacer:
    """Spaces request starts at ``rate`` per second, shared by all threads.

    Spacing alone lets requests bunch up when the process is starved of CPU (threads that slept until their
    slot all wake late together), so actual start times are also held to two sliding windows:
    - a short one (≥ 4 intervals, ≥ 0.25 s) allowing ``rate × window`` starts, so late threads never start
      together;
    - optionally ``window_limit`` starts in any ``window_seconds`` (ActiveCampaign's own window), so requests
      that were held up cannot catch up faster than the server's window allows: a stall costs its time once
      instead of turning into refusals.
    """

    def __init__(self, rate_per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, window_limit: int | None = None,
                 window_seconds: float | None = None) -> None:
        self.interval = 1.0 / rate_per_second
        # A whole number of intervals, so the window allows exactly ``rate`` and costs nothing when starts are
        # evenly spaced.
        short_limit = max(4, math.ceil(0.25 * rate_per_second))
        self._windows = [(short_limit, short_limit * self.interval, deque())]
        if window_limit and window_seconds:
            self._windows.append((window_limit, window_seconds, deque()))
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        with self._lock:  # reserve a slot: each thread sleeps once, no herd waking at every interval
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
        held_by_server_window = False
        while True:  # threads that woke late together must not start together
            with self._lock:
                now = self._clock()
                waits = [self._window_wait(limit, seconds, starts, now) for limit, seconds, starts in self._windows]
                if max(waits) <= 0:
                    for _, _, starts in self._windows:
                        starts.append(now)
                    if held_by_server_window:  # slots reserved meanwhile are behind us: space the next from here
                        self._next = max(self._next, now + self.interval)
                    return
            held_by_server_window = held_by_server_window or (len(waits) > 1 and waits[1] > 0)
            self._sleep(max(waits))

    @staticmethod
    def _window_wait(limit: int, seconds: float, starts: deque, now: float) -> float:
        while starts and starts[0] <= now - seconds:
            starts.popleft()
        return starts[0] + seconds - now if len(starts) >= limit else 0.0

    def hold_off(self, seconds: float) -> None:
        """No request may start for ``seconds`` from now (after a refusal)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


@dataclass(slots=True)
class Answer:
    """One HTTP answer from ActiveCampaign, read in full."""

    status_code: int
    headers: dict[str, str]  # names lower-cased
    content: bytes
    reason_phrase: str = ""

    def json(self) -> Any:
        return orjson.loads(self.content)


# What a request can fail with before an answer arrives: refused, reset or dropped connections, timeouts, TLS
# failures (all OSError) and answers cut short or garbled (HTTPException).
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class Connections:
    """Keep-alive HTTP/1.1 connections to one ActiveCampaign account, through the standard library's http.client.

    The exporter makes thousands of requests a run from many threads that share one interpreter lock, so the
    CPU each request costs is what bounds a fast run. Uncontended, a bulk import and its poll cost ~0.4 ms
    through http.client, ~0.9 ms through httpcore and ~1.5 ms through httpx.Client, whose extra layers (URL
    merging, cookies, auth, redirects, hooks) these calls do not use. Certificates and proxies come from the
    environment as they would with httpx: SSL_CERT_FILE / SSL_CERT_DIR, and HTTP(S)_PROXY / ALL_PROXY / NO_PROXY
    naming an http:// proxy (HTTPS goes through it with CONNECT).
    """

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._target = (parts.hostname or "", parts.port or (443 if self._https else 80))
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Host": parts.netloc, **headers}
        self._timeout = timeout
        self._ssl = httpx.create_ssl_context(trust_env=True) if self._https else None
        proxy = _proxy_for(parts.scheme, parts.hostname or "")
        self._proxy = proxy[:2] if proxy else None
        self._proxy_headers = {"Proxy-Authorization": proxy[2]} if proxy and proxy[2] else {}
        # Plain HTTP through a proxy names the whole URL in the request line and authenticates each request.
        self._origin = f"{parts.scheme}://{parts.netloc}" if proxy and not self._https else ""
        if self._origin:
            self._headers.update(self._proxy_headers)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        target = self._origin + self._prefix + path + ("?" + urlencode(params) if params else "")
        all_headers = {**self._headers, **headers} if headers else self._headers
        # Every failure goes to the caller's retries, which are paced and counted: a connection dropped after the
        # request left cannot be told from a stale keep-alive one, and idle ones are checked before reuse.
        return self._exchange(self._checkout(), method, target, content, all_headers)

    def _exchange(self, connection: http.client.HTTPConnection, method: str, target: str, content: bytes | None,
                  headers: dict[str, str]) -> Answer:
        try:
            connection.request(method, target, body=content, headers=headers)
            response = connection.getresponse()
            answer = Answer(response.status, {name.lower(): value for name, value in response.getheaders()},
                            response.read(), response.reason)
        except BaseException:
            connection.close()
            raise
        self._checkin(connection, response.will_close)
        return answer

    def _checkout(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not _dropped(connection):
                    return connection
                connection.close()
        return self._connect()

    def _checkin(self, connection: http.client.HTTPConnection, will_close: bool) -> None:
        with self._lock:
            if will_close or self._closed:
                connection.close()
            else:
                self._idle.append(connection)

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._proxy or self._target
        if self._https:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._ssl)
            if self._proxy:
                connection.set_tunnel(*self._target, headers=self._proxy_headers)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self._timeout)
        return connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _proxy_for(scheme: str, hostname: str) -> tuple[str, int, str] | None:
    """The proxy the environment names for this URL (as urllib and httpx read it): host, port and the
    Proxy-Authorization value ("" without credentials), or None."""
    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or proxy_bypass(hostname):
        return None
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"the proxy {parts.scheme}://{parts.hostname or ''} from the environment is not supported: "
                          "name an http:// proxy in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY (HTTPS goes through it "
                          "with CONNECT), or list ActiveCampaign's host in NO_PROXY")
    credentials = ""
    if parts.username:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        credentials = "Basic " + base64.b64encode(pair).decode("ascii")
    return parts.hostname, parts.port or 80, credentials


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by the other side (it reads as ready: EOF or junk)."""
    sock = connection.sock
    if sock is None:
        return False  # never connected or closed by http.client itself: it reconnects on the next request
    poller = select.poll()  # not select(): it cannot watch descriptors above 1023
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class BatchRejected(ExporterError):
    """AC refused a whole bulk request because of some contacts (e.g. one malformed email)."""

    def __init__(self, bad: dict[int, str], message: str) -> None:
        super().__init__(message)
        self.bad = bad  # index in the request → AC's reason


@dataclass
class ImportStatus:
    status: str  # waiting | claimed | active | completed | failed | interrupted | unknown
    success: list[str] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "interrupted")


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    waited_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refused(self, kind: str) -> None:
        with self._lock:
            self.refusals[kind] = self.refusals.get(kind, 0) + 1
            self.retries += 1

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "refusals": dict(self.refusals),
                "waitedSeconds": round(self.waited_seconds, 3)}


class ActiveCampaignClient:
    def __init__(self, base_url: str, api_key: str, limits: RateLimits, *, max_attempts: int = 10,
                 timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = Connections(self.base_url, {"Api-Token": api_key, "Accept": "application/json",
                                                 "User-Agent": "ci-activecampaign-exporter"}, timeout)
        general = limits.requests_per_second * GENERAL_PACING_MARGIN
        bulk = limits.bulk_imports_per_minute / 60.0 * BULK_PACING_MARGIN
        # ActiveCampaign counts 5 requests in a second and 100 bulk imports in a minute; at the configured
        # limits those windows last 5 and 100 requests' worth of time.
        self._general = Pacer(general, window_limit=math.floor(5 * GENERAL_PACING_MARGIN),
                              window_seconds=5 / limits.requests_per_second)
        self._bulk = Pacer(bulk, window_limit=math.floor(100 * BULK_PACING_MARGIN),
                           window_seconds=100 * 60.0 / limits.bulk_imports_per_minute)
        self._polls = Pacer(max(general - bulk, general * 0.2) * POLL_SHARE)
        # Backoff scales with the configured limits so a time-scaled emulator gets time-scaled retries.
        self._base_delay = min(1.0, 2.0 / limits.requests_per_second)
        self._max_delay = 150.0 / limits.requests_per_second
        self._max_attempts = max_attempts
        self.stats = ClientStats()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ActiveCampaignClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls -------------------------------------------------------------------------------------------

    def check_access(self, list_id: int) -> dict[str, Any]:
        """Verify the key and that the list exists, before anything is sent. Returns the list."""
        response = self._request("GET", f"/lists/{list_id}")
        if response.status_code == 404:
            raise DestinationAccessError(
                f"ActiveCampaign list {list_id} does not exist in the account at {self.base_url}; "
                "set destination.listId to the id shown in ActiveCampaign under Contacts > Lists"
            )
        self._raise_for_status(response, f"GET /lists/{list_id}")
        return response.json().get("list", {})

    def bulk_import(self, encoded_contacts: list[bytes], emails: list[str]) -> str:
        """Queue one bulk import of pre-encoded contacts; returns its batch id.

        Raises BatchRejected naming (by index) the contacts AC refused, when AC names them.
        """
        body = encode_bulk_body(encoded_contacts)
        pacer = self._bulk if len(encoded_contacts) > 1 else None
        response = self._request("POST", "/import/bulk_import", content=body, extra_pacer=pacer)
        data = _json(response)
        if response.status_code == 400:
            raise BatchRejected(_bad_contacts(data, emails), str(data.get("message") or "bulk import refused"))
        self._raise_for_status(response, "POST /import/bulk_import")
        batch_id = data.get("batchId")
        if not batch_id:
            raise TransientError(f"bulk import answered {response.status_code} without a batchId")
        return str(batch_id)

    def import_info(self, batch_id: str) -> ImportStatus:
        response = self._request("GET", "/import/info", params={"batchId": batch_id}, extra_pacer=self._polls)
        if response.status_code == 404:
            return ImportStatus("unknown")
        self._raise_for_status(response, "GET /import/info")
        data = _json(response)
        if not isinstance(data, dict) or not data.get("status"):
            return ImportStatus("waiting")  # AC answers false/empty when polled too soon
        return ImportStatus(str(data["status"]), [str(x) for x in data.get("success") or []],
                            [str(x).lower() for x in data.get("failure") or []])

    def find_contact_id(self, email: str) -> str | None:
        response = self._request("GET", "/contacts", params={"email": email})
        self._raise_for_status(response, "GET /contacts")
        contacts = _json(response).get("contacts") or []
        return str(contacts[0]["id"]) if contacts else None

    def set_list_status(self, contact_id: str, list_id: int, status: int) -> None:
        """Subscribe (1) or unsubscribe (2) one contact; the only way to re-subscribe someone."""
        body = {"contactList": {"list": list_id, "contact": int(contact_id), "status": status}}
        response = self._request("POST", "/contactLists", content=orjson.dumps(body))
        self._raise_for_status(response, "POST /contactLists")

    # --- transport ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, extra_pacer: Pacer | None = None, **kwargs: Any) -> Answer:
        """Send with pacing and retries; returns the first answer that is not a refusal or a server fault."""
        if "content" in kwargs:
            kwargs.setdefault("headers", {"Content-Type": "application/json"})
        for attempt in range(1, self._max_attempts + 1):
            if extra_pacer is not None:
                extra_pacer.acquire()
            self._general.acquire()
            self.stats.requests += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except TRANSPORT_ERRORS as exc:
                self.stats.refused("connection")
                log.warning("%s %s: %s (attempt %d)", method, path, type(exc).__name__, attempt)
                self._sleep(self._backoff(attempt))
                continue
            wait = self._refusal_wait(response, attempt, extra_pacer)
            if wait is None:
                return response
            log.info("%s %s: answered %d, retrying in %.2fs", method, path, response.status_code, wait)
            self._sleep(wait)
        raise TransientError(
            f"ActiveCampaign did not accept {method} {path} after {self._max_attempts} attempts; "
            "the run can be retried, nothing confirmed so far is lost"
        )

    def _refusal_wait(self, response: Answer, attempt: int, pacer: Pacer | None) -> float | None:
        status = response.status_code
        if status in (429, 503):
            self.stats.refused(str(status))
            wait = _retry_after(response) or self._backoff(attempt)
            self._general.hold_off(wait)
            return wait
        if status == 400 and _is_rate_limit(response):
            self.stats.refused("400-rate-limit")
            # No Retry-After here: wait one bulk slot per attempt so the sliding minute can drain.
            slot = pacer.interval if pacer else self._base_delay
            wait = min(self._max_delay, slot * (2 ** (attempt - 1))) * random.uniform(1.0, 1.25)
            (pacer or self._general).hold_off(wait)
            return wait
        if status >= 500:
            self.stats.refused(str(status))
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        return min(self._max_delay, self._base_delay * (2 ** (attempt - 1))) * random.uniform(0.5, 1.0)

    def _sleep(self, seconds: float) -> None:
        self.stats.waited_seconds += seconds
        time.sleep(seconds)

    def _raise_for_status(self, response: Answer, what: str) -> None:
        status = response.status_code
        if status == 403 or status == 401:
            raise DestinationAccessError(
                f"ActiveCampaign refused the API key ({status}) at {self.base_url}; check that the secret holds the "
                "key from Settings > Developer of this account and that destination.hostname is this account's"
            )
        if status >= 400:
            detail = str(_json(response).get("message") or response.reason_phrase)
            raise ExporterError(f"{what} answered {status}: {detail}")


BODY_OVERHEAD = len(b'{"contacts":[],"exclude_automations":false}')


def encode_bulk_body(encoded_contacts: list[bytes]) -> bytes:
    return b'{"contacts":[' + b",".join(encoded_contacts) + b'],"exclude_automations":false}'


def _json(response: Answer) -> Any:
    try:
        data = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {"value": data}


def _is_rate_limit(response: Answer) -> bool:
    return RATE_LIMIT_MESSAGE in str(_json(response).get("message", "")).lower()


def _retry_after(response: Answer) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return None


def _bad_contacts(data: dict[str, Any], emails: list[str]) -> dict[int, str]:
    """Which contacts a whole-batch 400 names, by index. Empty when AC did not say (caller splits the batch)."""
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
