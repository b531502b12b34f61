"""The bicep templates: they parse, pass checkov (suppressions need a written reason), describe every
parameter, load policies and the workbook from their files, and expose what the docs promise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.iac_tools import BICEP_DIR, ROOT, bicep_files, parse_bicep, run_checkov

MAIN = BICEP_DIR / "main.bicep"
APIM = BICEP_DIR / "modules" / "apim.bicep"


@pytest.fixture(scope="module")
def parsed() -> dict[Path, dict[str, Any]]:
    return parse_bicep(bicep_files())


def test_every_bicep_file_parses(parsed: dict[Path, dict[str, Any]]) -> None:
    assert len(parsed) >= 10, "main.bicep and its modules"
    failures = {str(p.relative_to(ROOT)): r["error"] for p, r in parsed.items() if not r["ok"]}
    assert not failures


def test_every_module_main_uses_exists(parsed: dict[Path, dict[str, Any]]) -> None:
    text = MAIN.read_text()
    for path in re.findall(r"module \w+ '([^']+)'", text):
        assert (BICEP_DIR / path).is_file(), path


def test_every_parameter_has_a_description(parsed: dict[Path, dict[str, Any]]) -> None:
    missing = []
    for path, result in parsed.items():
        for name, param in result["json"].get("parameters", {}).items():
            kinds = {d.get("type") for d in param.get("decorators", [])}
            if "description" not in kinds:
                missing.append(f"{path.name}:{name}")
    assert missing == []


def test_main_has_defaults_for_a_first_deployment(parsed: dict[Path, dict[str, Any]]) -> None:
    params = parsed[MAIN]["json"]["parameters"]
    without_default = [name for name, p in params.items() if "default" not in p]
    assert without_default == []


def test_outputs_give_the_gateway_url_and_function_app_name(parsed: dict[Path, dict[str, Any]]) -> None:
    outputs = parsed[MAIN]["json"]["outputs"]
    assert "AZURE_APIM_GATEWAY_URL" in outputs
    assert "AZURE_FUNCTION_APP_NAME" in outputs


def test_checkov_reports_no_failed_check_and_every_skip_has_a_reason() -> None:
    report = run_checkov()
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results.get("failed_checks", [])]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 30, "checkov saw the resources"
    for check in results.get("skipped_checks", []):
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) > 20 and reason != "No comment provided", check["check_id"]


def test_loaded_files_exist_and_policies_are_not_copied() -> None:
    for path in bicep_files():
        text = path.read_text()
        for loaded in re.findall(r"load(?:Text|Json)Content\('([^']+)'\)", text):
            assert (path.parent / loaded).resolve().is_file(), f"{path.name} loads missing {loaded}"
        # A policy pasted into bicep instead of loaded from policies/ would drift from the tested file.
        assert "<policies>" not in text and "<fragment>" not in text, path.name


def test_workbook_module_loads_the_workbook_json() -> None:
    text = (BICEP_DIR / "modules" / "workbook.bicep").read_text()
    assert "loadTextContent('../../powerbi/workbook/aoai-gateway.workbook.json')" in text


def _module(parsed: dict[Path, dict[str, Any]], name: str) -> dict[str, Any]:
    return parsed[BICEP_DIR / "modules" / name]["json"]


def _private_endpoint_groups(module: dict[str, Any]) -> set[str]:
    return {
        m["config"]["params"]["groupId"]
        for m in module.get("modules", {}).values()
        if m["detail"]["path"] == "private-endpoint.bicep"
    }


@pytest.mark.parametrize(
    ("module", "resource", "keyless", "groups"),
    [
        ("cosmos.bicep", "account", {"disableLocalAuth": True}, {"Sql"}),
        ("eventhubs.bicep", "namespace", {"disableLocalAuth": True}, {"namespace"}),
        ("storage.bicep", "account", {"allowSharedKeyAccess": False}, {"blob", "queue", "table"}),
        ("openai.bicep", "account", {"disableLocalAuth": True}, {"account"}),
        ("content-safety.bicep", "account", {"disableLocalAuth": True}, {"account"}),
    ],
)
def test_data_services_are_private_and_keyless(
    parsed: dict[Path, dict[str, Any]], module: str, resource: str, keyless: dict[str, bool], groups: set[str]
) -> None:
    parsed_module = _module(parsed, module)
    props = parsed_module["resources"][resource]["config"]["properties"]
    assert props["publicNetworkAccess"] == "Disabled"
    for key, value in keyless.items():
        assert props[key] is value, f"{module}: {key}"
    assert _private_endpoint_groups(parsed_module) == groups


def test_function_app_is_reached_through_a_private_endpoint(parsed: dict[Path, dict[str, Any]]) -> None:
    assert _private_endpoint_groups(_module(parsed, "function-app.bicep")) == {"sites"}


def test_every_subnet_has_an_nsg_and_apim_gets_the_rules_it_needs(parsed: dict[Path, dict[str, Any]]) -> None:
    network = _module(parsed, "network.bicep")["resources"]
    subnets = network["vnet"]["config"]["properties"]["subnets"]
    assert len(subnets) == 3
    for subnet in subnets:
        assert "networkSecurityGroup" in subnet["properties"], subnet["name"]
    rules = [r["properties"] for r in network["apimNsg"]["config"]["properties"]["securityRules"]]
    inbound = {(r["sourceAddressPrefix"], r["destinationPortRange"]) for r in rules if r["direction"] == "Inbound"}
    assert {("Internet", "443"), ("ApiManagement", "3443"), ("AzureLoadBalancer", "6390")} <= inbound
    outbound = {r["destinationAddressPrefix"] for r in rules if r["direction"] == "Outbound"}
    assert {"Storage", "Sql", "AzureKeyVault", "AzureMonitor"} <= outbound
    delegations = subnets[1]["properties"]["delegations"]
    assert delegations[0]["properties"]["serviceName"] == "Microsoft.App/environments"


def test_apim_is_in_external_vnet_mode(parsed: dict[Path, dict[str, Any]]) -> None:
    props = _module(parsed, "apim.bicep")["resources"]["service"]["config"]["properties"]
    assert props["virtualNetworkType"] == "External"
    assert "subnetResourceId" in props["virtualNetworkConfiguration"]


def test_function_app_is_flex_python_311_with_identity(parsed: dict[Path, dict[str, Any]]) -> None:
    resources = parsed[BICEP_DIR / "modules" / "function-app.bicep"]["json"]["resources"]
    plan = resources["plan"]["config"]
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = resources["site"]["config"]
    assert site["identity"] == {"type": "SystemAssigned"}
    props = site["properties"]
    assert props["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.13"}
    assert props["functionAppConfig"]["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    assert props["siteConfig"]["ipSecurityRestrictionsDefaultAction"] == "Deny"
    assert "virtualNetworkSubnetId" in props


def test_least_privilege_roles_are_assigned() -> None:
    text = (BICEP_DIR / "modules" / "roles.bicep").read_text()
    for role_id in (
        "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",  # Cognitive Services OpenAI User
        "2b629674-e913-4c01-ae53-ef4638d8f975",  # Azure Event Hubs Data Sender
        "a638d3c7-ab3a-418d-83e6-5f17a39d4fde",  # Azure Event Hubs Data Receiver
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
        "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
        "00000000-0000-0000-0000-000000000002",  # Cosmos DB Built-in Data Contributor
    ):
        assert role_id in text, role_id
    # Broad roles would defeat the point.
    for broad in ("b24988ac-6180-42a0-ab88-20f7382dd24c", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"):  # Contributor, Owner
        assert broad not in text


def test_deploy_docs_name_the_real_outputs_and_files(parsed: dict[Path, dict[str, Any]]) -> None:
    page = (ROOT / "docs" / "deploy.md").read_text()
    for output in parsed[MAIN]["json"]["outputs"]:
        if output in {"AZURE_APIM_GATEWAY_URL", "AZURE_APIM_NAME", "AZURE_FUNCTION_APP_NAME"}:
            assert output in page
    for path in ("bicep/main.bicep", "bicep/main.parameters.json", "azure.yaml"):
        assert path in page and (ROOT / path).is_file(), path
    for module in re.findall(r"`([a-z-]+\.bicep)`", page):
        assert (BICEP_DIR / "modules" / module).is_file() or module == "main.bicep", module
    params = parsed[MAIN]["json"]["parameters"]
    for name in re.findall(r"^\| `([A-Za-z]+)`", page, re.M):
        assert name in params, f"docs/deploy.md names parameter {name} that main.bicep lacks"
