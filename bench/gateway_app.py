"""The gateway as deployed, for the benchmark: the proxy's HTTP function without the in-process parser.

In Azure the parser runs on its own Event Hub-triggered instances, never on the proxy's event loop.
The dev host runs both in one process for convenience, so a parser batch (a few ms per exchange)
would stall the proxy's streams and make the benchmark measure the parser too. This module serves
the same `openai_proxy` function, settings and ports as `function_app.py`, with no Event Hub
function registered: exchanges are still captured, stored in SQLite and announced on the local
channel (`python -m devhost serve --app bench.gateway_app`). With BENCH_GC_STATS set, it also
times every garbage collection and writes the counts to that file at shutdown.
"""

import gc
import json
import os
import time

import azure.functions as func

import function_app
from function_app import drain, ports, proxy, settings  # noqa: F401  (what the dev host looks up)

#: Every garbage collection in this process, as (generation, seconds), when BENCH_GC_STATS names a file.
_collections: list[tuple[int, float]] = []
_started: list[float] = []


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        _collections.append((info["generation"], time.perf_counter() - _started.pop()))


if os.environ.get("BENCH_GC_STATS"):
    gc.callbacks.append(_on_gc)


async def shutdown() -> None:
    """The app's shutdown, then the collections seen (count, longest, per generation) for the bench."""
    await function_app.shutdown()
    path = os.environ.get("BENCH_GC_STATS")
    if path:
        stats = {
            str(gen): {
                "count": sum(1 for g, _ in _collections if g == gen),
                "longest_ms": round(1000 * max((s for g, s in _collections if g == gen), default=0.0), 3),
                "total_ms": round(1000 * sum(s for g, s in _collections if g == gen), 3),
            }
            for gen in (0, 1, 2)
        }
        with open(path, "w") as out:
            json.dump(stats, out)


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for fn in function_app.app.get_functions():
    trigger = fn.get_trigger().get_dict_repr()
    if trigger.get("type") == "httpTrigger":
        app.route(route=trigger["route"], methods=trigger["methods"], auth_level=func.AuthLevel.FUNCTION)(
            fn.get_user_function()
        )
