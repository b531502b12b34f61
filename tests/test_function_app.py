"""What the Functions host indexes from function_app.py: the proxy's HTTP trigger."""

import inspect

from azurefunctions.extensions.http.fastapi import Request, Response

import function_app
from devhost.host import indexed


def _http_functions():
    return [f for f in indexed(function_app.app) if f.get_trigger().get_dict_repr()["type"] == "httpTrigger"]


def _trigger(route: str) -> dict:
    (fn,) = [f for f in _http_functions() if f.get_trigger().get_dict_repr()["route"] == route]
    return fn.get_trigger().get_dict_repr()


def _methods(trigger: dict) -> list[str]:
    return sorted(str(getattr(m, "value", m)) for m in trigger["methods"])


def _auth(trigger: dict) -> str:
    return str(getattr(trigger["authLevel"], "value", trigger["authLevel"]))


def test_http_triggers_proxy_and_health_with_function_auth():
    assert sorted(f.get_trigger().get_dict_repr()["route"] for f in _http_functions()) == ["health", "openai/{*path}"]
    proxy = _trigger("openai/{*path}")
    assert _methods(proxy) == ["DELETE", "GET", "POST"] and _auth(proxy) == "function"
    assert proxy["direction"].name == "IN"
    health = _trigger("health")
    # The health answer names accounts and deployments: not for anonymous callers.
    assert _methods(health) == ["GET"] and _auth(health) == "function"


def test_every_http_trigger_uses_the_streaming_extension_types():
    # The worker switches the whole app to HTTP streams; then every HTTP function must use these types.
    from azurefunctions.extensions.base import RequestTrackerMeta, ResponseTrackerMeta

    functions = _http_functions()
    assert len(functions) == 2
    for fn in functions:
        user = fn.get_user_function()
        assert inspect.iscoroutinefunction(user)
        # Real objects, not strings: the worker reads the annotations without evaluating them.
        hints = inspect.get_annotations(user)
        assert hints["req"] is Request and hints["return"] is Response
        assert RequestTrackerMeta.check_type(hints["req"]) and ResponseTrackerMeta.check_type(hints["return"])


def test_bad_backend_configuration_stops_the_app_when_it_loads():
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = (
        '[{"name": "east", "endpoint": "https://east.openai.azure.com", "deployments": ["*"]},'
        ' {"name": "west", "endpoint": "https://west.openai.azure.com", "deployments": ["*"], "weight": 0}]'
    )
    root = Path(function_app.__file__).parent
    env = {**os.environ, "GATEWAY_BACKENDS": bad}
    done = subprocess.run(
        [sys.executable, "-c", "import function_app"], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "GATEWAY_BACKENDS[1] ('west'): 'weight' must be >= 1, got 0" in done.stderr
    env["GATEWAY_BACKENDS"] = bad.replace('"weight": 0', '"weight": 2')
    assert subprocess.run([sys.executable, "-c", "import function_app"], cwd=root, env=env, timeout=60).returncode == 0
