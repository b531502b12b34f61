"""The APIM policies: well-formed, documented elements only, fragments that exist and are deployed, the
identity fragment's order of operations, the limits per product, and operations for every AOAI path."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shared.normalize.apis import classify

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
FRAGMENTS = POLICIES / "fragments"
APIM_BICEP = ROOT / "bicep" / "modules" / "apim.bicep"
MAIN_BICEP = ROOT / "bicep" / "main.bicep"
OPERATIONS = ROOT / "bicep" / "apim-operations.json"

#: The identity headers the proxy trusts; APIM is the only one allowed to set them.
IDENTITY_HEADERS = {
    "x-gateway-request-id",
    "x-gateway-subscription-id",
    "x-gateway-subscription-name",
    "x-gateway-product",
    "x-gateway-user-id",
    "x-gateway-client-ip",
}


def policy_files() -> list[Path]:
    return sorted(POLICIES.rglob("*.xml"))


def allowed_elements() -> set[str]:
    lines = (POLICIES / "allowed-elements.txt").read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()}


def included_fragments(root: ET.Element) -> list[str]:
    return [el.attrib["fragment-id"] for el in root.iter("include-fragment")]


def deployed_fragments() -> dict[str, str]:
    """fragment name -> file it is loaded from, as apim.bicep declares them."""
    text = APIM_BICEP.read_text()
    found = re.findall(
        r"policyFragments@[^']+' = \{\s*parent: service\s*name: '([^']+)'.*?loadTextContent\('([^']+)'\)",
        text,
        re.S,
    )
    return {name: path for name, path in found}


@pytest.mark.parametrize("path", policy_files(), ids=lambda p: p.name)
def test_policy_is_well_formed_and_uses_documented_elements(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag in {"policies", "fragment"}
    unknown = {el.tag for el in root.iter()} - allowed_elements()
    assert unknown == set()


def test_unknown_element_is_caught() -> None:
    root = ET.fromstring("<fragment><set-header name='a' exists-action='delete'/><made-up-policy/></fragment>")
    assert {el.tag for el in root.iter()} - allowed_elements() == {"made-up-policy"}


def test_every_included_fragment_exists_and_is_deployed_by_bicep() -> None:
    deployed = deployed_fragments()
    assert deployed, "apim.bicep declares policy fragments"
    included = set()
    for path in policy_files():
        included.update(included_fragments(ET.parse(path).getroot()))
    assert included, "api-policy.xml composes fragments"
    for fragment_id in included:
        assert (FRAGMENTS / f"{fragment_id}.xml").is_file(), fragment_id
        assert fragment_id in deployed, f"{fragment_id} is not deployed by apim.bicep"
        loaded = (APIM_BICEP.parent / deployed[fragment_id]).resolve()
        assert loaded == (FRAGMENTS / f"{fragment_id}.xml").resolve()
    # Nothing deployed that no policy uses, and every fragment file is deployed.
    assert set(deployed) == included
    assert {p.stem for p in FRAGMENTS.glob("*.xml")} == included


def test_api_policy_is_deployed_from_its_file() -> None:
    assert "loadTextContent('../../policies/api-policy.xml')" in APIM_BICEP.read_text()


def test_api_policy_composes_fragments_in_the_right_sections_and_order() -> None:
    root = ET.parse(POLICIES / "api-policy.xml").getroot()
    choose = root.find("inbound").find("choose")
    no_key, keyed = choose.find("when"), choose.find("otherwise")
    assert no_key.attrib["condition"] == "@(context.Subscription == null)"
    assert included_fragments(no_key) == ["gateway-bearer"], "a call without a subscription only meets the bearer hop"
    inbound = included_fragments(keyed)
    assert inbound[0] == "gateway-identity", "identity before anything reads headers"
    assert inbound.index("gateway-limits") < inbound.index("gateway-backend")
    assert included_fragments(root.find("backend")) == ["gateway-forward"]
    assert included_fragments(root.find("on-error")) == ["gateway-errors"]


def identity_problems(root: ET.Element) -> list[str]:
    """Why an identity fragment would let a client forge x-gateway-* headers (empty when it cannot)."""
    problems = []
    deleted_at: dict[str, int] = {}
    set_at: dict[str, int] = {}
    for index, el in enumerate(root):
        if el.tag != "set-header":
            continue
        name = el.attrib["name"].lower()
        if not name.startswith("x-gateway-"):
            continue
        action = el.attrib.get("exists-action", "override")
        if action == "delete":
            deleted_at.setdefault(name, index)
        else:
            set_at.setdefault(name, index)
            value = (el.findtext("value") or "").strip()
            if not (value.startswith("@(") and "context." in value):
                problems.append(f"{name} is not set from the APIM context: {value!r}")
    if set(deleted_at) != IDENTITY_HEADERS:
        problems.append(f"deletes {sorted(deleted_at)}, expected {sorted(IDENTITY_HEADERS)}")
    if set(set_at) != IDENTITY_HEADERS:
        problems.append(f"sets {sorted(set_at)}, expected {sorted(IDENTITY_HEADERS)}")
    if deleted_at and set_at and max(deleted_at.values()) > min(set_at.values()):
        problems.append("a header is set before every client-supplied x-gateway-* header is removed")
    # Any other x-gateway-* header cannot be deleted by prefix: it must be refused before the sets.
    guards = [
        i
        for i, el in enumerate(root)
        if el.tag == "choose"
        and "x-gateway-" in (el.find("when").attrib.get("condition", ""))
        and el.find("when").find("return-response") is not None
    ]
    if not guards or (set_at and guards[0] > min(set_at.values())):
        problems.append("other x-gateway-* headers are not refused before the identity is set")
    return problems


def test_identity_fragment_removes_client_headers_before_setting_its_own() -> None:
    root = ET.parse(FRAGMENTS / "gateway-identity.xml").getroot()
    assert identity_problems(root) == []


def test_identity_check_catches_a_set_before_remove() -> None:
    root = ET.parse(FRAGMENTS / "gateway-identity.xml").getroot()
    children = list(root)
    first_set = next(el for el in children if el.tag == "set-header" and el.attrib.get("exists-action") == "override")
    root.remove(first_set)
    root.insert(0, first_set)
    assert any("before" in p for p in identity_problems(root))


def test_identity_fragment_strips_the_subscription_key() -> None:
    root = ET.parse(FRAGMENTS / "gateway-identity.xml").getroot()
    deleted_headers = {
        el.attrib["name"].lower() for el in root.iter("set-header") if el.attrib.get("exists-action") == "delete"
    }
    deleted_query = {
        el.attrib["name"].lower()
        for el in root.iter("set-query-parameter")
        if el.attrib.get("exists-action") == "delete"
    }
    assert {"api-key", "ocp-apim-subscription-key", "authorization"} <= deleted_headers
    assert "api-key" in deleted_query
    # The API reads the key from exactly those names.
    text = APIM_BICEP.read_text()
    assert re.search(r"subscriptionKeyParameterNames: \{\s*header: 'api-key'\s*query: 'api-key'", text)


def default_products() -> list[str]:
    text = MAIN_BICEP.read_text()
    block = text[text.index("param products array = [") :]
    block = block[: block.index("\n]\n")]
    return re.findall(r"^    name: '([^']+)'", block, re.M)


def test_limits_fragment_covers_every_default_product() -> None:
    root = ET.parse(FRAGMENTS / "gateway-limits.xml").getroot()
    choose = root.find("choose")
    branches = [*choose.findall("when"), choose.find("otherwise")]
    named = set()
    for branch in branches:
        limit = branch.find("llm-token-limit")
        assert limit is not None and branch.find("rate-limit-by-key") is not None
        assert limit.attrib["estimate-prompt-tokens"] == "false"
        assert limit.attrib["counter-key"] == "@(context.Subscription.Id)"
        assert limit.attrib["remaining-tokens-header-name"]
        assert limit.attrib["remaining-quota-tokens-header-name"]
        for attr in ("tokens-per-minute", "token-quota", "token-quota-period"):
            named.add(re.fullmatch(r"\{\{([a-z]+)-[a-z-]+\}\}", limit.attrib[attr]).group(1))
    assert named == set(default_products()) == {"starter", "standard", "premium"}


def test_every_named_value_a_policy_uses_is_created_by_bicep() -> None:
    text = APIM_BICEP.read_text()
    literal = set(re.findall(r"namedValues@[^']+' = \{\s*parent: service\s*name: '([^'$]+)'", text))
    per_product = set(re.findall(r"name: '\$\{p\.name\}-([a-z-]+)'", text))
    defined = literal | {f"{p}-{suffix}" for p in default_products() for suffix in per_product}
    used = set()
    for path in policy_files():
        used.update(re.findall(r"\{\{([A-Za-z0-9._-]+)\}\}", path.read_text()))
    assert used, "policies use named values"
    assert used <= defined, sorted(used - defined)


def test_forward_request_streams_with_a_long_timeout() -> None:
    forward = ET.parse(FRAGMENTS / "gateway-forward.xml").getroot().find("forward-request")
    assert forward.attrib["buffer-response"] == "false"
    assert forward.attrib["fail-on-error-status-code"] == "false"
    main = MAIN_BICEP.read_text()
    assert int(re.search(r"param forwardTimeoutSeconds int = (\d+)", main).group(1)) >= 120


def test_backend_fragment_sends_the_function_key_from_a_secret_named_value() -> None:
    root = ET.parse(FRAGMENTS / "gateway-backend.xml").getroot()
    assert root.find("set-backend-service").attrib["backend-id"] == "gateway-function"
    header = next(el for el in root.iter("set-header") if el.attrib["name"] == "x-functions-key")
    assert header.findtext("value") == "{{gateway-function-key}}"
    text = APIM_BICEP.read_text()
    block = text[text.index("name: 'gateway-function-key'") :]
    assert "secret: true" in block[: block.index("}")]


def test_metrics_fragment_has_subscription_product_and_deployment_dimensions() -> None:
    metric = ET.parse(FRAGMENTS / "gateway-metrics.xml").getroot().find("llm-emit-token-metric")
    names = {d.attrib["name"] for d in metric.findall("dimension")}
    assert {"Subscription ID", "Product ID", "Deployment"} <= names


#: Policies the on-error section accepts (policy reference, "Error handling in API Management policies").
ON_ERROR_ALLOWED = {
    "choose",
    "set-variable",
    "find-and-replace",
    "return-response",
    "set-header",
    "set-method",
    "set-status",
    "send-request",
    "send-one-way-request",
    "log-to-eventhub",
    "json-to-xml",
    "xml-to-json",
    "limit-concurrency",
    "mock-response",
    "retry",
    "trace",
    "include-fragment",
    "base",
}


def test_errors_fragment_answers_in_aoai_error_shape() -> None:
    root = ET.parse(FRAGMENTS / "gateway-errors.xml").getroot()
    assert {el.tag for el in root} <= ON_ERROR_ALLOWED
    response = root.find("return-response")
    body = response.findtext("set-body")
    assert 'new JProperty("error"' in body and '"code"' in body and '"message"' in body
    headers = {el.attrib["name"]: el.findtext("value") for el in response.findall("set-header")}
    assert headers["Content-Type"] == "application/json"
    assert "Retry-After" in headers["Retry-After"], "the limit policies' Retry-After reaches the client"
    text = (FRAGMENTS / "gateway-errors.xml").read_text()
    for status in ("401", "403", "429"):
        assert f"case {status}:" in text
    assert "SubscriptionKeyNotFound" in text


def test_on_error_section_uses_only_policies_allowed_there() -> None:
    on_error = ET.parse(POLICIES / "api-policy.xml").getroot().find("on-error")
    assert {el.tag for el in on_error} <= ON_ERROR_ALLOWED


def operations() -> list[dict]:
    return json.loads(OPERATIONS.read_text())["operations"]


def test_operations_cover_every_api_on_both_surfaces() -> None:
    seen = set()
    for op in operations():
        path = "/openai" + op["urlTemplate"].replace("{deployment-id}", "my-deployment").replace(
            "{response-id}", "resp_1"
        )
        route = classify(path)
        assert route is not None, path
        assert route.api != "other", path
        seen.add((route.api, route.surface, op["method"]))
    apis = [
        "chat.completions",
        "completions",
        "embeddings",
        "images.generations",
        "audio.transcriptions",
        "audio.translations",
        "audio.speech",
    ]
    for api in apis:
        assert (api, "deployments", "POST") in seen
        assert (api, "v1", "POST") in seen
    for method in ("POST", "GET", "DELETE"):
        assert ("responses", "v1", method) in seen
    templates = {op["urlTemplate"] for op in operations()}
    assert {"/responses", "/v1/responses", "/responses/{response-id}", "/v1/responses/{response-id}"} <= templates


def test_health_is_not_exposed_through_apim() -> None:
    for op in operations():
        assert "health" not in op["urlTemplate"].lower()
    # The API lives under /openai, so APIM has no route to the function app's /health.
    assert re.search(r"path: 'openai'", APIM_BICEP.read_text())
    assert "serviceUrl: 'https://${functionAppHostName}/openai'" in APIM_BICEP.read_text()


def test_operation_names_are_unique_and_templates_declare_their_parameters() -> None:
    names = [op["name"] for op in operations()]
    assert len(names) == len(set(names))
    for op in operations():
        declared = {p["name"] for p in op["templateParameters"]}
        assert declared == set(re.findall(r"\{([^}]+)\}", op["urlTemplate"])), op["name"]


def test_bearer_fragment_sends_a_bearer_key_through_apim_again_as_api_key_and_refuses_no_key() -> None:
    """APIM checks subscription keys before policies, from `api-key` only: the API does not require one,
    so that this fragment can move a bearer key into `api-key` and send the call through APIM once more."""
    root = ET.parse(FRAGMENTS / "gateway-bearer.xml").getroot()
    when, otherwise = root.find("choose").find("when"), root.find("choose").find("otherwise")
    condition = when.attrib["condition"]
    assert "Bearer " in condition and "x-apim-bearer-hop" in condition and "Length > 0" in condition
    sets = {el.attrib["name"].lower(): el for el in when.iter("set-header")}
    assert (
        "Authorization" in sets["api-key"].findtext("value")
        and sets["authorization"].attrib["exists-action"] == "delete"
    )
    assert sets["x-apim-bearer-hop"].attrib["exists-action"] == "override"
    backend = when.find("set-backend-service").attrib["base-url"]
    assert "context.Request.OriginalUrl.Host" in backend and "context.Api.Path" in backend
    assert not list(when.iter("include-fragment")), "no function key, no identity on the keyless hop"
    refusal = otherwise.find("return-response")
    assert refusal.find("set-status").attrib["code"] == "401"
    assert "missing subscription key" in refusal.findtext("set-body")
    # The second hop's identity fragment removes the marker, and the API accepts a call without a key.
    identity = ET.parse(FRAGMENTS / "gateway-identity.xml").getroot()
    assert any(
        el.attrib["name"] == "x-apim-bearer-hop" and el.attrib.get("exists-action") == "delete"
        for el in identity.iter("set-header")
    )
    api = APIM_BICEP.read_text()
    api = api[api.index("resource api 'Microsoft.ApiManagement/service/apis") :]
    assert re.search(r"subscriptionRequired: false", api[: api.index("resource apiOperations")])
    products = APIM_BICEP.read_text()
    products = products[products.index("resource productResources") :]
    assert "subscriptionRequired: true" in products[: products.index("resource productApis")]
