"""Wiring only: the Function App, its HTTP trigger (the streaming proxy) and Event Hub trigger (the parser)."""

import functools

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


# --- parser ------------------------------------------------------------------------------------


@functools.cache
def _parser_settings():
    from shared.settings import Settings

    return Settings.from_env()


@functools.cache
def _parser_ports():
    # Imported here so that indexing the app never needs the storage adapters or their settings.
    from shared.wiring import build_ports

    return build_ports(_parser_settings())


@functools.cache
def _parser_enricher():
    """Price book, DEPLOYMENT_MODELS and content-safety thresholds, read once per worker."""
    from parser.enrich import Enricher

    return Enricher.from_settings(_parser_settings())


@app.function_name("parser")
@app.retry(strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:05", maximum_interval="00:05:00")
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%EVENT_HUB_NAME%",
    connection="EventHubConnection",
    consumer_group="%EVENT_HUB_CONSUMER_GROUP%",
    cardinality=func.Cardinality.MANY,
)
async def parse_exchanges(events: list[func.EventHubEvent]) -> None:
    """Each event names a stored exchange; see parser/handler.py for retries and dead letters."""
    from parser.handler import handle_batch

    await handle_batch(
        [event.get_body() for event in events],
        _parser_ports(),
        enricher=_parser_enricher(),
        concurrency=_parser_settings().parser_max_concurrency,
    )
