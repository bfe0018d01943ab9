"""The emulator's HTTP server and its Python API for tests, the demo and the benchmark.

``Emulator(...).start()`` serves ActiveCampaign's /api/3 routes (see ``account.py``) on a free 127.0.0.1 port;
``/__emulator/...`` (no auth) exposes the same inspection and controls over HTTP for subprocess use.
"""
from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import orjson

from .account import (
    API_PREFIX,
    BULK_IMPORT_PATH,
    DROP,
    Account,
    Config,
    Reply,
    json_reply,
)
from .emails import is_valid_email, normalise_email
from .limits import Faults
from .store import OWN_UNSUBSCRIBE, SUBSCRIBED, UNSUBSCRIBED

CONTROL_PREFIX = "/__emulator"
MAX_REQUEST_BYTES = 8_000_000  # far above AC's limit, so oversize requests still get AC's own 400
DEFAULT_LISTS = {1: "Master Contact List"}
_CONTACT_VALUES = frozenset({"firstName", "first_name", "lastName", "last_name", "phone", "fields", "tags",
                             "account"})


def tune_gc_for_millions() -> None:
    """Make Python's cyclic GC rare, for a process that holds up to millions of emulated contacts.

    Stored contacts are tuples the GC stops tracking, so its heuristics see a small heap and run full
    collections very often, each walking the million-entry containers: at 1M contacts that is over a third of
    the emulator's CPU. Process-wide, so call it only in a process that is mostly the emulator (the CLI does).
    """
    gc.set_threshold(100_000, 50, 1000)


class Emulator:
    """A local ActiveCampaign API v3 account. Thread-safe; use as a context manager or start()/stop()."""

    def __init__(self, api_key: str = "test-key", *, lists: dict[int, str] | None = None, time_scale: float = 1.0,
                 latency: float = 0.0, enforce_limits: bool = True, bulk_per_minute: int = 100,
                 single_per_minute: int = 20, requests_per_second: int = 5, import_delay: float = 1.0,
                 seed: int = 0, port: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.config = Config(api_key, time_scale, latency, enforce_limits, bulk_per_minute, single_per_minute,
                             requests_per_second, import_delay, seed)
        self.account = Account(self.config, DEFAULT_LISTS if lists is None else lists, clock)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ac-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_address[1]

    @property
    def hostname(self) -> str:
        """What goes in an export's destination.hostname; the API base is hostname + "/api/3"."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.hostname + API_PREFIX

    # --- inspection --------------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.account.faults

    def contacts(self) -> list[dict[str, Any]]:
        with self._applied() as store:
            return [store.view(c) for c in store.all_contacts()]

    def contact(self, email: str) -> dict[str, Any] | None:
        with self._applied() as store:
            found = store.by_email(email.strip())
            return None if found is None else store.view(found)

    def list_status(self, email: str, list_id: int) -> int | None:
        with self._applied() as store:
            found = store.by_email(email.strip())
            return None if found is None else store.status(found.id, list_id)

    def subscribers(self, list_id: int) -> set[str]:
        with self._applied() as store:
            return store.emails_on_list(list_id, SUBSCRIBED)

    def unsubscribed(self, list_id: int) -> set[str]:
        with self._applied() as store:
            return store.emails_on_list(list_id, UNSUBSCRIBED)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.account.lock:
            return list(self.account.log.entries)

    def requests_since(self, seq: int) -> list[dict[str, Any]]:
        with self.account.lock:
            return self.account.log.entries[max(seq, 0):]

    def bulk_import_requests(self, accepted_only: bool = False) -> list[dict[str, Any]]:
        return [entry for entry in self.requests
                if entry["path"] == BULK_IMPORT_PATH and entry["method"] == "POST"
                and (entry["status"] == 200 or not accepted_only)]

    def stats(self) -> dict[str, Any]:
        with self._applied() as store:
            log = self.account.log
            lists = {str(i): {"name": name, "subscribed": store.count_on_list(i, SUBSCRIBED),
                              "unsubscribed": store.count_on_list(i, UNSUBSCRIBED)} for i, name in store.lists.items()}
            return {
                "contacts": store.contact_count,
                "subscribers": {i: v["subscribed"] for i, v in lists.items()},
                "lists": lists,
                "requests": {"total": len(log.entries), "byStatus": dict(log.by_status)},
                "bulkImports": {"accepted": log.bulk_accepted, "refused": log.bulk_refused,
                                "contactsReceived": log.contacts_received, "pending": store.pending_count,
                                "firstAcceptedAt": log.first_accepted, "lastAcceptedAt": log.last_accepted},
                # Most admitted requests in any window of the limits' (even with limits off), and those windows.
                "peaks": {name: counter.peak for name, counter in self.account.peaks.items()},
                "windows": {name: {"limit": window.limit, "seconds": window.seconds}
                            for name, window in self.account.windows.items()},
                "uptime": round(self.account.now() - self.account.started, 3),
                "faults": self.faults.describe(),
            }

    # --- seeding and controls ----------------------------------------------------------------------------

    def add_contact(self, email: str, list_id: int | None = None, status: int = SUBSCRIBED,
                    **values: Any) -> dict[str, Any]:
        """Seed a contact as if someone else had put it there (applied at once, no request logged).

        ``values``: firstName (or first_name), lastName (or last_name), phone, fields ({id: value}), tags ([names]),
        account (the account name).
        """
        unknown = set(values) - _CONTACT_VALUES
        if unknown:
            raise TypeError(f"add_contact() got unknown values {sorted(unknown)}; use {sorted(_CONTACT_VALUES)}")
        email = normalise_email(email.strip())
        if not is_valid_email(email):
            raise ValueError(f"not an email address ActiveCampaign accepts: {email!r}")
        with self._applied() as store:
            if list_id is not None and list_id not in store.lists:
                raise KeyError(f"no list {list_id}")
            field_pairs = [(int(k), str(v)) for k, v in (values.get("fields") or {}).items()]
            contact, _ = store.upsert(email, values.get("firstName", values.get("first_name")),
                                      values.get("lastName", values.get("last_name")), values.get("phone"),
                                      field_pairs, list(values.get("tags") or ()), values.get("account"))
            if list_id is not None:
                store.set_status(contact.id, list_id, status)
            return store.view(contact)

    def unsubscribe(self, email: str, list_id: int, *, own: bool = False) -> None:
        """Take a contact off a list: by an admin or another integration (``own=False``: no details), or by the
        person themselves through a campaign's unsubscribe link (``own=True``: reason, campaign and message set)."""
        with self._applied() as store:
            found = store.by_email(email.strip())
            if found is None:
                raise KeyError(f"no contact {email!r}")
            store.set_status(found.id, list_id, UNSUBSCRIBED, OWN_UNSUBSCRIBE if own else None)

    def add_list(self, name: str) -> int:
        with self.account.lock:
            return self.account.store.add_list(name)

    def reject_emails(self, emails: Iterable[str]) -> None:
        """Emails AC refuses as malformed: any bulk request containing one fails whole with 400."""
        with self.account.lock:
            self.account.rejected_emails |= {normalise_email(e.strip()) for e in emails}

    def fail_at_import(self, emails: Iterable[str]) -> None:
        """Emails accepted by bulk import but reported in import/info "failure" (not created/updated)."""
        with self.account.lock:
            self.account.fail_emails |= {normalise_email(e.strip()) for e in emails}

    def exclude(self, emails: Iterable[str]) -> None:
        """Put emails on the account's exclusion list: a bulk import skips them (not created, not subscribed) and
        reports them in import/info "failure", with "Row skipped - It is on exclusion list" in "failureReasons"."""
        with self.account.lock:
            self.account.excluded_emails |= {normalise_email(e.strip()) for e in emails}

    def reset_log(self) -> None:
        with self.account.lock:
            self.account.log = type(self.account.log)()

    def reset(self) -> None:
        """Everything back to the start: initial lists, no contacts, no log, no faults, empty rate windows."""
        self.account.reset()

    def _applied(self) -> _AppliedStore:
        return _AppliedStore(self.account)

    # --- /__emulator control routes ----------------------------------------------------------------------

    def handle_control(self, method: str, target: str, body: bytes) -> Reply:
        split = urlsplit(target)
        route = split.path[len(CONTROL_PREFIX):].strip("/")
        query = dict(parse_qsl(split.query))
        try:
            if (method, route) == ("GET", "stats"):
                return json_reply(200, self.stats())
            if (method, route) == ("GET", "requests"):
                return json_reply(200, self._requests_page(query))
            if (method, route) == ("GET", "contact"):
                found = self.contact(query.get("email", ""))
                return Reply(200, orjson.dumps({"contact": found}, option=orjson.OPT_NON_STR_KEYS))
            if (method, route) == ("POST", "faults"):
                self._apply_fault_controls(orjson.loads(body or b"{}"))
                return json_reply(200, {"faults": self.faults.describe()})
            if (method, route) == ("POST", "unsubscribe"):  # {"email", "list", "own": bool}
                data = orjson.loads(body or b"{}")
                self.unsubscribe(str(data["email"]), int(data["list"]), own=bool(data.get("own")))
                return json_reply(200, {"unsubscribed": data["email"]})
            if (method, route) == ("POST", "reset"):
                self.reset()
                return json_reply(200, {"reset": True})
            if (method, route) == ("POST", "reset_log"):
                self.reset_log()
                return json_reply(200, {"reset": "log"})
        except (ValueError, TypeError, KeyError) as exc:  # orjson.JSONDecodeError is a ValueError
            return json_reply(400, {"message": f"bad control request: {exc}"})
        return json_reply(404, {"message": f"no control route {method} {CONTROL_PREFIX}/{route}"})

    def _requests_page(self, query: dict[str, str]) -> dict[str, Any]:
        since = int(query.get("since", "0"))
        entries = self.requests_since(since)
        if query.get("emails", "1") in ("0", "false"):
            entries = [{k: v for k, v in e.items() if k != "emails"} for e in entries]
        return {"requests": entries, "next": since + len(entries)}

    def _apply_fault_controls(self, data: dict[str, Any]) -> None:
        """JSON: {"clear": bool, "rate_429".., "paths": [...], "script": [...], "script_path": str,
        "retry_after": seconds (for a script of 429/503), "reject_emails": [...], "fail_at_import": [...]};
        rates replace the current ones when any is given."""
        if not isinstance(data, dict):
            raise TypeError("expected a JSON object")
        if data.get("clear"):
            self.faults.clear()
        rate_keys = ("rate_429", "rate_503", "rate_500", "rate_drop", "paths")
        if any(key in data for key in rate_keys):
            self.faults.set(**{key: data[key] for key in rate_keys if key in data})
        if data.get("script"):
            self.faults.script(data["script"], path=data.get("script_path"), retry_after=data.get("retry_after"))
        if data.get("reject_emails"):
            self.reject_emails(data["reject_emails"])
        if data.get("fail_at_import"):
            self.fail_at_import(data["fail_at_import"])


class _AppliedStore:
    """Holds the account lock and applies due imports, so inspection sees what a poll would see."""

    def __init__(self, account: Account) -> None:
        self._account = account

    def __enter__(self):
        self._account.lock.acquire()
        self._account.store.apply_due(self._account.now(), self._account.fail_emails,
                                      excluded=self._account.excluded_emails)
        return self._account.store

    def __exit__(self, *exc: object) -> None:
        self._account.lock.release()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections so their handler threads finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections end after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = self._read_body()
        if body is None:
            return
        emulator = self.server.emulator
        if self.path.startswith(CONTROL_PREFIX + "/"):
            reply = emulator.handle_control(self.command, self.path, body)
        elif self.path == API_PREFIX or self.path.startswith(API_PREFIX + "/"):
            reply = emulator.account.handle(self.command, self.path, self.headers.get("Api-Token"), body)
        else:
            reply = json_reply(404, {"message": "Not Found"})
        if reply is DROP:
            self.close_connection = True  # nothing written: the client sees the connection closed
            return
        self._write(reply)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._write(json_reply(413, {"message": "Request Entity Too Large"}))
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BYTES:
                self.close_connection = True
                self._write(json_reply(413, {"message": "Request Entity Too Large"}))
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, reply: Reply) -> None:
        phrase = HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
        head = [f"HTTP/1.1 {reply.status} {phrase}", "Content-Type: application/json",
                f"Content-Length: {len(reply.body)}"]
        head.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
