"""What the Functions host indexes from function_app.py: the proxy's HTTP trigger."""

import inspect

from azurefunctions.extensions.http.fastapi import Request, Response

import function_app
from devhost.host import indexed


def _http_functions():
    return [f for f in indexed(function_app.app) if f.get_trigger().get_dict_repr()["type"] == "httpTrigger"]


def test_one_http_trigger_with_route_methods_and_function_auth():
    (fn,) = _http_functions()
    trigger = fn.get_trigger().get_dict_repr()
    assert trigger["route"] == "openai/{*path}"
    assert sorted(str(getattr(m, "value", m)) for m in trigger["methods"]) == ["DELETE", "GET", "POST"]
    assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])) == "function"
    assert trigger["direction"].name == "IN"


def test_http_trigger_uses_the_streaming_extension_types():
    (fn,) = _http_functions()
    user = fn.get_user_function()
    assert inspect.iscoroutinefunction(user)
    # Real objects, not strings: the worker reads the annotations without evaluating them.
    hints = inspect.get_annotations(user)
    assert hints["req"] is Request and hints["return"] is Response
    # The worker switches the app to HTTP streams when these annotations are the extension's types.
    from azurefunctions.extensions.base import RequestTrackerMeta, ResponseTrackerMeta

    assert RequestTrackerMeta.check_type(hints["req"]) and ResponseTrackerMeta.check_type(hints["return"])
