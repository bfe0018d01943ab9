"""``destination.hostname``: which hosts an export may send to, in the one form the code uses.

The API key goes in a header to this host, so only ActiveCampaign's own API hosts are accepted
(``<account>.api-us<N>.com``, ``<account>.activehosted.com``), plus ``http://127.0.0.1:PORT`` /
``http://localhost:PORT`` for a local emulator. Any other host must be named exactly in the app setting
``ALLOWED_DESTINATION_HOSTS``. IP addresses are refused in every notation (``127.1``, ``0177.0.0.1``,
``0x7f000001``, ``169.254.43518``, IPv6), and so are non-ASCII (look-alike) hostnames.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

log = logging.getLogger("exporter.settings")  # named after the package: the warning keeps its logger name

ALLOWED_HOSTS_SETTING = "ALLOWED_DESTINATION_HOSTS"

_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# One account label (not punycode), then ActiveCampaign's API domain for a region or activehosted.com.
_ACTIVECAMPAIGN_HOST_RE = re.compile(
    r"(?!xn--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.(?:api-us[1-9][0-9]{0,2}|activehosted)\.com"
)
# URL parsers (WHATWG, curl, getaddrinfo) read a host whose last label is a number as an IPv4 address,
# in decimal, octal (leading 0) or hex (0x), with fewer than four parts allowed: 127.1, 0x7f000001.
_NUMERIC_LABEL_RE = re.compile(r"0x[0-9a-f]*|[0-9]+")


def allowed_destination_hosts(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The exact hostnames the app setting ``ALLOWED_DESTINATION_HOSTS`` allows besides ActiveCampaign's.

    Read from the environment each time a config is validated, so the command line, the functions and
    ``validate`` see the same list whichever of the config and the other app settings is read first.
    """
    env = os.environ if env is None else env
    return frozenset(host.strip().lower() for host in (env.get(ALLOWED_HOSTS_SETTING) or "").split(",") if host.strip())


def normalise_hostname(value: str) -> str:
    """Return a bare hostname, or ``http://127.0.0.1:PORT`` for a local emulator.

    Accepts a pasted ``https://host/`` with a warning; rejects paths, credentials, other schemes,
    plain http to anything but the local machine, and hosts that are not ActiveCampaign's (see the module).
    """
    raw = value.strip()
    if not raw.isascii():
        raise ValueError(
            f"{value!r} has non-ASCII characters; give your ActiveCampaign API hostname as Settings > Developer "
            "shows it, like youraccount.api-us1.com"
        )
    if "://" not in raw:
        if "/" in raw or "@" in raw or ":" in raw:
            raise ValueError(
                f"{value!r} must be the hostname only, like youraccount.api-us1.com "
                "(no path, port or credentials)"
            )
        return _check_destination(_check_label_syntax(raw.lower(), value), value)
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if parts.username or parts.password or "@" in parts.netloc:
        raise ValueError("must not contain credentials; put the API key in Key Vault instead (got a URL with user info)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{value!r} must be the hostname only, like youraccount.api-us1.com (remove the path "
            f"{raw.partition(parts.netloc)[2]!r}; the exporter adds /api/3 itself)"
        )
    host = (parts.hostname or "").lower()
    if scheme == "http" and host in _LOCAL_HOSTS and parts.port:
        return f"http://{host}:{parts.port}"
    if scheme == "http":
        raise ValueError(
            f"{value!r} uses plain http; ActiveCampaign needs https. Give the hostname only, like youraccount.api-us1.com "
            "(http is allowed only for a local emulator at http://127.0.0.1:PORT)"
        )
    if scheme != "https":
        raise ValueError(f"{value!r} has scheme {scheme!r}; give the hostname only, like youraccount.api-us1.com")
    if parts.port:
        raise ValueError(f"{value!r} must be the hostname only, without a port")
    host = _check_destination(_check_label_syntax(host, value), value)
    log.warning("destination.hostname %r: using hostname %r (the https:// prefix is not needed)", value, host)
    return host


def _check_label_syntax(host: str, original: str) -> str:
    """``host`` if it is a DNS name of two or more labels; an IP address, in any notation, is refused."""
    if _is_ip_address(host):
        raise ValueError(f"{original!r} is an IP address; give your ActiveCampaign account hostname")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(f"{original!r} is not a valid hostname; expected something like youraccount.api-us1.com")
    return host


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        last = host.removesuffix(".").rpartition(".")[2]
        return bool(_NUMERIC_LABEL_RE.fullmatch(last))
    return True


def _check_destination(host: str, original: str) -> str:
    """``host`` if it is an ActiveCampaign API host or named in ``ALLOWED_DESTINATION_HOSTS``."""
    if _ACTIVECAMPAIGN_HOST_RE.fullmatch(host):
        return host
    allowed = allowed_destination_hosts()
    if host in allowed:
        return host
    listed = f" (it lists {', '.join(sorted(allowed))})" if allowed else ""
    raise ValueError(
        f"{original!r} is not an ActiveCampaign API host (the API key is sent only to those): give your account's "
        "API hostname from Settings > Developer, like youraccount.api-us1.com or youraccount.activehosted.com. "
        f"To send to another host on purpose, add its exact hostname to the app setting {ALLOWED_HOSTS_SETTING}"
        f"{listed}"
    )
