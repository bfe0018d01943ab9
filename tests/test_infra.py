"""Offline checks of the azd deployment (azure.yaml, infra/): the Bicep parses, checkov passes, and the
security and contract rules hold in the parsed templates.

The Bicep CLI and azd cannot run here, so the templates are read with pycep-parser. In its JSON a
reference (``identityClientId``, ``storage.properties.primaryEndpoints.blob``) and a literal string
both come out as plain strings; ``references`` below treats any identifier-shaped string as a
reference, which errs on the side of finding a flow rather than missing one.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pycep import BicepParser

from exporter.settings import (
    AZURE_APP_SETTINGS,
    DEFAULT_EXPORT_CONTAINER,
    DEFAULT_EXPORT_SCHEDULE,
    DEFAULT_SECRET_NAME,
    RUN_QUEUE,
    RUNS_CONTAINER,
    STATE_CONTAINER,
    parse_exports_config,
)

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
MAIN = "main.bicep"
FUNCTION_APP = "app/functionapp.bicep"

Template = dict[str, Any]

# Built-in Azure role definition ids (identical in every tenant).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

# Role → (file it may be assigned in, resource type it may be scoped to). Data roles only, each at one resource.
ALLOWED_ROLES = {
    STORAGE_BLOB_DATA_OWNER: ("app/rbac.bicep", "Microsoft.Storage/storageAccounts"),
    STORAGE_QUEUE_DATA_CONTRIBUTOR: ("app/rbac.bicep", "Microsoft.Storage/storageAccounts"),
    STORAGE_BLOB_DATA_READER: ("app/export-storage-rbac.bicep", "Microsoft.Storage/storageAccounts"),
    KEY_VAULT_SECRETS_USER: ("app/rbac.bicep", "Microsoft.KeyVault/vaults"),
    KEY_VAULT_SECRETS_OFFICER: ("app/rbac.bicep", "Microsoft.KeyVault/vaults"),
    MONITORING_METRICS_PUBLISHER: ("app/rbac.bicep", "Microsoft.Insights/components"),
}
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
}
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Output names that would announce a secret, and expressions that would read one.
SECRET_OUTPUT_NAME_RE = re.compile(r"secret|password|connectionstring|apikey|accesskey|instrumentationkey|_key$", re.IGNORECASE)
SECRET_EXPRESSION_RE = re.compile(r"listkeys|listsecrets|list_keys|connectionstring|instrumentationkey|accountkey", re.IGNORECASE)

_IDENTIFIER_RE = re.compile(r"^([A-Za-z_]\w*)(?:[.\[!]|$)")
_INTERPOLATION_RE = re.compile(r"\$\{([^}]*)\}")
_WORD_RE = re.compile(r"[A-Za-z_]\w*")


# --- reading the templates -------------------------------------------------------------------------

def parse_bicep_files() -> dict[str, Template]:
    parser = BicepParser()
    return {path.relative_to(INFRA).as_posix(): parser.parse(file_path=path) for path in sorted(INFRA.rglob("*.bicep"))}


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    return parse_bicep_files()


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    checkov = Path(sys.executable).with_name("checkov")
    if not checkov.exists():
        checkov = ROOT / ".venv" / "bin" / "checkov"
    result = subprocess.run(  # noqa: PLW1510 - checkov exits 1 on failed checks; the test reads its report
        [str(checkov), "-d", str(INFRA), "--framework", "bicep", "--compact", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.stdout.strip(), f"checkov printed no report (exit {result.returncode}): {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource or module, unwrapped from ``if (...)`` and ``[for ...]`` forms."""
    config = declaration["config"]
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def condition(declaration: dict[str, Any]) -> Any:
    config = declaration["config"]
    return config.get("condition") if isinstance(config, dict) and "config" in config else None


def resources(template: Template, type_: str, *, existing: bool = False) -> dict[str, dict[str, Any]]:
    return {
        name: declaration
        for name, declaration in template.get("resources", {}).items()
        if declaration["type"] == type_ and declaration["existing"] == existing
    }


def all_resources(templates: dict[str, Template], type_: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, name, declaration)
        for path, template in templates.items()
        for name, declaration in resources(template, type_).items()
    ]


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed expression, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def references(value: Any) -> set[str]:
    """Identifiers an expression may refer to (head of ``a.b.c`` and of every ``${...}`` part)."""
    found: set[str] = set()
    for text in strings(value):
        head = _IDENTIFIER_RE.match(text)
        if head and " " not in text:
            found.add(head.group(1))
        for inner in _INTERPOLATION_RE.findall(text):
            found.update(_WORD_RE.findall(inner))
    return found


def resolve(template: Template, value: Any) -> Any:
    """Follow a plain reference to a variable's value or a parameter's default."""
    for _ in range(10):
        if not isinstance(value, str):
            return value
        if value in template.get("variables", {}):
            value = template["variables"][value]["value"]
        elif value in template.get("parameters", {}):
            value = template["parameters"][value]["default"]
        else:
            return value
    return value


def resolve_deep(template: Template, value: Any) -> Any:
    """``resolve`` applied to every value inside objects and arrays."""
    value = resolve(template, value)
    if isinstance(value, dict):
        return {key: resolve_deep(template, item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_deep(template, item) for item in value]
    return value


def is_secure(parameter: dict[str, Any]) -> bool:
    return any(decorator["type"] == "secure" for decorator in parameter["decorators"])


def tainted_names(template: Template) -> set[str]:
    """@secure() parameters and every variable computed from one."""
    tainted = {name for name, parameter in template.get("parameters", {}).items() if is_secure(parameter)}
    changed = True
    while changed:
        changed = False
        for name, variable in template.get("variables", {}).items():
            if name not in tainted and references(variable["value"]) & tainted:
                tainted.add(name)
                changed = True
    return tainted


def secure_value_leaks(templates: dict[str, Template]) -> list[str]:
    """Places where a secure value reaches an output, an app setting, a non-secure module parameter or
    any resource property other than a Key Vault secret's value."""
    leaks: list[str] = []
    for path, template in templates.items():
        tainted = tainted_names(template)
        if not tainted:
            continue
        for name, output in template.get("outputs", {}).items():
            if references(output["value"]) & tainted:
                leaks.append(f"{path}: output {name}")
        for name, declaration in template.get("resources", {}).items():
            properties = body(declaration).get("properties", {})
            for key, value in properties.items():
                allowed = declaration["type"] == "Microsoft.KeyVault/vaults/secrets" and key == "value"
                if not allowed and references(value) & tainted:
                    leaks.append(f"{path}: resource {name} property {key}")
        for name, module in template.get("modules", {}).items():
            target = templates.get((Path(path).parent / module["detail"]["path"]).as_posix())
            for param, value in body(module).get("params", {}).items():
                if references(value) & tainted and (target is None or not is_secure(target["parameters"][param])):
                    leaks.append(f"{path}: module {name} parameter {param} is not @secure()")
    return leaks


def function_app(templates: dict[str, Template]) -> dict[str, Any]:
    (site,) = resources(templates[FUNCTION_APP], "Microsoft.Web/sites").values()
    return body(site)


def app_settings(templates: dict[str, Template]) -> dict[str, Any]:
    settings = function_app(templates)["properties"]["siteConfig"]["appSettings"]
    names = [setting["name"] for setting in settings]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {setting["name"]: setting["value"] for setting in settings}


# --- parsing and checkov ---------------------------------------------------------------------------

def test_every_bicep_file_parses(templates: dict[str, Template]) -> None:
    expected = {
        MAIN,
        FUNCTION_APP,
        "app/storage.bicep",
        "app/keyvault.bicep",
        "app/monitoring.bicep",
        "app/rbac.bicep",
        "app/export-storage-rbac.bicep",
        "app/eventgrid.bicep",
        "app/export-access.bicep",
        "app/identity.bicep",
    }
    assert expected <= set(templates)
    for path, template in templates.items():
        assert template.get("resources") or template.get("modules"), f"{path} declares nothing"


def test_every_module_path_exists(templates: dict[str, Template]) -> None:
    for path, template in templates.items():
        for name, module in template.get("modules", {}).items():
            target = (Path(path).parent / module["detail"]["path"]).as_posix()
            assert target in templates, f"{path}: module {name} points at missing {target}"


def test_checkov_finds_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{check['check_id']} {check['file_path']} {check['resource']}: {check['check_name']}"
        for check in checkov_report["results"]["failed_checks"]
    ]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0, "checkov ran no check: did it read the Bicep files?"
    assert failed == []


def test_every_checkov_skip_is_justified(checkov_report: dict[str, Any]) -> None:
    unjustified = [
        f"{check['check_id']} {check['file_path']}"
        for check in checkov_report["results"]["skipped_checks"]
        if len(check["check_result"].get("suppress_comment", "").strip()) < 20
        or check["check_result"].get("suppress_comment") == "No comment provided"
    ]
    assert unjustified == []


# --- resources -------------------------------------------------------------------------------------

def test_plan_is_flex_consumption(templates: dict[str, Template]) -> None:
    plans = all_resources(templates, "Microsoft.Web/serverfarms")
    assert len(plans) == 1
    _path, name, plan = plans[0]
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(plan)["properties"]["reserved"] is True  # Linux
    assert function_app(templates)["properties"]["serverFarmId"] == f"{name}.id"


def test_function_app_is_linux_python_with_identity_based_deployment(templates: dict[str, Template]) -> None:
    template = templates[FUNCTION_APP]
    site = function_app(templates)
    config = site["properties"]["functionAppConfig"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    assert config["runtime"]["name"] == "python"
    assert resolve(template, config["runtime"]["version"]) == "3.11"
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert resolve(template, config["scaleAndConcurrency"]["instanceMemoryMB"]) == 2048
    assert resolve(template, config["scaleAndConcurrency"]["maximumInstanceCount"]) <= 100
    assert resolve(templates[MAIN], "maximumInstanceCount") <= 100


def test_storage_accounts_allow_no_keys_and_no_public_blobs(templates: dict[str, Template]) -> None:
    accounts = all_resources(templates, "Microsoft.Storage/storageAccounts")
    assert accounts, "no storage account declared"
    for path, name, account in accounts:
        properties = body(account)["properties"]
        assert properties["allowSharedKeyAccess"] is False, f"{path}:{name}"
        assert properties["allowBlobPublicAccess"] is False, f"{path}:{name}"
        assert properties["minimumTlsVersion"] == "TLS1_2", f"{path}:{name}"
        assert properties["supportsHttpsTrafficOnly"] is True, f"{path}:{name}"
    for path, name, container in all_resources(templates, "Microsoft.Storage/storageAccounts/blobServices/containers"):
        assert body(container)["properties"]["publicAccess"] == "None", f"{path}:{name}"


def test_storage_holds_the_exporter_containers_and_queue(templates: dict[str, Template]) -> None:
    params = body(templates[MAIN]["modules"]["storage"])["params"]
    main = templates[MAIN]
    assert {resolve(main, name) for name in params["appContainerNames"]} == {RUNS_CONTAINER, STATE_CONTAINER}
    assert resolve(main, params["runQueueName"]) == RUN_QUEUE


def test_key_vault_uses_rbac_soft_delete_and_purge_protection(templates: dict[str, Template]) -> None:
    vaults = all_resources(templates, "Microsoft.KeyVault/vaults")
    assert len(vaults) == 1
    properties = body(vaults[0][2])["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert properties["softDeleteRetentionInDays"] >= 7
    assert "accessPolicies" not in properties


def test_api_key_secret_is_written_only_when_given(templates: dict[str, Template]) -> None:
    (path, _name, secret), = all_resources(templates, "Microsoft.KeyVault/vaults/secrets")
    template = templates[path]
    secure = {param for param, declaration in template["parameters"].items() if is_secure(declaration)}
    assert body(secret)["properties"]["value"] in secure
    assert references(condition(secret)) & secure, "the secret must be conditional on the key being given"
    assert "empty" in json.dumps(condition(secret))
    assert body(secret)["properties"]["contentType"]
    # The secret name reaches the module from main.bicep and must be the one the exporter reads.
    module_params = body(templates[MAIN]["modules"]["keyVault"])["params"]
    assert resolve(templates[MAIN], module_params[body(secret)["name"]]) == DEFAULT_SECRET_NAME


def test_role_assignments_use_only_allow_listed_data_roles(templates: dict[str, Template]) -> None:
    assignments = all_resources(templates, "Microsoft.Authorization/roleAssignments")
    seen: set[str] = set()
    for path, name, assignment in assignments:
        template = templates[path]
        definition = body(assignment)["properties"]["roleDefinitionId"]["function"]
        assert definition["type"] == "subscription_resource_id", f"{path}:{name}"
        role = resolve(template, definition["parameters"]["resource_name_1"])
        assert GUID_RE.match(role), f"{path}:{name}: role {role!r} is not a literal GUID"
        assert role not in FORBIDDEN_ROLES, f"{path}:{name} assigns {FORBIDDEN_ROLES.get(role)}"
        assert role in ALLOWED_ROLES, f"{path}:{name} assigns a role outside the allow-list: {role}"
        allowed_file, allowed_scope_type = ALLOWED_ROLES[role]
        assert path == allowed_file, f"{path}:{name}: role {role} belongs in {allowed_file}"
        scope = body(assignment)["scope"]
        assert template["resources"][scope]["type"] == allowed_scope_type, f"{path}:{name} scoped to {scope}"
        seen.add(role)
    assert seen == set(ALLOWED_ROLES)


def test_export_storage_gets_read_access_only(templates: dict[str, Template]) -> None:
    template = templates["app/export-storage-rbac.bicep"]
    roles = [
        resolve(template, body(a)["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        for a in resources(template, "Microsoft.Authorization/roleAssignments").values()
    ]
    assert roles == [STORAGE_BLOB_DATA_READER]


def test_deployer_secrets_officer_is_optional(templates: dict[str, Template]) -> None:
    template = templates["app/rbac.bicep"]
    for assignment in resources(template, "Microsoft.Authorization/roleAssignments").values():
        role = resolve(template, body(assignment)["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        if role == KEY_VAULT_SECRETS_OFFICER:
            assert {"grantDeployerSecretsOfficer", "deployerPrincipalId"} <= references(condition(assignment))
            assert body(assignment)["properties"]["principalId"] == "deployerPrincipalId"
        else:
            assert condition(assignment) is None
            assert body(assignment)["properties"]["principalId"] == "appPrincipalId"
            assert body(assignment)["properties"]["principalType"] == "ServicePrincipal"


def test_event_grid_feeds_the_blob_trigger_on_model_json(templates: dict[str, Template]) -> None:
    template = templates["app/eventgrid.bicep"]
    (topic,) = resources(template, "Microsoft.EventGrid/systemTopics").values()
    assert body(topic)["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    (subscription,) = resources(template, "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()
    properties = body(subscription)["properties"]
    assert properties["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert properties["filter"]["subjectEndsWith"] == "model.json"
    assert properties["destination"]["endpointType"] == "WebHook"
    url = properties["destination"]["properties"]["endpointUrl"]
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${" in url
    assert resolve(template, "functionName") == "export_on_arrival"
    key = json.dumps(template["variables"]["blobsExtensionKey"])
    assert "list_keys" in key and "systemKeys.blobs_extension" in key and "/host/default" in key


# --- app settings, secrets, outputs ----------------------------------------------------------------

def test_app_settings_are_exactly_the_exporter_contract(templates: dict[str, Template]) -> None:
    settings = app_settings(templates)
    assert set(settings) == set(AZURE_APP_SETTINGS)
    # Flex Consumption rejects these as app settings (runtime and version live in functionAppConfig).
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(settings)
    # No second source of app settings that could add or override names.
    for path, name, config in all_resources(templates, "Microsoft.Web/sites/config"):
        pytest.fail(f"{path}:{name}: app settings must only be set in siteConfig.appSettings")


def test_app_settings_are_identity_based(templates: dict[str, Template]) -> None:
    settings = app_settings(templates)
    credentials = {name: value for name, value in settings.items() if name.endswith("__credential")}
    assert credentials and set(credentials.values()) == {"managedidentity"}
    client_ids = [value for name, value in settings.items() if name.endswith("__clientId") or name == "AZURE_CLIENT_ID"]
    assert client_ids and set(client_ids) == {"identityClientId"}
    for name, value in settings.items():
        if name != "APPLICATIONINSIGHTS_CONNECTION_STRING":
            assert not SECRET_EXPRESSION_RE.search(json.dumps(value)), f"{name} reads a key or connection string"


def test_export_schedule_and_default_exports_config(templates: dict[str, Template]) -> None:
    main = templates[MAIN]
    assert resolve(main, "defaultExportSchedule") == DEFAULT_EXPORT_SCHEDULE
    example = parse_exports_config(resolve_deep(main, "exampleExportsConfig"), "exampleExportsConfig")
    assert all(export.skip_reason() for export in example.exports), "the default example must not export anything"
    assert {export.source.container for export in example.exports} == {DEFAULT_EXPORT_CONTAINER}


def test_one_export_container_feeds_the_app_setting_and_the_event_filter(templates: dict[str, Template]) -> None:
    main = templates[MAIN]
    assert resolve(main, "defaultExportContainer") == DEFAULT_EXPORT_CONTAINER
    assert body(main["modules"]["functionApp"])["params"]["exportContainerName"] == "exportContainer"
    assert app_settings(templates)["CI_EXPORT_CONTAINER"] == "exportContainerName"
    # The hooks pass main's CI_EXPORT_CONTAINER output on to the Event Grid filter.
    assert main["outputs"]["CI_EXPORT_CONTAINER"]["value"] == "exportContainer"
    assert body(templates["app/export-access.bicep"]["modules"]["modelJsonEvents"])["params"]["containerName"] == "containerName"
    (subscription,) = resources(templates["app/eventgrid.bicep"], "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()
    subject = body(subscription)["properties"]["filter"]["subjectBeginsWith"]
    assert subject == "/blobServices/default/containers/${containerName}/"


def test_no_secure_value_reaches_outputs_or_app_settings(templates: dict[str, Template]) -> None:
    assert tainted_names(templates[MAIN]) >= {"activeCampaignApiKey"}
    assert secure_value_leaks(templates) == []


def test_leak_check_catches_a_secure_value_in_an_output_or_setting() -> None:
    leaky = BicepParser().parse(
        text=(
            "@secure()\nparam apiKey string\n"
            "var header = 'Api-Token ${apiKey}'\n"
            "resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'x'\n  properties: {\n"
            "    siteConfig: {\n      appSettings: [\n        {\n          name: 'K'\n          value: header\n"
            "        }\n      ]\n    }\n  }\n}\n"
            "output token string = header\n"
        )
    )
    assert secure_value_leaks({"leaky.bicep": leaky}) == [
        "leaky.bicep: output token",
        "leaky.bicep: resource site property siteConfig",
    ]


def test_outputs_contain_no_secret(templates: dict[str, Template]) -> None:
    for path, template in templates.items():
        for name, output in template.get("outputs", {}).items():
            assert not SECRET_OUTPUT_NAME_RE.search(name), f"{path}: output {name}"
            assert not SECRET_EXPRESSION_RE.search(json.dumps(output["value"])), f"{path}: output {name}"


def test_main_outputs_what_azd_needs(templates: dict[str, Template]) -> None:
    outputs = set(templates[MAIN]["outputs"])
    assert {
        "AZURE_LOCATION",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_KEY_VAULT_NAME",
        "AZURE_KEY_VAULT_ENDPOINT",
        "AZURE_STORAGE_ACCOUNT_NAME",
    } <= outputs


# --- azd files -------------------------------------------------------------------------------------

def test_main_is_an_azd_subscription_template(templates: dict[str, Template]) -> None:
    main = templates[MAIN]
    assert main["globals"]["scope"]["value"] == "subscription"
    assert {"environmentName", "location"} <= set(main["parameters"])
    assert list(resources(main, "Microsoft.Resources/resourceGroups"))


def test_parameters_file_maps_azd_variables(templates: dict[str, Template]) -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = templates[MAIN]["parameters"]
    assert set(parameters) <= set(declared), "parameters file names a parameter main.bicep does not declare"
    required = {name for name, declaration in declared.items() if declaration["default"] is None}
    assert required <= set(parameters), "azd would prompt for these"
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    for name, entry in parameters.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), f"{name} is not an azd substitution"


def test_azure_yaml_deploys_the_exporter_service(templates: dict[str, Template]) -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    service = project["services"]["exporter"]
    assert service == {"project": ".", "language": "python", "host": "function"}
    # azd finds the app to deploy to by this tag.
    tag_objects = [value for value in function_app(templates)["tags"]["function"]["parameters"].values() if isinstance(value, dict)]
    (service_tag,) = [tags["'azd-service-name'"] for tags in tag_objects if "'azd-service-name'" in tags]
    assert resolve(templates[FUNCTION_APP], service_tag) == "exporter"


def test_main_deploys_into_its_own_resource_group_only(templates: dict[str, Template]) -> None:
    """azd down deletes every resource group the main deployment touched: the customer's export storage
    resource group must never be one of them."""
    main = templates[MAIN]
    assert [declaration["type"] for declaration in main["resources"].values()] == ["Microsoft.Resources/resourceGroups"]
    for name, module in main["modules"].items():
        assert body(module)["scope"] == "rg", f"module {name} deploys outside the azd resource group"
    assert "app/export-access.bicep" not in {module["detail"]["path"] for module in main["modules"].values()}


# --- the azd hook that grants access to the export storage account -------------------------------

FAKE_AZ = """#!/bin/sh
printf '%s\\037' "$@" >> "$AZ_LOG"
printf '\\n' >> "$AZ_LOG"
case "$1 $2 $3" in
  "functionapp keys list") [ "$FAKE_KEYS" = fail ] && exit 1; echo "$FAKE_KEYS" ;;
esac
"""
HOOK_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_ENV_NAME": "prod",
    "AZURE_RESOURCE_GROUP": "rg-prod",
    "AZURE_FUNCTION_APP_NAME": "func-abc",
    "EXPORTER_IDENTITY_PRINCIPAL_ID": "11111111-1111-1111-1111-111111111111",
    "CI_EXPORT_CONTAINER": "customer-insights",
}


def hook_script(event: str) -> str:
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))["hooks"]
    assert hooks[event]["shell"] == "sh"
    return hooks[event]["run"]


def run_hook(tmp_path: Path, event: str, keys_answer: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run the hook with sh and a stand-in ``az`` on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_az = bin_dir / "az"
    fake_az.write_text(FAKE_AZ, encoding="utf-8")
    fake_az.chmod(0o755)
    log = tmp_path / "az.log"
    log.write_text("", encoding="utf-8")
    environment = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AZ_LOG": str(log),
        "FAKE_KEYS": keys_answer,
        **HOOK_ENV,
        **env,
    }
    result = subprocess.run(["sh", "-c", hook_script(event)], check=False, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=30)
    calls = [line.split("\x1f")[:-1] for line in log.read_text(encoding="utf-8").splitlines()]
    return result, calls


def deployment_parameters(call: list[str]) -> dict[str, str]:
    start = call.index("--parameters") + 1
    end = next((i for i in range(start, len(call)) if call[i].startswith("--")), len(call))
    return dict(argument.split("=", 1) for argument in call[start:end])


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_hook_runs_after_provision_and_after_deploy() -> None:
    assert hook_script("postprovision") == hook_script("postdeploy")


def test_hook_does_nothing_without_an_export_storage_account(tmp_path: Path) -> None:
    result, calls = run_hook(tmp_path, "postprovision", "true")
    assert result.returncode == 0, result.stderr
    assert calls == []


def test_hook_grants_access_and_waits_for_the_key_before_subscribing(tmp_path: Path, templates: dict[str, Template]) -> None:
    export = {"CI_EXPORT_STORAGE_ACCOUNT_NAME": "contosoexports", "CI_EXPORT_STORAGE_RESOURCE_GROUP": "rg-ci"}
    for keys_answer, expected in (("false", "false"), ("fail", "false"), ("true", "true")):
        result, calls = run_hook(tmp_path, "postdeploy", keys_answer, **export)
        assert result.returncode == 0, result.stderr
        deployments = [call for call in calls if call[:3] == ["deployment", "group", "create"]]
        assert len(deployments) == 1, calls
        (call,) = deployments
        assert option(call, "--resource-group") == "rg-ci"
        assert option(call, "--subscription") == HOOK_ENV["AZURE_SUBSCRIPTION_ID"]
        template_path = option(call, "--template-file")
        assert (ROOT / template_path).is_file()
        parameters = deployment_parameters(call)
        assert parameters["createSubscription"] == expected, keys_answer
        assert parameters["exportStorageAccountName"] == "contosoexports"
        assert parameters["appPrincipalId"] == HOOK_ENV["EXPORTER_IDENTITY_PRINCIPAL_ID"]
        assert parameters["containerName"] == "customer-insights"
        # Every parameter passed is declared, and every required one is passed.
        declared = templates[Path(template_path).relative_to("infra").as_posix()]["parameters"]
        assert set(parameters) <= set(declared)
        assert {name for name, p in declared.items() if p["default"] is None} <= set(parameters)
        # The hook learns whether the key exists without printing or passing the key.
        keys_calls = [call for call in calls if call[:3] == ["functionapp", "keys", "list"]]
        assert keys_calls and all("&& 'true' || 'false'" in option(call, "--query") for call in keys_calls)


def test_hook_uses_the_app_resource_group_when_none_is_given(tmp_path: Path) -> None:
    result, calls = run_hook(tmp_path, "postprovision", "false", CI_EXPORT_STORAGE_ACCOUNT_NAME="contosoexports")
    assert result.returncode == 0, result.stderr
    (call,) = [call for call in calls if call[:3] == ["deployment", "group", "create"]]
    assert option(call, "--resource-group") == HOOK_ENV["AZURE_RESOURCE_GROUP"]


def test_main_outputs_everything_the_hook_reads(templates: dict[str, Template]) -> None:
    script = hook_script("postprovision")
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script))
    from_azd = {"AZURE_SUBSCRIPTION_ID", "AZURE_ENV_NAME"}  # azd sets these itself
    user_set = {"CI_EXPORT_STORAGE_ACCOUNT_NAME", "CI_EXPORT_STORAGE_RESOURCE_GROUP", "EXPORT_EVENT_GRID_SYSTEM_TOPIC_NAME"}
    assert used - from_azd - user_set <= set(templates[MAIN]["outputs"])
