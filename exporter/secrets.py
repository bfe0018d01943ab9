"""The ActiveCampaign API key: from Key Vault in Azure (managed identity), from an environment variable locally.

Every failure becomes a ConfigError (no retry fixes it) or a TransientError (the network or the vault was
unavailable), with a message that names the problem and the fix. No message or log line carries the secret value.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from .errors import ConfigError, TransientError

log = logging.getLogger(__name__)

# Key Vault secret names: 1-127 letters, digits and dashes.
_SECRET_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_KV_MESSAGE_LIMIT = 400
# Give up on an unreachable vault in seconds rather than azure-core's 300 s defaults.
_DEFAULT_CLIENT_OPTIONS = {"connection_timeout": 10, "read_timeout": 30}
_VAULT_URI_EXAMPLE = "https://<vault-name>.vault.azure.net"
_VAULT_URI_LOOKUP = "see `az keyvault show --name <vault-name> --query properties.vaultUri`"


def get_api_key(
    secret_name: str,
    key_vault_url: str | None,
    *,
    env: Mapping[str, str] | None = None,
    credential: TokenCredential | None = None,
    client_options: dict[str, Any] | None = None,
) -> str:
    """Return the secret, stripped of surrounding whitespace.

    With ``key_vault_url``: one ``get_secret`` through the Key Vault SDK, authenticated by ``credential``
    (default: ``DefaultAzureCredential``, i.e. the managed identity in Azure, ``az login`` locally).
    Without it: the environment variable named after the secret (``activecampaign-api-key`` →
    ``ACTIVECAMPAIGN_API_KEY``).
    """
    _check_secret_name(secret_name)
    vault_url = (key_vault_url or "").strip()
    if not vault_url:
        return _read_env(secret_name, os.environ if env is None else env)
    vault_url = check_vault_url(vault_url)
    return _read_key_vault(secret_name, vault_url, credential, client_options or {})


def env_var_name(secret_name: str) -> str:
    """``activecampaign-api-key`` → ``ACTIVECAMPAIGN_API_KEY``."""
    return secret_name.upper().replace("-", "_")


def check_vault_url(value: str) -> str:
    """Return the vault URI without a trailing slash; ConfigError unless it is ``https://host[:port][/]``."""
    raw = value.strip()
    parts = urlsplit(raw)
    if "://" not in raw:
        hint = f"https://{raw}.vault.azure.net" if re.fullmatch(r"[A-Za-z0-9-]{3,24}", raw) else _VAULT_URI_EXAMPLE
        raise ConfigError(f"KEY_VAULT_URL {raw!r} is not a URL: set it to the vault URI, e.g. {hint} "
                          f"({_VAULT_URI_LOOKUP})")
    if parts.scheme.lower() != "https":
        raise ConfigError(f"KEY_VAULT_URL {raw!r} must use https:// (Key Vault accepts tokens only over TLS): "
                          f"set it to the vault URI, e.g. {_VAULT_URI_EXAMPLE}")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment \
            or parts.path not in ("", "/"):
        raise ConfigError(f"KEY_VAULT_URL {raw!r} must be the vault URI only, e.g. {_VAULT_URI_EXAMPLE} "
                          f"(no path, query or credentials; {_VAULT_URI_LOOKUP})")
    return raw.rstrip("/")


def redact(text: str, *secrets: str) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _check_secret_name(secret_name: str) -> None:
    if not _SECRET_NAME_RE.match(secret_name or ""):
        raise ConfigError(
            f"secret name {secret_name!r} is invalid: Key Vault secret names are 1-127 letters, digits and dashes; "
            "fix destination.apiKeySecretName in the exports config (default \"activecampaign-api-key\")"
        )


def _read_env(secret_name: str, env: Mapping[str, str]) -> str:
    variable = env_var_name(secret_name)
    value = (env.get(variable) or "").strip()
    if not value:
        state = "is empty" if variable in env else "is not set"
        raise ConfigError(
            f"no ActiveCampaign API key: {variable} {state}. Set {variable} to the API key "
            f"(ActiveCampaign > Settings > Developer), or set KEY_VAULT_URL to read secret {secret_name!r} "
            "from Key Vault"
        )
    log.info("API key read from environment variable %s", variable)
    return value


def _read_key_vault(secret_name: str, vault_url: str, credential: TokenCredential | None,
                    client_options: Mapping[str, Any]) -> str:
    options = {**_DEFAULT_CLIENT_OPTIONS, **client_options}
    # Network trace logging would write the response body, i.e. the secret, to the log.
    options["logging_enable"] = False
    owned_credential = DefaultAzureCredential() if credential is None else None
    try:
        with SecretClient(vault_url, credential or owned_credential, **options) as client:
            secret = client.get_secret(secret_name)
    except ResourceNotFoundError as exc:
        _raise_not_found(secret_name, vault_url, exc)
    except ClientAuthenticationError as exc:  # before HttpResponseError: it is a subclass
        _raise_authentication_failed(secret_name, vault_url, exc)
    except HttpResponseError as exc:
        _raise_http_error(secret_name, vault_url, exc)
    except ValueError as exc:  # the SDK refuses a challenge whose resource is not the vault's domain
        raise ConfigError(
            f"Key Vault {vault_url} cannot be used to read secret {secret_name!r}: {_first_line(exc)}. "
            f"Set KEY_VAULT_URL to the vault URI, e.g. {_VAULT_URI_EXAMPLE} ({_VAULT_URI_LOOKUP})"
        ) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(
            f"cannot reach Key Vault {vault_url} to read secret {secret_name!r}: {_first_line(exc)}. "
            "Check that KEY_VAULT_URL is the vault URI and that the vault accepts connections from this app "
            "(networking: public access, firewall, private endpoint DNS)"
        ) from exc
    finally:
        if owned_credential is not None:
            owned_credential.close()
    value = (secret.value or "").strip()
    if not value:
        raise ConfigError(
            f"secret {secret_name!r} in Key Vault {vault_url} is empty: set it to the ActiveCampaign API key with "
            f"{_set_secret_command(secret_name, vault_url)}"
        )
    log.info("API key read from Key Vault %s secret %s", vault_url, secret_name)
    return value


def _raise_not_found(secret_name: str, vault_url: str, exc: ResourceNotFoundError) -> NoReturn:
    raise ConfigError(
        f"secret {secret_name!r} not found in Key Vault {vault_url}: store the ActiveCampaign API key with "
        f"{_set_secret_command(secret_name, vault_url)}, or set destination.apiKeySecretName in the exports "
        "config to the name of the secret that holds it"
    ) from exc


def _raise_authentication_failed(secret_name: str, vault_url: str, exc: ClientAuthenticationError) -> NoReturn:
    if exc.response is not None:  # the vault answered 401 to the token we sent
        raise ConfigError(
            f"Key Vault {vault_url} rejected the access token while reading secret {secret_name!r} (HTTP 401): "
            f"{_kv_message(exc)}. The identity must belong to the vault's Entra ID tenant; for a user-assigned "
            "managed identity set AZURE_CLIENT_ID to its client id"
        ) from exc
    raise ConfigError(
        f"cannot get a token for Key Vault {vault_url}: {_first_line(exc)}. In Azure, enable the function app's "
        "managed identity (for a user-assigned identity set AZURE_CLIENT_ID to its client id); locally, run "
        f"`az login`, or unset KEY_VAULT_URL and set {env_var_name(secret_name)}"
    ) from exc


def _raise_http_error(secret_name: str, vault_url: str, exc: HttpResponseError) -> NoReturn:
    status = exc.status_code or 0
    if status == 403:
        raise ConfigError(_forbidden_message(secret_name, vault_url, exc)) from exc
    if status == 429 or status >= 500:
        raise TransientError(
            f"Key Vault {vault_url} is unavailable (HTTP {status}) while reading secret {secret_name!r}: "
            f"{_kv_message(exc)}. Retry later"
        ) from exc
    raise ConfigError(
        f"Key Vault {vault_url} refused to read secret {secret_name!r} (HTTP {status}): {_kv_message(exc)}"
    ) from exc


def _forbidden_message(secret_name: str, vault_url: str, exc: HttpResponseError) -> str:
    inner = _inner_error_code(exc)
    said = f"Key Vault said: {_kv_message(exc)}"
    if inner == "SecretDisabled":
        return (f"secret {secret_name!r} in Key Vault {vault_url} is disabled: enable it with "
                f"`az keyvault secret set-attributes --vault-name {_vault_name(vault_url)} --name {secret_name} "
                "--enabled true`")
    if inner == "ForbiddenByFirewall":
        return (f"the firewall of Key Vault {vault_url} blocks this app (HTTP 403) while reading secret "
                f"{secret_name!r}: allow the app's network (virtual network rule or private endpoint) in the vault's "
                f"Networking settings. {said}")
    if inner == "AccessDenied":
        return (f"the app's identity may not read secret {secret_name!r} in Key Vault {vault_url} (HTTP 403, "
                "access policies): grant it the secret 'get' permission with `az keyvault set-policy --name "
                f"{_vault_name(vault_url)} --object-id <principal-id> --secret-permissions get`, or switch the "
                f"vault to Azure RBAC and assign 'Key Vault Secrets User'. {said}")
    return (f"the app's identity lacks the role 'Key Vault Secrets User' on Key Vault {vault_url} (HTTP 403 reading "
            f"secret {secret_name!r}): assign it with `az role assignment create --role \"Key Vault Secrets User\" "
            f"--assignee <principal-id> --scope $(az keyvault show --name {_vault_name(vault_url)} --query id -o "
            f"tsv)`; new assignments can take a few minutes to apply. {said}")


def _inner_error_code(exc: HttpResponseError) -> str | None:
    inner = getattr(exc.error, "innererror", None) if exc.error is not None else None
    return inner.get("code") if isinstance(inner, dict) else None


def _kv_message(exc: HttpResponseError) -> str:
    message = exc.error.message if exc.error is not None and exc.error.message else _first_line(exc)
    single_line = " ".join(str(message).split()).rstrip(".")
    if len(single_line) > _KV_MESSAGE_LIMIT:
        return single_line[:_KV_MESSAGE_LIMIT] + "..."
    return single_line


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _set_secret_command(secret_name: str, vault_url: str) -> str:
    return (f"`az keyvault secret set --vault-name {_vault_name(vault_url)} --name {secret_name} "
            "--value <api-key>`")


def _vault_name(vault_url: str) -> str:
    host = urlsplit(vault_url).hostname or ""
    label = host.split(".")[0]
    if not label or host == "localhost" or label.isdigit():
        return "<vault-name>"
    return label
