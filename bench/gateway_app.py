"""The gateway as deployed, for the benchmark: the proxy's HTTP function without the in-process parser.

In Azure the parser runs on its own Event Hub-triggered instances, never on the proxy's event loop.
The dev host runs both in one process for convenience, so a parser batch (a few ms per exchange)
would stall the proxy's streams and make the benchmark measure the parser too. This module serves
the same `openai_proxy` function, settings and ports as `function_app.py`, with no Event Hub
function registered: exchanges are still captured, stored in SQLite and announced on the local
channel (`python -m devhost serve --app bench.gateway_app`).
"""

import azure.functions as func

import function_app
from function_app import drain, ports, proxy, settings, shutdown  # noqa: F401  (what the dev host looks up)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for fn in function_app.app.get_functions():
    trigger = fn.get_trigger().get_dict_repr()
    if trigger.get("type") == "httpTrigger":
        app.route(route=trigger["route"], methods=trigger["methods"], auth_level=func.AuthLevel.FUNCTION)(
            fn.get_user_function()
        )
