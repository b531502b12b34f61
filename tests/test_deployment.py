"""The deployment as bicep renders it: main.bicep, the modules it calls, their resources.

A first deployment must work in the documented order (provision, then publish code), so nothing may
read a secret that only exists once code is published (the Functions host keys), and the function
app's settings must be exactly those the code reads. Each rule is a function over the rendered
deployment; the tests run it on the templates as shipped and on copies with the mistake put back.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.iac_tools import BICEP_DIR, ROOT, parse_bicep
from tests.test_bicep_settings import AZURE_ONLY, LOCAL_ONLY, code_settings

_SITE = "microsoft.web/sites"


@dataclass(frozen=True, slots=True)
class Deployment:
    """main.bicep and every module it reaches: file -> pycep's JSON of that file."""

    root: Path
    files: dict[Path, dict[str, Any]]

    def resources(self) -> Iterator[tuple[Path, str, dict[str, Any]]]:
        for path, parsed in self.files.items():
            for name, resource in (parsed.get("resources") or {}).items():
                yield path, name, resource


def render(bicep_dir: Path) -> Deployment:
    """Parse main.bicep, then each module it calls (transitively), as ARM would deploy them."""
    main = bicep_dir / "main.bicep"
    files: dict[Path, dict[str, Any]] = {}
    todo = [main]
    while todo:
        batch = [p for p in dict.fromkeys(todo) if p not in files]
        todo = []
        if not batch:
            break
        for path, result in parse_bicep(batch).items():
            assert result["ok"], f"{path}: {result.get('error')}"
            files[path.resolve()] = result["json"]
            for module in (result["json"].get("modules") or {}).values():
                target = module.get("detail", {}).get("path")
                if module.get("type") == "local" and target:
                    todo.append((path.parent / target).resolve())
    return Deployment(bicep_dir, files)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _symbols(parsed: dict[str, Any]) -> dict[str, str]:
    """Resource symbol -> its type (lower case), existing ones included."""
    return {name: str(r.get("type", "")).lower() for name, r in (parsed.get("resources") or {}).items()}


def _list_call(node: dict[str, Any]) -> tuple[str, Any] | None:
    """(function name, its target) when the node calls list*(): `listKeys(id, ...)` or `symbol.listKeys()`."""
    if node.get("type") == "list_func":
        params = node.get("parameters") or {}
        return str(params.get("func_name", "")), params.get("resource_identifier")
    if node.get("type") == "function_accessor":
        operands = node.get("operands") or {}
        name = str(operands.get("func_name", ""))
        if name.lower().startswith("list"):
            return name, operands.get("operand_1")
    return None


def publishing_dependent_reads(deployment: Deployment) -> list[str]:
    """Every list*() of a Function App's keys or secrets: they exist only once code has been published
    (the host creates them when it first runs), so provisioning must not read them."""
    found = []
    for path, parsed in deployment.files.items():
        symbols = _symbols(parsed)
        for node in _walk(parsed):
            call = _list_call(node)
            if call is None:
                continue
            name, target = call
            text = json.dumps(target, default=str)
            types = {symbols[s] for s in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text) if s in symbols}
            types.add(text.lower())
            if any(_SITE in t for t in types):
                found.append(f"{path.relative_to(deployment.root.resolve())}: {name}({text})")
    return found


def function_app_settings(deployment: Deployment) -> dict[str, Any]:
    """The app settings of the one Function App the deployment creates."""
    sites = [
        r for _, _, r in deployment.resources() if str(r.get("type", "")).lower() == _SITE and not r.get("existing")
    ]
    assert len(sites) == 1, "the deployment creates one function app"
    entries = sites[0]["config"]["properties"]["siteConfig"]["appSettings"]
    return {entry["name"]: entry["value"] for entry in entries}


def settings_mismatch(deployment: Deployment) -> dict[str, list[str]]:
    """Settings the code reads that bicep sets nowhere, and settings bicep sets that the code never reads."""
    written = set(function_app_settings(deployment))
    expected = (code_settings() - set(LOCAL_ONLY)) | set(AZURE_ONLY)
    return {"read but never set": sorted(expected - written), "set but never read": sorted(written - expected)}


@pytest.fixture(scope="module")
def shipped() -> Deployment:
    return render(BICEP_DIR)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """A copy of bicep/ with the mistakes put back: the host key read with listKeys (as a function and as
    a method of a host resource), a misspelled setting no code reads, a setting the code reads removed."""
    copy = tmp_path_factory.mktemp("broken") / "bicep"
    shutil.copytree(BICEP_DIR, copy)
    apim = copy / "modules" / "apim.bicep"
    text = apim.read_text()
    assert text.count("value: functionKey\n") == 1
    apim.write_text(
        text.replace(
            "value: functionKey\n",
            "value: listKeys('${functionApp.id}/host/default', '2023-12-01').functionKeys.default\n",
        )
    )
    key = copy / "modules" / "function-key.bicep"
    key.write_text(
        key.read_text()
        + (
            "\nresource site 'Microsoft.Web/sites@2023-12-01' existing = {\n  name: functionAppName\n}\n"
            "resource hostKeys 'Microsoft.Web/sites/host@2023-12-01' existing = {\n  parent: site\n  name: 'default'\n}\n"
            "output masterKey string = hostKeys.listKeys().masterKey\n"
        )
    )
    module = copy / "modules" / "function-app.bicep"
    text = module.read_text()
    anchor = "        {\n          name: 'LOG_STORE'\n"
    entry = re.search(r"        \{\n          name: 'EVENT_HUB_NAME'\n          value: [^\n]+\n        \}\n", text)
    assert anchor in text and entry is not None
    text = text.replace(entry.group(0), "", 1)
    text = text.replace(
        anchor, "        {\n          name: 'GATEWAY_BACKEND'\n          value: 'typo'\n        }\n" + anchor, 1
    )
    module.write_text(text)
    return render(copy)


def test_the_deployment_reaches_every_module(shipped: Deployment) -> None:
    names = {p.name for p in shipped.files}
    assert {"main.bicep", "function-app.bicep", "apim.bicep", "function-key.bicep", "roles.bicep"} <= names
    keys = [
        r for _, _, r in shipped.resources() if str(r.get("type")).lower() == "microsoft.web/sites/host/functionkeys"
    ]
    assert len(keys) == 1 and keys[0]["config"]["properties"]["value"] == "keyValue"


def test_nothing_reads_a_secret_that_needs_published_code(shipped: Deployment) -> None:
    assert publishing_dependent_reads(shipped) == []


def test_apim_and_the_function_app_get_the_same_key_from_main(shipped: Deployment) -> None:
    main = shipped.files[(BICEP_DIR / "main.bicep").resolve()]
    assert main["modules"]["apim"]["config"]["params"]["functionKey"] == "functionKeyValue"
    assert main["modules"]["functionKey"]["config"]["params"]["keyValue"] == "functionKeyValue"
    assert "gatewayFunctionKey" in json.dumps(main["variables"]["functionKeyValue"])
    assert {"roles", "apim"} <= set(main["modules"]["functionKey"]["config"]["dependsOn"])


def test_the_function_app_settings_are_exactly_those_the_code_reads(shipped: Deployment) -> None:
    assert settings_mismatch(shipped) == {"read but never set": [], "set but never read": []}


def test_reintroduced_listkeys_of_the_host_keys_is_caught(broken: Deployment) -> None:
    found = publishing_dependent_reads(broken)
    assert len(found) == 2, found
    assert any(f.startswith("modules/apim.bicep: listKeys") and "/host/default" in f for f in found)
    assert any(f.startswith("modules/function-key.bicep: listKeys") and "hostKeys" in f for f in found)


def test_settings_set_but_never_read_and_read_but_never_set_are_caught(broken: Deployment) -> None:
    assert settings_mismatch(broken) == {
        "read but never set": ["EVENT_HUB_NAME"],
        "set but never read": ["GATEWAY_BACKEND"],
    }


# --------------------------------------------------------------------------------------- sizing
#: Flex Consumption: at most 1000 instances per app, at least 40 as the maximum; HTTP concurrency 1..1000.
FLEX_INSTANCE_RANGE = (40, 1000)
FLEX_CONCURRENCY_RANGE = (1, 1000)


def _decorators(param: dict[str, Any]) -> dict[str, Any]:
    return {d.get("type"): d.get("argument") for d in param.get("decorators", [])}


def _bench_numbers() -> dict[str, float]:
    """What bench/results/latest.md measured per concurrent stream (RSS) and per streamed request (CPU)."""
    text = (ROOT / "bench" / "results" / "latest.md").read_text()
    peak = re.search(r"Peak when all streams end at once[^:]*: ([\d.]+) MiB, (\d+) KB per stream", text)
    idle = re.search(r"RSS idle ([\d.]+) MiB", text)
    rows = re.findall(r"^\| stream \| (\d+) \| gateway \| (\d+) \|", text, re.M)
    cpus = re.search(r"machine: (\d+) CPUs", text)
    assert peak and idle and rows and cpus, "bench/results/latest.md lost a number the sizing rests on"
    best = max(int(rps) for _, rps in rows)
    # The gateway's CPU per streamed request where the bench measured it (its CPU table: workload,
    # concurrency, direct, bare, gateway µs, each dev host figure with its host emulation in brackets,
    # counted in: an upper bound), the most of any concurrency; else an upper bound from throughput
    # (the load generator and the simulator ran on the same cores).
    measured = re.findall(r"^\| stream \| \d+ \| \d+ \| \d+(?: \(\d+\))? \| (\d+)(?: \(\d+\))? \|", text, re.M)
    cpu_ms = max(int(us) for us in measured) / 1000 if measured else int(cpus.group(1)) * 1000 / best
    return {
        "peak_kb_per_stream": float(peak.group(2)),
        "idle_mib": float(idle.group(1)),
        "cpu_ms_per_stream": cpu_ms,
    }


def test_http_concurrency_is_a_parameter_sized_from_the_bench(shipped: Deployment) -> None:
    main = shipped.files[(BICEP_DIR / "main.bicep").resolve()]
    param = main["parameters"]["functionHttpPerInstanceConcurrency"]
    limits = _decorators(param)
    assert (limits["min_value"], limits["max_value"]) == FLEX_CONCURRENCY_RANGE
    default = param["default"]
    memory_mb = main["parameters"]["functionInstanceMemoryMB"]["default"]
    bench = _bench_numbers()
    # Memory: every stream ending at once (each exchange serialized) stays within a quarter of the instance.
    assert bench["idle_mib"] + default * bench["peak_kb_per_stream"] / 1024 <= memory_mb / 4
    # CPU: the bench's 200-event streams; a real answer (~500 events over ~10 s) costs 2.5 times that over
    # 10 s. All concurrent streams together stay within a quarter of the instance's one vCPU (2048 MB),
    # leaving the rest to the Functions host's own HTTP hop and the parser on the same instance.
    vcpus = memory_mb / 2048
    assert default * bench["cpu_ms_per_stream"] * 2.5 / 10 / 1000 <= vcpus / 4
    # No more streams than the upstream pool holds connections.
    assert default <= main["parameters"]["upstream"]["default"]["maxConnections"]
    assert default >= 16, "many streams per instance: the app is async"


def test_function_app_passes_the_concurrency_to_flex_consumption(shipped: Deployment) -> None:
    sites = [r for _, _, r in shipped.resources() if str(r.get("type", "")).lower() == _SITE and not r.get("existing")]
    scale = sites[0]["config"]["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["triggers"]["http"]["perInstanceConcurrency"] == "perInstanceConcurrency"


def test_maximum_instance_count_is_checked_against_the_plan(shipped: Deployment) -> None:
    for path in (BICEP_DIR / "main.bicep", BICEP_DIR / "modules" / "function-app.bicep"):
        params = shipped.files[path.resolve()]["parameters"]
        name = "functionMaximumInstanceCount" if path.name == "main.bicep" else "maximumInstanceCount"
        limits = _decorators(params[name])
        assert (limits["min_value"], limits["max_value"]) == FLEX_INSTANCE_RANGE, path.name
        if params[name].get("default") is not None:
            assert FLEX_INSTANCE_RANGE[0] <= params[name]["default"] <= FLEX_INSTANCE_RANGE[1]


# --------------------------------------------------------------------------------------- the guide
GUIDE = ROOT / "docs" / "deploy.md"


def test_the_deploy_guide_goes_in_order_and_ends_with_the_smoke_check() -> None:
    text = GUIDE.read_text()
    headings = [h for h in re.findall(r"^#{2,3} (.+)$", text, re.M)]
    order = [
        "0. Before you start",
        "1. Provision",
        "2. Publish the function app",
        "3. Give a team its key",
        "Sizing: streams per instance and instances",
        "Rotate the function key",
        "Rotate AOAI keys",
        "Change `GATEWAY_BACKENDS` after deployment",
        "AOAI accounts elsewhere",
        "Tear down",
        "4. Check the deployment",
    ]
    assert [h for h in headings if h in order] == order
    assert headings[-1] == "4. Check the deployment"
    last_block = re.findall(r"```sh\n(.*?)```", text, re.S)[-1]
    assert "python -m devhost smoke" in last_block
    for topic in (
        "deploymentAllowedIpRanges",
        "jump host",
        "per day",
        "Role Based Access Control Administrator",
        "bicep/publish.sh",
        "gatewayFunctionKey",
        "azd up",
        "subscriptionId",
        "privatelink.openai.azure.com",
    ):
        assert topic in text, topic


def test_the_guide_names_real_parameters_and_smoke_options(shipped: Deployment) -> None:
    import argparse

    from devhost import smoke

    text = GUIDE.read_text()
    params = shipped.files[(BICEP_DIR / "main.bicep").resolve()]["parameters"]
    table = re.findall(r"^\| `([A-Za-z]+)`(?:, `([A-Za-z]+)`)? \|", text, re.M)
    named = {n for row in table for n in row if n}
    assert named and named <= set(params), named - set(params)
    outputs = shipped.files[(BICEP_DIR / "main.bicep").resolve()]["outputs"]
    assert set(re.findall(r"AZURE_[A-Z_]+", text)) - {"AZURE_RESOURCE_GROUP", "AZURE_LOCATION"} <= set(outputs)
    parser = argparse.ArgumentParser()
    smoke.arguments(parser)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    section = re.sub(r"\$\([^)]*\)", "", text.split("## 4. Check the deployment")[1])  # not az's own flags
    used = set(re.findall(r"(--[a-z][a-z-]+)", section))
    assert used <= flags, used - flags


# --------------------------------------------------------------------------------------- publishing
PUBLISH = BICEP_DIR / "publish.sh"


def _fake_func(tmp_path: Path, failures: int) -> dict[str, str]:
    """A `func` on PATH that fails its first `failures` publishes (as while RBAC propagates), then succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "func").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{tmp_path}/calls"\n'
        f'n=$(wc -l < "{tmp_path}/calls")\n'
        f'[ "$n" -gt {failures} ] || {{ echo "403 failed to upload the package" >&2; exit 1; }}\n'
    )
    (bin_dir / "func").chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_publish_retries_while_the_role_propagates(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [str(PUBLISH), "func-aoaigw-x", "6", "0"],
        env=_fake_func(tmp_path, 2),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["azure functionapp publish func-aoaigw-x --python"] * 3
    assert "retrying in 0 s" in done.stderr and "published to func-aoaigw-x (attempt 3)" in done.stdout


def test_publish_gives_up_after_its_attempts(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [str(PUBLISH), "func-aoaigw-x", "2", "0"],
        env=_fake_func(tmp_path, 5),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert len((tmp_path / "calls").read_text().splitlines()) == 2
    assert "failed 2 times" in done.stderr


def test_existing_aoai_accounts_may_live_in_another_subscription(shipped: Deployment) -> None:
    module = shipped.files[(BICEP_DIR / "main.bicep").resolve()]["modules"]["existingOpenAiRoles"]
    scope = module["config"]["config"]["scope"]["function"]["parameters"]
    assert "subscriptionId" in json.dumps(scope["subscription_id"])
    assert "resourceGroup" in json.dumps(scope["resource_group_name"])
