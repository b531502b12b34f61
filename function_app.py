"""Wiring only: the Function App, its HTTP trigger (the streaming proxy) and Event Hub trigger (the parser).

Ports and the proxy are built once, lazily, inside the worker's event loop on first use.
`ports()`, `proxy()`, `drain()` and `shutdown()` are also what the dev host (`python -m devhost`) uses.
"""

import functools
import typing

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from proxy import gc_policy
from proxy.credentials import quiet_azure_sdk_logs
from proxy.handler import Proxy, build_proxy
from proxy.routing.backends import check_backends
from proxy.runtime_leak import release_http_invocations
from proxy.streams.broken import quiet_server_log
from shared.audience import AudienceTable
from shared.budgets.config import parse_budget_book
from shared.settings import Settings
from shared.wiring import WiredPorts, build_ports

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# A bad setting, a placeholder endpoint or an api_key backend whose key setting is not set stops the
# app when the host loads it (one line naming it), instead of failing every request later. Pure
# parsing: nothing is connected here. Likewise AUDIENCE_POLICIES (and a cache an audience's capture
# level forbids), BUDGETS and BUDGET_TEAMS: a budget that cannot be read must not silently not apply.
_startup_settings = Settings.from_env()
check_backends(_startup_settings)
AudienceTable.from_settings(_startup_settings.audience_policies_json, _startup_settings.extra.get("CAPTURE_LEVELS"))
parse_budget_book(_startup_settings.budgets_json, _startup_settings.budget_teams_json)
del _startup_settings

# A stream AOAI breaks mid-way is cut for the client by raising out of the body; the proxy logs it,
# the server (uvicorn) need not add a traceback per cut stream (proxy/streams/broken.py).
quiet_server_log()
# Azure SDK calls and credential probes log their headers at INFO; one line names the credential used.
quiet_azure_sdk_logs()

# azure-functions-runtime 1.3.0 keeps ~2 KB per HTTP invocation forever (proxy/runtime_leak.py).
release_http_invocations()


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def ports() -> WiredPorts:
    return build_ports(settings())


@functools.cache
def proxy() -> Proxy:
    return build_proxy(settings(), ports)


async def drain() -> None:
    """Wait until every captured exchange is stored and announced."""
    if proxy.cache_info().currsize:
        await proxy().capture.drain()


async def shutdown() -> None:
    """Drain captures, close upstream connections, then the ports (the dev host calls it on exit)."""
    if proxy.cache_info().currsize:
        await proxy().aclose()
        proxy.cache_clear()
    if ports.cache_info().currsize:
        await ports().close()
        ports.cache_clear()
    _parser_enricher.cache_clear()  # it holds settings too: a host started again reads them afresh
    settings.cache_clear()


@functools.cache
def _parser_enricher():
    """Price book, DEPLOYMENT_MODELS and content-safety thresholds for the parser, read once per worker."""
    from parser.enrich import Enricher

    return Enricher.from_settings(settings())


# --- proxy -------------------------------------------------------------------------------------


@app.route(
    route="openai/{*path}",
    methods=[func.HttpMethod.GET, func.HttpMethod.POST, func.HttpMethod.DELETE],
    auth_level=func.AuthLevel.FUNCTION,
)
async def openai_proxy(req: Request) -> Response:
    """Every AOAI data-plane call: streamed through to the backend, captured once."""
    return await proxy().handle(req)


# --- health ------------------------------------------------------------------------------------


@app.route(route="health", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.FUNCTION)
async def health(req: Request) -> Response:
    """This instance's routing state per backend (`BackendPool.snapshot`: no keys, no query strings).

    Function-level auth: the answer names accounts, endpoints and deployments, which is topology
    an anonymous caller should not learn. APIM does not publish this route (docs/routing.md).
    """
    body = orjson.dumps(proxy().pool.snapshot())
    return Response(content=body, media_type="application/json", headers={"cache-control": "no-store"})


# --- parser ------------------------------------------------------------------------------------


@app.function_name("parser")
@app.retry(
    strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:05", maximum_interval="00:05:00"
)
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%EVENT_HUB_NAME%",
    connection="EventHubConnection",
    consumer_group="%EVENT_HUB_CONSUMER_GROUP%",
    cardinality=func.Cardinality.MANY,
)
# typing.List, not list[...]: the Functions worker rejects PEP 585 generics as binding annotations.
async def parse_exchanges(events: typing.List[func.EventHubEvent]) -> None:  # noqa: UP006
    """Each event names a stored exchange; see parser/handler.py for retries and dead letters."""
    from parser.handler import ParserBudget, handle_batch

    await handle_batch(
        [event.get_body() for event in events],
        ports(),
        enricher=_parser_enricher(),
        concurrency=settings().parser_max_concurrency,
        budget=ParserBudget.from_settings(settings()),
        batch_files=_batch_files(),
    )


# --- reconciler --------------------------------------------------------------------------------

#: Every 5 minutes (NCRONTAB, six fields). The dev host runs it on the same schedule.
RECONCILE_SCHEDULE = "0 */5 * * * *"


@app.function_name("reconcile")
@app.timer_trigger(arg_name="timer", schedule=RECONCILE_SCHEDULE, run_on_startup=False, use_monitor=True)
async def reconcile_exchanges(timer: func.TimerRequest) -> None:
    """Spilled exchanges are stored again (also on an instance that serves no request), then stored
    exchanges with neither record nor dead letter are announced again (parser/reconcile.py)."""
    from parser.reconcile import reconcile

    await proxy().capture.replay_outbox()
    await reconcile(
        ports(),
        after_seconds=settings().reconcile_after_seconds,
        lookback_seconds=settings().reconcile_lookback_seconds,
    )


def _batch_files():
    """Batch output files are read with the proxy's upstream client and credentials (proxy/files.py)."""
    from proxy.files import UpstreamFiles

    built = proxy()
    return UpstreamFiles(built.pool, built.upstream, built.credentials)


# Last: the app is imported, its long-lived heap built; keep it out of every collection, before
# any request rather than during the first one (proxy/gc_policy.py).
gc_policy.freeze_loaded_heap()
