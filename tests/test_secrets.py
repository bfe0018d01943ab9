"""The API key from the environment, or from Key Vault through the real SecretClient against a local HTTPS vault."""
from __future__ import annotations

import logging
import socket
import traceback

import pytest
from azure.identity import EnvironmentCredential
from azure.keyvault.secrets import SecretClient

import exporter.secrets as secrets_module
from exporter.errors import ConfigError, ExporterError, TransientError
from exporter.secrets import check_vault_url, env_var_name, get_api_key, redact
from tests.kv_double import (
    ACCESS_DENIED_BY_POLICY,
    FORBIDDEN_BY_FIREWALL,
    FORBIDDEN_BY_RBAC,
    KeyVaultDouble,
    StaticTokenCredential,
)

SECRET_NAME = "activecampaign-api-key"
SECRET_VALUE = "s3cr3t-VALUE-7f0c9d1e2a"


@pytest.fixture(autouse=True)
def no_default_credential(monkeypatch):
    """DefaultAzureCredential would probe the managed identity endpoint and Entra ID: tests always pass one."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test reached DefaultAzureCredential; pass credential=")

    monkeypatch.setattr(secrets_module, "DefaultAzureCredential", refuse)


@pytest.fixture
def vault():
    with KeyVaultDouble({SECRET_NAME: f"  {SECRET_VALUE}\n"}) as double:
        yield double


def read_from(vault: KeyVaultDouble, name: str = SECRET_NAME, **options) -> str:
    credential = StaticTokenCredential(vault.token)
    return get_api_key(name, vault.url, credential=credential, client_options=vault.client_options(**options))


def failure_of(call, *args, **kwargs) -> ExporterError:
    with pytest.raises(ExporterError) as caught:
        call(*args, **kwargs)
    return caught.value


def assert_secret_not_leaked(exc: BaseException) -> None:
    full_traceback = "".join(traceback.format_exception(exc))
    assert SECRET_VALUE not in str(exc)
    assert SECRET_VALUE not in repr(exc)
    assert SECRET_VALUE not in full_traceback


# -- environment ---------------------------------------------------------------------------------------------------


def test_env_var_name_is_the_secret_name_upper_cased_with_underscores():
    assert env_var_name("activecampaign-api-key") == "ACTIVECAMPAIGN_API_KEY"
    assert env_var_name("Ac-Key-2") == "AC_KEY_2"


def test_without_vault_the_key_comes_from_the_environment_stripped():
    env = {"ACTIVECAMPAIGN_API_KEY": f"\t{SECRET_VALUE}\r\n", "OTHER_KEY": "other"}
    assert get_api_key(SECRET_NAME, None, env=env) == SECRET_VALUE
    assert get_api_key("other-key", "  ", env=env) == "other"


def test_without_env_argument_the_process_environment_is_read(monkeypatch):
    monkeypatch.setenv("ACTIVECAMPAIGN_API_KEY", SECRET_VALUE)
    assert get_api_key(SECRET_NAME, None) == SECRET_VALUE


@pytest.mark.parametrize("env, state", [({}, "is not set"), ({"ACTIVECAMPAIGN_API_KEY": " \n"}, "is empty")])
def test_missing_env_var_says_which_variable_or_key_vault_to_set(env, state):
    exc = failure_of(get_api_key, SECRET_NAME, None, env=env)
    assert isinstance(exc, ConfigError)
    assert f"ACTIVECAMPAIGN_API_KEY {state}" in str(exc)
    assert "set KEY_VAULT_URL" in str(exc)


@pytest.mark.parametrize("name", ["", "api_key", "api key", "x" * 128, "schlüssel"])
def test_secret_name_that_key_vault_cannot_hold_is_rejected(name):
    exc = failure_of(get_api_key, name, None, env={"API_KEY": "v"})
    assert isinstance(exc, ConfigError)
    assert "apiKeySecretName" in str(exc)


# -- Key Vault: success ----------------------------------------------------------------------------------------------


def test_key_vault_value_is_read_through_the_bearer_challenge(vault, caplog):
    caplog.set_level(logging.DEBUG)
    credential = StaticTokenCredential(vault.token)

    value = get_api_key(SECRET_NAME, vault.url + "/", credential=credential, client_options=vault.client_options())

    assert value == SECRET_VALUE
    first, second = vault.requests
    assert (first.path, first.had_auth, first.status) == (f"/secrets/{SECRET_NAME}/", False, 401)
    assert (second.path, second.authorized, second.status) == (f"/secrets/{SECRET_NAME}/", True, 200)
    assert second.query["api-version"]
    assert credential.requests == [{"scopes": ("https://vault.azure.net/.default",), "tenant_id": vault.tenant}]
    assert SECRET_VALUE not in caplog.text
    assert SECRET_NAME in caplog.text  # the success is logged, by name


def test_each_call_reads_the_secret_exactly_once(vault):
    for _ in range(3):
        assert read_from(vault) == SECRET_VALUE
    reads = [r for r in vault.secret_requests(SECRET_NAME) if r.authorized]
    assert len(reads) == 3


def test_the_latest_version_is_returned(vault):
    old_version = vault.set_secret(SECRET_NAME, "old-value")
    vault.set_secret(SECRET_NAME, "new-value")
    assert read_from(vault) == "new-value"
    # The double also serves a named version, as Key Vault does.
    with SecretClient(vault.url, StaticTokenCredential(vault.token), **vault.client_options()) as client:
        secret = client.get_secret(SECRET_NAME, old_version)
    assert (secret.value, secret.properties.version) == ("old-value", old_version)


def test_network_trace_logging_cannot_be_turned_on(vault, caplog):
    caplog.set_level(logging.DEBUG)
    assert read_from(vault, logging_enable=True) == SECRET_VALUE
    assert SECRET_VALUE not in caplog.text


# -- Key Vault: failures -------------------------------------------------------------------------------------------


def test_missing_secret_names_secret_vault_and_the_az_command(vault):
    exc = failure_of(read_from, vault, name="ac-key-missing")
    assert isinstance(exc, ConfigError)
    message = str(exc)
    assert "'ac-key-missing' not found" in message
    assert vault.url in message
    assert "az keyvault secret set --vault-name <vault-name> --name ac-key-missing --value <api-key>" in message
    assert [r.status for r in vault.requests] == [401, 404]


def test_az_command_uses_the_vault_name_from_a_real_vault_uri():
    assert "--vault-name contoso-kv " in secrets_module._set_secret_command("k", "https://contoso-kv.vault.azure.net")


@pytest.mark.parametrize(
    "mode, expected",
    [
        (FORBIDDEN_BY_RBAC, "lacks the role 'Key Vault Secrets User'"),
        (FORBIDDEN_BY_FIREWALL, "firewall"),
        (ACCESS_DENIED_BY_POLICY, "secret 'get' permission"),
    ],
)
def test_forbidden_says_what_the_identity_or_network_lacks(vault, mode, expected):
    vault.forbidden = mode
    exc = failure_of(read_from, vault)
    assert isinstance(exc, ConfigError) and not isinstance(exc, TransientError)
    assert expected in str(exc)
    assert vault.url in str(exc) and SECRET_NAME in str(exc)
    assert_secret_not_leaked(exc)


def test_rbac_forbidden_gives_the_role_assignment_command(vault):
    vault.forbidden = FORBIDDEN_BY_RBAC
    message = str(failure_of(read_from, vault))
    assert 'az role assignment create --role "Key Vault Secrets User"' in message
    assert "Caller: appid=" in message  # Key Vault's own text tells which identity to grant


def test_disabled_secret_says_how_to_enable_it(vault):
    vault.disable(SECRET_NAME)
    exc = failure_of(read_from, vault)
    assert isinstance(exc, ConfigError)
    assert "is disabled" in str(exc) and "set-attributes" in str(exc)
    assert_secret_not_leaked(exc)


def test_empty_secret_is_a_config_error(vault):
    vault.set_secret(SECRET_NAME, " \n")
    exc = failure_of(read_from, vault)
    assert isinstance(exc, ConfigError)
    assert "is empty" in str(exc) and "az keyvault secret set" in str(exc)


def test_token_the_vault_rejects_is_reported_as_authentication_problem(vault):
    credential = StaticTokenCredential("token-for-another-tenant")
    exc = failure_of(get_api_key, SECRET_NAME, vault.url, credential=credential,
                     client_options=vault.client_options())
    assert isinstance(exc, ConfigError)
    assert "rejected the access token" in str(exc)
    assert "Invalid issuer" in str(exc)  # Key Vault's reason is passed on
    assert any(r.had_auth and not r.authorized for r in vault.requests)
    assert not any(r.authorized for r in vault.requests)


def test_challenge_for_another_domain_is_a_config_error(vault):
    # Key Vault's challenge names vault.azure.net; a KEY_VAULT_URL on another host fails the SDK's domain check.
    exc = failure_of(get_api_key, SECRET_NAME, vault.url, credential=StaticTokenCredential(vault.token),
                     client_options={"connection_verify": vault.ca_file})
    assert isinstance(exc, ConfigError)
    assert "does not match the requested domain" in str(exc) and "KEY_VAULT_URL" in str(exc)
    assert not any(r.had_auth for r in vault.requests)


def test_no_usable_identity_says_managed_identity_or_az_login(vault, monkeypatch):
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                 "AZURE_USERNAME", "AZURE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    # A real azure-identity credential that fails offline, as DefaultAzureCredential does without an identity.
    credential = EnvironmentCredential()
    exc = failure_of(get_api_key, SECRET_NAME, vault.url, credential=credential,
                     client_options=vault.client_options())
    assert isinstance(exc, ConfigError)
    message = str(exc)
    assert "cannot get a token" in message and "managed identity" in message and "az login" in message
    assert "ACTIVECAMPAIGN_API_KEY" in message
    assert not any(r.had_auth for r in vault.requests)


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_or_outage_is_transient(vault, status):
    vault.failures = [status]
    exc = failure_of(read_from, vault, retry_total=0)
    assert isinstance(exc, TransientError)
    assert f"HTTP {status}" in str(exc)


def test_outage_within_the_sdk_retries_still_returns_the_key(vault):
    vault.failures = [429]  # Retry-After: 0
    assert read_from(vault) == SECRET_VALUE
    assert [r.status for r in vault.requests if r.authorized] == [429, 200]


def test_unreachable_vault_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exc = failure_of(get_api_key, SECRET_NAME, f"https://127.0.0.1:{port}", credential=StaticTokenCredential(),
                     client_options={"retry_total": 0, "verify_challenge_resource": False})
    assert isinstance(exc, TransientError)
    assert "cannot reach Key Vault" in str(exc) and "KEY_VAULT_URL" in str(exc)


def test_vault_certificate_is_verified(vault):
    # Without our CA the client must refuse the double's certificate: TLS is real, nothing is sent.
    exc = failure_of(get_api_key, SECRET_NAME, vault.url, credential=StaticTokenCredential(vault.token),
                     client_options={"retry_total": 0, "verify_challenge_resource": False})
    assert isinstance(exc, TransientError)
    assert vault.wait_for(lambda v: v.tls_failures >= 1)  # the server thread notices the refusal a moment later
    assert vault.requests == []


@pytest.mark.parametrize(
    "url, hint",
    [
        ("http://127.0.0.1:{port}", "must use https://"),
        ("contoso-kv", "https://contoso-kv.vault.azure.net"),
        ("https://127.0.0.1:{port}/secrets/x", "vault URI only"),
        ("https://user:pw@127.0.0.1:{port}", "vault URI only"),
        ("ftp://contoso-kv.vault.azure.net", "must use https://"),
    ],
)
def test_bad_vault_url_is_rejected_before_any_request(vault, url, hint):
    port = vault.url.rsplit(":", 1)[1]
    credential = StaticTokenCredential(vault.token)
    exc = failure_of(get_api_key, SECRET_NAME, url.format(port=port), credential=credential,
                     client_options=vault.client_options())
    assert isinstance(exc, ConfigError)
    assert "KEY_VAULT_URL" in str(exc) and hint in str(exc)
    assert vault.requests == [] and credential.requests == []


def test_check_vault_url_accepts_the_vault_uri_with_or_without_slash():
    assert check_vault_url(" https://contoso-kv.vault.azure.net/ ") == "https://contoso-kv.vault.azure.net"
    assert check_vault_url("https://contoso-kv.vault.azure.cn") == "https://contoso-kv.vault.azure.cn"


def test_no_error_message_carries_the_secret_value(vault):
    # Every failure path that runs after the value exists somewhere: vault holds it, env holds it.
    failures = [failure_of(read_from, vault, name="missing-secret")]
    vault.forbidden = FORBIDDEN_BY_RBAC
    failures.append(failure_of(read_from, vault))
    failures.append(failure_of(get_api_key, "other-name", None, env={"ACTIVECAMPAIGN_API_KEY": SECRET_VALUE}))
    for exc in failures:
        assert_secret_not_leaked(exc)


# -- redact ----------------------------------------------------------------------------------------------------------


def test_redact_replaces_every_occurrence_of_each_secret():
    text = f"key={SECRET_VALUE}; again {SECRET_VALUE}; other=abc123"
    assert redact(text, SECRET_VALUE, "abc123") == "key=***; again ***; other=***"


def test_redact_prefers_the_longest_secret_and_ignores_empty_ones():
    assert redact("token abcdef", "abc", "abcdef", "") == "token ***"
    assert redact("nothing here", "") == "nothing here"
