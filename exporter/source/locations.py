"""A partition's ``location`` in model.json turned into a blob name inside the export's container.

Customer Insights writes full URLs (blob or dfs host, or the emulator's path-style URL), abfs(s)/wasb(s) URLs, or
paths relative to model.json. All are percent-decoded, and a location in another container is refused.
"""
from __future__ import annotations

import ipaddress
import posixpath
from urllib.parse import unquote, urlsplit

from ..errors import SourceError
from .paths import join_path

_ABFS_SCHEMES = {"abfs", "abfss", "wasb", "wasbs"}


def resolve_location(location: str, container: str, account: str | None, model_folder: str = "") -> str:
    """Blob name inside ``container`` for a partition location (full URL on any host, or relative to model.json)."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if not scheme:
        name = posixpath.normpath(join_path(model_folder, unquote(parts.path).lstrip("/")))
        if name.startswith("../") or name in (".", ".."):
            raise SourceError(f"partition location {location!r} points outside container {container!r}")
        return name
    if scheme in _ABFS_SCHEMES:  # abfss://container@account.dfs.core.windows.net/path
        found_container = unquote(parts.username or "")
        name = unquote(parts.path).lstrip("/")
    else:
        segments = unquote(parts.path).lstrip("/").split("/")
        host = (parts.hostname or "").lower()
        path_style = _is_local_host(host) or (
            len(segments) > 2 and segments[0] == account and segments[1] == container
            and not host.startswith(f"{(account or '').lower()}.")
        )
        if path_style:  # emulator style: http://127.0.0.1:10000/<account>/<container>/<blob>
            segments = segments[1:]
        found_container, name = segments[0], "/".join(segments[1:])
    if found_container != container or not name:
        raise SourceError(
            f"partition location {location!r} is outside container {container!r} "
            f"(it points at container {found_container!r}); set source.container to the container the "
            "Customer Insights export writes to"
        )
    return name


def _is_local_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
