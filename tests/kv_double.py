"""A local Key Vault: HTTPS on 127.0.0.1 speaking enough of the data-plane REST API for ``SecretClient.get_secret``.

It answers like the real service, so the real SDK runs its real bearer-challenge flow against it:

- no or wrong ``Authorization: Bearer`` → 401 with the ``WWW-Authenticate`` challenge Key Vault sends;
- ``GET /secrets/{name}[/{version}]?api-version=...`` → the secret bundle JSON, 404 ``SecretNotFound``,
  403 ``Forbidden`` (``forbidden`` mode: RBAC, firewall or access policy; or a disabled secret);
- ``failures``: statuses (429, 5xx) to answer to the next authorized requests, one each, in order.

Usage::

    with KeyVaultDouble({"activecampaign-api-key": "k"}) as vault:
        client = SecretClient(vault.url, StaticTokenCredential(vault.token), **vault.client_options())

The certificate is issued at start by a throwaway CA (``vault.ca_file``); the client trusts only that CA.
The challenge names resource ``https://vault.azure.net``, which does not match 127.0.0.1, hence
``verify_challenge_resource=False`` in ``client_options()``.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_TOKEN = "kv-double-token"
DEFAULT_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
KEY_VAULT_RESOURCE = "https://vault.azure.net"

# Inner error codes of Key Vault's 403 answers.
FORBIDDEN_BY_RBAC = "ForbiddenByRbac"
FORBIDDEN_BY_FIREWALL = "ForbiddenByFirewall"
ACCESS_DENIED_BY_POLICY = "AccessDenied"

_FORBIDDEN_MESSAGES = {
    FORBIDDEN_BY_RBAC: (
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
        "definitions were changed recently, please observe propagation time.\r\nCaller: appid=00000000-0000-0000-"
        "0000-000000000000;oid=00000000-0000-0000-0000-000000000001\r\nAction: 'Microsoft.KeyVault/vaults/secrets/"
        "getSecret/action'\r\nAssignment: (not found)\r\nDecisionReason: null \r\nVault: kv-double;location=local\r\n"
    ),
    FORBIDDEN_BY_FIREWALL: (
        "Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\n"
        "Caller: appid=00000000-0000-0000-0000-000000000000\r\nVault: kv-double;location=local"
    ),
    ACCESS_DENIED_BY_POLICY: (
        "The user, group or application 'appid=00000000-0000-0000-0000-000000000000' does not have secrets get "
        "permission on key vault 'kv-double;location=local'."
    ),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    had_auth: bool  # sent any Authorization header
    authorized: bool  # sent the expected bearer token
    status: int


@dataclass
class _Version:
    version: str
    value: str
    enabled: bool
    created: int


class StaticTokenCredential:
    """A TokenCredential (and SupportsTokenInfo) that hands out one fixed token and records what was asked for."""

    def __init__(self, token: str = DEFAULT_TOKEN, lifetime_s: int = 3600) -> None:
        self.token = token
        self.lifetime_s = lifetime_s
        self.requests: list[dict[str, Any]] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.requests.append({"scopes": scopes, "tenant_id": tenant_id})
        return AccessToken(self.token, int(time.time()) + self.lifetime_s)

    def get_token_info(self, *scopes: str, options: Mapping[str, Any] | None = None) -> AccessTokenInfo:
        self.requests.append({"scopes": scopes, "tenant_id": (options or {}).get("tenant_id")})
        return AccessTokenInfo(self.token, int(time.time()) + self.lifetime_s)


class KeyVaultDouble:
    """Local HTTPS Key Vault. Thread-safe; one instance per test (the SDK caches challenges per host:port)."""

    def __init__(self, secrets: Mapping[str, str] | None = None, *, token: str = DEFAULT_TOKEN,
                 tenant: str = DEFAULT_TENANT, forbidden: str | None = None) -> None:
        self.token = token
        self.tenant = tenant
        self.forbidden = forbidden  # None, or one of FORBIDDEN_BY_RBAC, FORBIDDEN_BY_FIREWALL, ACCESS_DENIED_BY_POLICY
        self.failures: list[int] = []  # e.g. [429, 503]: answer the next authorized requests with these
        self.requests: list[RecordedRequest] = []
        self.tls_failures = 0  # handshakes that failed, e.g. a client that does not trust our CA
        self._versions: dict[str, list[_Version]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever requests or tls_failures change
        self._dir: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for name, value in (secrets or {}).items():
            self.set_secret(name, value)

    # -- secrets -------------------------------------------------------------------------------------------------

    def set_secret(self, name: str, value: str) -> str:
        """Add a new version (which becomes the latest) and return its version id."""
        version = _Version(uuid.uuid4().hex, value, True, int(time.time()))
        with self._lock:
            self._versions.setdefault(name.lower(), []).append(version)
        return version.version

    def disable(self, name: str) -> None:
        """Disable the latest version, as ``az keyvault secret set-attributes --enabled false`` does."""
        with self._lock:
            self._versions[name.lower()][-1].enabled = False

    def wait_for(self, condition: Callable[[KeyVaultDouble], bool], timeout_s: float = 5.0) -> bool:
        """Block until ``condition(self)`` holds (checked whenever the server records something) or time runs out."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout=timeout_s)

    def _record_tls_failure(self) -> None:
        with self._changed:
            self.tls_failures += 1
            self._changed.notify_all()

    def secret_requests(self, name: str) -> list[RecordedRequest]:
        prefix = f"/secrets/{name.lower()}"
        with self._lock:
            return [r for r in self.requests if r.path.lower().rstrip("/") == prefix
                    or r.path.lower().startswith(prefix + "/")]

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("KeyVaultDouble is not started")
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_file(self) -> str:
        if self._dir is None:
            raise RuntimeError("KeyVaultDouble is not started")
        return str(self._dir / "ca.pem")

    def client_options(self, **extra: Any) -> dict[str, Any]:
        """Options for ``SecretClient``: trust our CA, accept the vault.azure.net challenge on 127.0.0.1."""
        return {"connection_verify": self.ca_file, "verify_challenge_resource": False, **extra}

    def start(self) -> KeyVaultDouble:
        self._dir = Path(tempfile.mkdtemp(prefix="kv-double-"))
        tls = _write_certificates(self._dir)
        self._server = _TlsServer(("127.0.0.1", 0), _handler_for(self), tls, self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="kv-double",
                                        daemon=True)
        self._thread.start()
        _forget_challenge(self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            _forget_challenge(self.url)
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------------------------

    def _answer(self, method: str, target: str, authorization: str | None) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        authorized = authorization == f"Bearer {self.token}"
        status, headers, body = self._route(method, parts.path, query, authorized, authorization is not None)
        with self._lock:
            self.requests.append(RecordedRequest(method, unquote(parts.path), query,
                                                 authorization is not None, authorized, status))
            self._changed.notify_all()
        return status, headers, body

    def _route(self, method: str, path: str, query: dict[str, str], authorized: bool,
               had_auth: bool) -> tuple[int, dict[str, str], Any]:
        if not authorized:
            return 401, {"WWW-Authenticate": self._challenge()}, _error("Unauthorized", self._unauthorized(had_auth))
        if "api-version" not in query:
            return 400, {}, _error("BadParameter", "The 'api-version' query parameter is missing.")
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if method != "GET" or len(segments) not in (2, 3) or segments[0] != "secrets":
            return 400, {}, _error("BadParameter", f"The double does not implement {method} {path}.")
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return _failure(failure)
        if self.forbidden:
            message = _FORBIDDEN_MESSAGES.get(self.forbidden, "Forbidden")
            return 403, {}, _error("Forbidden", message, inner=self.forbidden)
        return self._get_secret(segments[1], segments[2] if len(segments) == 3 else None)

    def _get_secret(self, name: str, version_id: str | None) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            versions = list(self._versions.get(name.lower(), []))
        if version_id:
            versions = [v for v in versions if v.version == version_id]
        if not versions:
            label = f"{name}/{version_id}" if version_id else name
            return 404, {}, _error(
                "SecretNotFound",
                f"A secret with (name/id) {label} was not found in this key vault. If you recently deleted this "
                "secret you may be able to recover it using the correct recovery command. For help resolving this "
                "issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        found = versions[-1]
        if not found.enabled:
            return 403, {}, _error("Forbidden", "Operation get is not allowed on a disabled secret.",
                                   inner="SecretDisabled")
        return 200, {}, {
            "value": found.value,
            "id": f"{self.url}/secrets/{name}/{found.version}",
            "attributes": {"enabled": True, "created": found.created, "updated": found.created,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {},
        }

    def _unauthorized(self, had_auth: bool) -> str:
        if not had_auth:
            return "AKV10000: Request is missing a Bearer or PoP token."
        return (f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{self.tenant}/, found "
                "https://sts.windows.net/00000000-0000-0000-0000-000000000000/.")

    def _challenge(self) -> str:
        return (f'Bearer authorization="https://login.microsoftonline.com/{self.tenant}", '
                f'resource="{KEY_VAULT_RESOURCE}"')


def _forget_challenge(url: str) -> None:
    """Drop the SDK's process-wide challenge cached for this host:port.

    A later double may get the same free port; with a stale cache entry its first request would skip the challenge.
    """
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.remove_challenge_for_url(url)


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


def _failure(status: int) -> tuple[int, dict[str, str], Any]:
    if status == 429:
        return 429, {"Retry-After": "0"}, _error(
            "Throttled", "Request was not processed because too many requests were received. "
            "Reason: VaultRequestTypeLimitReached")
    return status, {}, _error("ServiceUnavailable" if status == 503 else "InternalServerError",
                              "The service is temporarily unavailable. Please retry later.")


def _handler_for(vault: KeyVaultDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # an idle keep-alive connection must not hold a thread forever

        def do_GET(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = vault._answer(self.command, self.path, self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-ms-keyvault-service-version", "1.9.0.0")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output; requests are recorded instead

    return Handler


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext, vault: KeyVaultDouble) -> None:
        super().__init__(address, handler)
        self._tls = tls
        self._vault = vault

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        # The handshake runs here, in the per-connection thread, so a stalled client cannot block accept().
        request.settimeout(10)
        try:
            tls_socket = self._tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self._vault._record_tls_failure()
            return
        try:
            self.RequestHandlerClass(tls_socket, client_address, self)
        finally:
            tls_socket.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request is not a test failure; assertions use the recorded requests


def _write_certificates(directory: Path) -> ssl.SSLContext:
    """Issue a throwaway CA and a server certificate for 127.0.0.1/localhost; return the server's TLS context."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kv-double test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    server_cert = (
        _builder(server_name, ca_name, server_key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (directory / "server-key.pem").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem", directory / "server-key.pem")
    return context


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, now: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
