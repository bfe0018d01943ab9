"""The exports config contract: what it accepts, and that every mistake is named with its fix."""
from __future__ import annotations

import copy
import json
import logging

import pytest

from exporter.errors import ConfigError
from exporter.settings import (
    AppSettings,
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
