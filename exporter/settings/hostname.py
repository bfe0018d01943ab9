"""``destination.hostname``: which ActiveCampaign hosts an export may send to, in the one form the code uses."""
from __future__ import annotations

import ipaddress
import logging
import re
from urllib.parse import urlsplit

log = logging.getLogger("exporter.settings")  # named after the package: the warning keeps its logger name

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def normalise_hostname(value: str) -> str:
    """Return a bare hostname, or ``http://127.0.0.1:PORT`` for a local emulator.

    Accepts a pasted ``https://host/`` with a warning; rejects paths, credentials, other schemes,
    and plain http to anything but the local machine.
    """
    raw = value.strip()
    if "://" not in raw:
        if "/" in raw or "@" in raw or ":" in raw:
            raise ValueError(
                f"{value!r} must be the hostname only, like youraccount.api-us1.com "
                "(no path, port or credentials)"
            )
        return _check_label_syntax(raw.lower(), value)
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; put the API key in Key Vault instead (got a URL with user info)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{value!r} must be the hostname only, like youraccount.api-us1.com (remove the path "
            f"{parts.path!r}; the exporter adds /api/3 itself)"
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
    log.warning("destination.hostname %r: using hostname %r (the https:// prefix is not needed)", value, host)
    return _check_label_syntax(host, value)


def _check_label_syntax(host: str, original: str) -> str:
    """``host`` if it is a DNS name of two or more labels; an IP address is refused."""
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError(f"{original!r} is not a valid hostname; expected something like youraccount.api-us1.com")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    raise ValueError(f"{original!r} is an IP address; give your ActiveCampaign account hostname")
