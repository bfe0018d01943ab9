"""Storage errors met while reading model.json, turned into errors that name the problem and the fix."""
from __future__ import annotations

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from ..errors import SourceError, TransientError


def error_code(exc: HttpResponseError) -> str:
    """The storage service's error code (e.g. ``ContainerNotFound``), or "" when it gave none."""
    code = getattr(exc, "error_code", None) or ""
    if not code and exc.response is not None:
        code = exc.response.headers.get("x-ms-error-code", "")
    return str(code)


def container_missing(container_client: ContainerClient) -> SourceError:
    return SourceError(
        f"container {container_client.container_name!r} not found in storage account "
        f"{container_client.account_name}; check source.container or CI_EXPORT_STORAGE"
    )


def storage_error(container_client: ContainerClient, name: str, exc: HttpResponseError) -> Exception:
    """Access denied is a configuration error; any other failure may pass on a retry."""
    if exc.status_code == 403:
        return SourceError(
            f"access to {container_client.container_name}/{name} in storage account {container_client.account_name} "
            f"was denied ({error_code(exc) or 403}); give the function app's identity the "
            "'Storage Blob Data Reader' role on that account, or fix CI_EXPORT_STORAGE"
        )
    return TransientError(f"reading {container_client.container_name}/{name} failed: {exc.message}")
