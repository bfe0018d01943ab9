"""The ActiveCampaign client's connections: headers, answers, keep-alive, and proxies from the environment."""
from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from exporter.activecampaign import ActiveCampaignClient, Connections
from exporter.errors import ConfigError
from exporter.settings import RateLimits


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with 200 and remembers its request line and headers (an HTTP proxy sees full URLs)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str]]] = []
    connections: set[tuple[str, int]] = set()  # client addresses: one per connection
    hang_up_after_answer = False  # close the connection after answering, without saying so (an idle timeout)
    hung_up = threading.Event()

    def do_GET(self) -> None:
        self.seen.append((self.requestline, {k.lower(): v for k, v in self.headers.items()}))
        self.connections.add(self.client_address)
        body = b'{"list": {"id": "3"}}'
        self.send_response(200, "Fine Thanks")
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.hang_up_after_answer:
            self.close_connection = True

    def finish(self) -> None:
        super().finish()
        if self.close_connection:
            self.connection.shutdown(socket.SHUT_WR)  # the FIN goes out now, not when the server gets round to it
            self.hung_up.set()

    def do_CONNECT(self) -> None:  # a proxy asked to tunnel HTTPS: remember, and refuse
        self.seen.append((self.requestline, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(502, "No Tunnels Here")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen, _Recorder.connections, _Recorder.hang_up_after_answer = [], set(), False
    _Recorder.hung_up = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_requests_carry_the_key_and_host_and_answers_keep_status_headers_and_body(recorder, no_proxy_env):
    connections = Connections(recorder + "/api/3", {"Api-Token": "k-123"}, timeout=5)
    try:
        answer = connections.request("GET", "/import/info", params={"batchId": "a b&c"})
    finally:
        connections.close()
    line, headers = _Recorder.seen[0]
    assert line == "GET /api/3/import/info?batchId=a+b%26c HTTP/1.1"
    assert headers["api-token"] == "k-123" and headers["host"] == recorder.split("//")[1]
    assert (answer.status_code, answer.reason_phrase) == (200, "Fine Thanks")
    assert answer.headers["retry-after"] == "7" and answer.json() == {"list": {"id": "3"}}


def test_an_http_proxy_from_the_environment_carries_the_requests(recorder, no_proxy_env):
    no_proxy_env.setenv("HTTP_PROXY", recorder)
    with ActiveCampaignClient("http://account.example.invalid/api/3", "k", RateLimits()) as client:
        assert client.check_access(3) == {"id": "3"}
    assert _Recorder.seen[0][0] == "GET http://account.example.invalid/api/3/lists/3 HTTP/1.1"


def test_no_proxy_sends_requests_straight_to_the_account(recorder, no_proxy_env):
    no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    with ActiveCampaignClient(recorder + "/api/3", "k", RateLimits()) as client:
        assert client.check_access(3) == {"id": "3"}
    assert _Recorder.seen[0][0] == "GET /api/3/lists/3 HTTP/1.1"


def test_a_kept_alive_connection_the_server_closed_is_not_reused(recorder, no_proxy_env):
    _Recorder.hang_up_after_answer = True
    connections = Connections(recorder + "/api/3", {}, timeout=5)
    try:
        first = connections.request("GET", "/lists/3")
        assert _Recorder.hung_up.wait(5)  # the server has closed its end: the idle connection is now stale
        second = connections.request("GET", "/lists/3")  # would fail on the closed socket if it were reused
    finally:
        connections.close()
    assert first.status_code == second.status_code == 200
    assert len(_Recorder.seen) == 2 and len(_Recorder.connections) == 2


def test_https_goes_through_the_proxy_with_connect_and_its_credentials(recorder, no_proxy_env):
    host_port = recorder.split("//")[1]
    no_proxy_env.setenv("HTTPS_PROXY", f"http://ops%40corp:s3cret@{host_port}")
    connections = Connections("https://account.example.invalid/api/3", {"Api-Token": "k"}, timeout=5)
    try:
        with pytest.raises(OSError, match="502"):
            connections.request("GET", "/lists/3")
    finally:
        connections.close()
    line, headers = _Recorder.seen[0]
    assert line == "CONNECT account.example.invalid:443 HTTP/1.0"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"ops@corp:s3cret").decode()
    assert "api-token" not in headers  # the key travels only inside the tunnel


def test_a_proxy_scheme_that_cannot_be_used_is_a_config_error_naming_the_fix(no_proxy_env):
    no_proxy_env.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match="name an http:// proxy .*NO_PROXY"):
        Connections("https://account.example.invalid/api/3", {}, timeout=5)
