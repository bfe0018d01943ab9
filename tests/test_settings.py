"""The exports config contract: what it accepts, and that every mistake is named with its fix."""
from __future__ import annotations

import copy
import json
import logging

import pytest

from exporter.errors import ConfigError
from exporter.settings import (
    ALLOWED_HOSTS_SETTING,
    AZURE_APP_SETTINGS,
    LOCAL_APP_SETTINGS,
    AppSettings,
    allowed_destination_hosts,
    load_exports_config,
    normalise_hostname,
    parse_exports_config,
)

VALID = {
    "exports": [{
        "name": "vip-customers",
        "source": {"container": "customer-insights", "path": "CustomerInsights_abc/vip", "entity": "VipCustomers"},
        "destination": {"hostname": "youraccount.api-us1.com", "apiKeySecretName": "activecampaign-api-key",
                        "listId": "3", "rateLimits": {"bulkImportsPerMinute": 100, "requestsPerSecond": 5}},
        "mapping": {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "phone": "Phone",
                    "fields": {"7": "City"}, "tags": ["ci-vip"]},
        "privacyConsent": True, "enabled": True, "removeMissing": False,
    }]
}


@pytest.fixture(autouse=True)
def no_allowed_hosts(monkeypatch):
    """Only ActiveCampaign's hosts, whatever the developer's environment says."""
    monkeypatch.delenv(ALLOWED_HOSTS_SETTING, raising=False)


def with_change(path: list, value) -> dict:
    data = copy.deepcopy(VALID)
    target = data["exports"][0]
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def error_of(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_exports_config(data)
    assert info.value.exit_code == 2
    return str(info.value)


def test_full_example_parses_with_defaults():
    export = parse_exports_config(VALID).exports[0]
    assert export.destination.list_id == 3
    assert export.destination.base_url == "https://youraccount.api-us1.com/api/3"
    assert export.destination.summary() == {"hostname": "youraccount.api-us1.com", "listId": 3}
    assert export.mapping.fields == {"7": "City"}
    assert export.skip_reason() is None


def test_minimal_export_gets_published_limits_and_default_secret():
    minimal = {"exports": [{"name": "a", "source": {"container": "abc", "path": "p"},
                            "destination": {"hostname": "x.api-us1.com", "listId": 1}, "mapping": {"email": "E"}}]}
    export = parse_exports_config(minimal).exports[0]
    assert export.destination.rate_limits.bulk_imports_per_minute == 100
    assert export.destination.rate_limits.requests_per_second == 5
    assert export.destination.api_key_secret_name == "activecampaign-api-key"
    assert export.source.entity is None
    assert "privacyConsent" in export.skip_reason()


def test_run_automations_defaults_to_activecampaigns_true_and_takes_only_a_boolean():
    assert parse_exports_config(VALID).exports[0].run_automations is True
    assert parse_exports_config(with_change(["runAutomations"], False)).exports[0].run_automations is False
    assert "runAutomations" in error_of(with_change(["runAutomations"], "no"))
    assert "runAutomations" in error_of(with_change(["runAutomtions"], False))  # a typo is named, not ignored


def test_unknown_key_is_named_with_a_suggestion():
    data = with_change(["destination", "listid"], "3")
    message = error_of(data)
    assert "exports[0].destination" in message and "'listid'" in message and "did you mean 'listId'" in message


def test_unknown_top_level_export_key():
    message = error_of(with_change(["removeMising"], True))
    assert "unknown key 'removeMising'" in message and "removeMissing" in message


@pytest.mark.parametrize("field", [["name"], ["source", "container"], ["source", "path"],
                                   ["destination", "hostname"], ["destination", "listId"], ["mapping", "email"]])
def test_required_fields(field):
    message = error_of(with_change(field, KeyError))
    assert ".".join(field) in message and "required" in message


@pytest.mark.parametrize("list_id", ["abc", "-1", 0, True, "3.5"])
def test_bad_list_id(list_id):
    assert "listId" in error_of(with_change(["destination", "listId"], list_id))


def test_duplicate_export_names():
    data = copy.deepcopy(VALID)
    data["exports"].append(copy.deepcopy(data["exports"][0]))
    assert "used twice" in error_of(data)


def test_custom_field_keys_must_be_ids():
    assert "custom field id" in error_of(with_change(["mapping", "fields"], {"City": "City"}))


@pytest.mark.parametrize("value, expected", [
    ("youraccount.api-us1.com", "youraccount.api-us1.com"),
    ("  YourAccount.API-us1.com ", "youraccount.api-us1.com"),
    ("https://youraccount.api-us1.com/", "youraccount.api-us1.com"),
    ("https://youraccount.api-us1.com", "youraccount.api-us1.com"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://localhost:9000/", "http://localhost:9000"),
    ("acme.api-us1.com", "acme.api-us1.com"),
    ("acme-corp2.api-us13.com", "acme-corp2.api-us13.com"),
    ("https://acme.activehosted.com/", "acme.activehosted.com"),
    ("ACME.ActiveHosted.com", "acme.activehosted.com"),
])
def test_hostname_accepted(value, expected):
    assert normalise_hostname(value) == expected


def test_pasted_https_url_warns(caplog):
    with caplog.at_level(logging.WARNING):
        normalise_hostname("https://youraccount.api-us1.com/")
    assert "https:// prefix is not needed" in caplog.text


@pytest.mark.parametrize("value, hint", [
    ("https://youraccount.api-us1.com/api/3", "remove the path"),
    ("youraccount.api-us1.com/api/3", "hostname only"),
    ("http://youraccount.api-us1.com", "plain http"),
    ("ftp://youraccount.api-us1.com", "scheme"),
    ("https://user:pw@youraccount.api-us1.com", "credentials"),
    ("youraccount", "not a valid hostname"),
    ("https://youraccount.api-us1.com:8443", "without a port"),
    ("http://127.0.0.1", "plain http"),
])
def test_hostname_rejected(value, hint):
    message = error_of(with_change(["destination", "hostname"], value))
    assert "destination.hostname" in message and hint in message


NOT_ACTIVECAMPAIGN = "is not an ActiveCampaign API host"
IP_ADDRESS = "is an IP address"


@pytest.mark.parametrize("value, hint", [
    # Not ActiveCampaign's.
    ("attacker.example.com", NOT_ACTIVECAMPAIGN),
    ("https://attacker.example.com", NOT_ACTIVECAMPAIGN),
    ("acme.api-us1.com.evil.com", NOT_ACTIVECAMPAIGN),
    ("acme.activehosted.com.evil.com", NOT_ACTIVECAMPAIGN),
    ("api-us1.com", NOT_ACTIVECAMPAIGN),  # no account
    ("activehosted.com", NOT_ACTIVECAMPAIGN),
    ("a.b.api-us1.com", NOT_ACTIVECAMPAIGN),  # the account is one label
    ("acme.api-us0.com", NOT_ACTIVECAMPAIGN),
    ("acme.api-usx.com", NOT_ACTIVECAMPAIGN),
    ("acme.api-us1.co", NOT_ACTIVECAMPAIGN),
    ("acme-api-us1.com", NOT_ACTIVECAMPAIGN),
    ("evilapi-us1.com", NOT_ACTIVECAMPAIGN),
    ("127.0.0.1.nip.io", NOT_ACTIVECAMPAIGN),
    ("localhost.localdomain", NOT_ACTIVECAMPAIGN),
    # IP addresses, in every notation a resolver or URL parser accepts.
    ("127.0.0.1", IP_ADDRESS),
    ("127.1", IP_ADDRESS),
    ("0177.0.0.1", IP_ADDRESS),
    ("0x7f.0.0.1", IP_ADDRESS),
    ("0x7f000001", IP_ADDRESS),
    ("2130706433", IP_ADDRESS),
    ("017700000001", IP_ADDRESS),
    ("169.254.43518", IP_ADDRESS),  # 169.254.169.254
    ("169.254.169.254", IP_ADDRESS),
    ("1.2.3.4.", IP_ADDRESS),
    ("https://127.1", IP_ADDRESS),
    ("https://0x7f000001/", IP_ADDRESS),
    ("https://[::1]", IP_ADDRESS),
    ("https://[::ffff:127.0.0.1]", IP_ADDRESS),
    ("https://[fd00:ec2::254]", IP_ADDRESS),
    ("::1", "hostname only"),
    ("http://127.1:8080", "plain http"),
    ("http://0x7f000001:8080", "plain http"),
    ("http://[::1]:8080", "plain http"),
    ("http://localhost.:8080", "plain http"),
    # Trailing dots.
    ("acme.api-us1.com.", "not a valid hostname"),
    ("https://acme.api-us1.com./", "not a valid hostname"),
    # User info and other tricks that put another host after the one a reader sees.
    ("acme.api-us1.com@evil.com", "hostname only"),
    ("https://acme.api-us1.com@evil.com", "credentials"),
    ("https://acme.api-us1.com:x@evil.com", "credentials"),
    ("https://acme.api-us1.com\\@evil.com", "credentials"),
    ("https://evil.com#@acme.api-us1.com", "remove the path"),
    ("http://127.0.0.1:8080@evil.com:80", "credentials"),
    ("http://evil.com#@127.0.0.1:8080", "remove the path"),
    ("http://127.0.0.1:8080/@evil.com", "remove the path"),
    ("https://evil.com?@acme.api-us1.com", "remove the path"),
    ("https://evil.com\\acme.api-us1.com", "not a valid hostname"),
    ("acme.api-us1.com%2eevil.com", "not a valid hostname"),
    ("acme\n.api-us1.com", "not a valid hostname"),
    # IDN look-alikes: non-ASCII, and punycode in place of an account or domain.
    ("\u0430cme.api-us1.com", "non-ASCII"),  # Cyrillic a
    ("acme.api-us1.c\u043em", "non-ASCII"),
    ("\u212acme.api-us1.com", "non-ASCII"),  # Kelvin sign: lower() makes it ASCII k
    ("acme.api\u2010us1.com", "non-ASCII"),
    ("127\u30020\u30020\u30021", "non-ASCII"),  # ideographic full stops
    ("https://\u0430cme.api-us1.com", "non-ASCII"),
    ("xn--cme-8cd.api-us1.com", NOT_ACTIVECAMPAIGN),
    ("acme.xn--api-us1-9ng.com", NOT_ACTIVECAMPAIGN),
])
def test_only_activecampaign_hosts_are_destinations(value, hint):
    message = error_of(with_change(["destination", "hostname"], value))
    assert "destination.hostname" in message and hint in message, message
    if hint == NOT_ACTIVECAMPAIGN:
        assert ALLOWED_HOSTS_SETTING in message  # the fix


def test_allowed_destination_hosts_lets_exactly_those_through(monkeypatch):
    monkeypatch.setenv(ALLOWED_HOSTS_SETTING, " AC-Relay.example.com , other.example.org,")
    assert allowed_destination_hosts() == {"ac-relay.example.com", "other.example.org"}
    export = parse_exports_config(with_change(["destination", "hostname"], "ac-relay.example.com")).exports[0]
    assert export.destination.base_url == "https://ac-relay.example.com/api/3"
    assert normalise_hostname("https://AC-relay.example.com/") == "ac-relay.example.com"
    assert normalise_hostname("acme.api-us1.com") == "acme.api-us1.com"  # ActiveCampaign's still are
    for near in ["relay.example.com", "x.ac-relay.example.com", "ac-relay.example.com.evil.com", "attacker.example.com"]:
        message = error_of(with_change(["destination", "hostname"], near))
        assert NOT_ACTIVECAMPAIGN in message and "it lists ac-relay.example.com, other.example.org" in message


def test_allowed_destination_hosts_does_not_let_ip_addresses_through(monkeypatch):
    monkeypatch.setenv(ALLOWED_HOSTS_SETTING, "127.1,169.254.169.254")
    for value in ["127.1", "169.254.169.254"]:
        assert IP_ADDRESS in error_of(with_change(["destination", "hostname"], value))


def test_allowed_destination_hosts_is_an_app_setting_in_azure_and_locally():
    assert ALLOWED_HOSTS_SETTING == "ALLOWED_DESTINATION_HOSTS"
    assert ALLOWED_HOSTS_SETTING in AZURE_APP_SETTINGS and ALLOWED_HOSTS_SETTING in LOCAL_APP_SETTINGS
    assert allowed_destination_hosts({}) == frozenset()
    assert allowed_destination_hosts({ALLOWED_HOSTS_SETTING: " , "}) == frozenset()


def test_config_from_file_and_from_json_text(tmp_path):
    path = tmp_path / "exports.json"
    path.write_text(json.dumps(VALID), encoding="utf-8")
    assert load_exports_config(str(path)).exports[0].name == "vip-customers"
    assert load_exports_config(json.dumps(VALID)).exports[0].name == "vip-customers"


def test_missing_file_and_bad_json_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_exports_config(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{\"exports\": [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_exports_config(str(bad))


def test_app_settings_from_environment():
    settings = AppSettings.from_env({"CI_EXPORT_STORAGE__blobServiceUri": "https://acct.blob.core.windows.net",
                                     "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                     "KEY_VAULT_URL": "https://kv.vault.azure.net/"})
    assert settings.export_storage.blob_service_uri == "https://acct.blob.core.windows.net"
    assert settings.export_storage.connection_string is None
    assert "devstoreaccount1" in (settings.app_storage.connection_string or "")
    assert settings.key_vault_url == "https://kv.vault.azure.net/"
    assert settings.export_schedule == "0 0 */6 * * *"
    with pytest.raises(ConfigError, match="EXPORTS_CONFIG"):
        settings.load_exports()
