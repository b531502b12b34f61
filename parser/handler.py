"""One batch of "exchange stored" events in, one usage record per exchange out, behind the ports.

Event Hubs delivers at least once and advances its checkpoint even when the function raises, so
this handler must neither lose nor duplicate: records are keyed by request id (`RecordStore.add`
is idempotent and only a new record is emitted), transient store/sink failures are retried with a
short bounded backoff, and what still cannot be handled goes to the dead-letter store with its
reason. One bad event never stops the others. Only when an event could not even be dead-lettered
does the batch raise `BatchIncomplete`, so the function's retry policy replays the batch (the
events already recorded are then skipped as duplicates).

Events of a batch are handled concurrently (at most `concurrency` at once, PARSER_MAX_CONCURRENCY),
so that waiting on the stores or on Content Safety for one exchange does not hold up the others;
repeats of one request id within a batch are handled one after the other. The result lists keep
the order of the events.

One module because the guarantees (one record per request, a dead letter once with its real
reason, retries only for outages) are made by the order of these steps; normalization, pricing
and safety live in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import orjson

from parser import batches
from parser.batches import BatchFiles
from parser.enrich import SKIPPED, Enricher
from shared.errors import BatchIncomplete, IncompleteExchange, ParseBudgetExceeded, PoisonExchange
from shared.exchange import Exchange, salvage
from shared.normalize import record_schema
from shared.normalize.budget import within
from shared.normalize.record import UsageRecord
from shared.normalize.usage import base_record, normalize
from shared.ports import Ports
from shared.safety.client import ContentSafety
from shared.settings import Settings
from shared.telemetry import setup as telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Delays between tries: about 1.5 s in all, short enough to keep a partition moving.
DEFAULT_DELAYS = (0.05, 0.2, 0.5, 0.75)
#: Events of one batch in flight at once (PARSER_MAX_CONCURRENCY).
DEFAULT_CONCURRENCY = Settings().parser_max_concurrency
_MAX_ID_CHARS = 200


class _Missing(LookupError):
    """The exchange is not (yet) in the store."""


@dataclass(slots=True)
class BatchResult:
    recorded: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    deadlettered: list[str] = field(default_factory=list)
    #: Events that could not even be dead-lettered (the batch raises when this is not empty).
    failed: list[str] = field(default_factory=list)

    def extend(self, other: BatchResult) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.deadlettered += other.deadlettered
        self.failed += other.failed


def request_id_of(event: str | bytes) -> str:
    """The request id an event carries: the id itself, or a JSON object with `request_id`."""
    text = event.decode("utf-8") if isinstance(event, (bytes, bytearray)) else event
    if not isinstance(text, str):
        raise ValueError(f"event body is {type(text).__name__}, not text")
    text = text.strip()
    if text.startswith("{"):
        value = orjson.loads(text).get("request_id")
        text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > _MAX_ID_CHARS or any(c in text for c in "\r\n\0/\\?#"):
        raise ValueError(f"not a request id: {text[:80]!r}")
    return text


async def handle_batch(
    events: Sequence[str | bytes],
    ports: Ports,
    *,
    enricher: Enricher | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    delays: Sequence[float] = DEFAULT_DELAYS,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    raise_incomplete: bool = True,
    budget: ParserBudget | None = None,
    batch_files: BatchFiles | None = None,
) -> BatchResult:
    """Record every event of a batch; see the module docstring for the guarantees.

    `enricher` prices and checks each record (`Enricher.from_settings(settings)` in the app); the
    default prices with the shipped book, maps no deployments and leaves content safety off.
    Content Safety is called through `ports.safety` when it is set and the enricher enables it.
    """
    enricher = enricher or Enricher()
    budget = budget or ParserBudget()
    limit = asyncio.Semaphore(max(1, concurrency))
    keys = [_key(event) for event in events]
    # Only a request id that occurs more than once in the batch needs its events in turn.
    same_id = {key: asyncio.Lock() for key, count in Counter(keys).items() if count > 1}

    async def one(event: str | bytes, key: str, result: BatchResult) -> None:
        async with same_id.get(key) or contextlib.nullcontext(), limit:
            try:
                await _handle_one(event, ports, enricher, result, delays, sleep, budget, batch_files)
            except Exception as exc:  # the per-event boundary: never let one event sink the batch
                log.exception("parser: unexpected failure for one event")
                await _deadletter(ports, result, key, f"unexpected error: {type(exc).__name__}: {exc}", event)

    per_event = [BatchResult() for _ in events]
    await asyncio.gather(
        *(one(event, key, result) for event, key, result in zip(events, keys, per_event, strict=False))
    )
    result = BatchResult()
    for item in per_event:
        result.extend(item)
    if result.failed and raise_incomplete:
        raise BatchIncomplete(f"{len(result.failed)} event(s) neither recorded nor dead-lettered: {result.failed[:5]}")
    return result


async def _handle_one(
    event: str | bytes,
    ports: Ports,
    enricher: Enricher,
    result: BatchResult,
    delays,
    sleep,
    budget: ParserBudget,
    batch_files: BatchFiles | None = None,
) -> None:
    try:
        request_id = request_id_of(event)
    except (ValueError, UnicodeDecodeError, orjson.JSONDecodeError, AttributeError) as exc:
        await _deadletter(ports, result, _key(event), f"undecodable event: {exc}", event)
        return

    #: Set when the exchange is poison or over budget: it still gets a record (when its request is
    #: readable) and is dead-lettered once, at once, with this reason.
    poison: str | None = None
    try:
        carried = _carried_exchange(event, request_id)
        exchange = carried if carried is not None else await _retry(lambda: _load(ports, request_id), delays, sleep)
    except _Missing:
        await _deadletter(ports, result, request_id, "exchange not found after retries", event)
        return
    except IncompleteExchange as exc:
        await _deadletter(ports, result, request_id, f"exchange incomplete after retries: {exc}", event)
        return
    except PoisonExchange as exc:
        poison = f"poison exchange: {exc}"
        salvaged = salvage(exc.data, request_id)
        if salvaged is None:
            await _deadletter(ports, result, request_id, poison, event)
            return
        exchange = salvaged
    except Exception as exc:
        await _deadletter(ports, result, request_id, f"exchange store unavailable: {type(exc).__name__}: {exc}", event)
        return

    await _record(
        exchange, ports, enricher, result, delays, sleep, budget, poison=poison, event=event, batch_files=batch_files
    )


async def record_in_place(
    exchange: Exchange,
    ports: Ports,
    *,
    enricher: Enricher | None = None,
    delays: Sequence[float] = DEFAULT_DELAYS,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> BatchResult:
    """Record an exchange that is never stored (capture level `none`): the same record, retries,
    dead letters and telemetry as for an announced one, without the exchange store or the channel."""
    result = BatchResult()
    try:
        await _record(exchange, ports, enricher or Enricher(), result, delays, sleep, ParserBudget())
    except Exception as exc:  # the same boundary as a batch's: never lose the record silently
        log.exception("parser: unexpected failure recording %s in place", exchange.request_id)
        await _deadletter(
            ports, result, exchange.request_id, f"unexpected error: {type(exc).__name__}: {exc}", exchange.to_json()
        )
    return result


async def _record(
    exchange: Exchange,
    ports: Ports,
    enricher: Enricher,
    result: BatchResult,
    delays,
    sleep,
    budget: ParserBudget,
    *,
    poison: str | None = None,
    event: str | bytes | None = None,
    batch_files: BatchFiles | None = None,
) -> None:
    """Record one exchange. `poison` (set when the exchange is poison or over the parser's budget)
    still gives a record (with `parse_error`), and dead-letters `event` once, with that reason."""
    request_id = exchange.request_id
    if enricher.analyses(ports.safety) and await _already_recorded(ports, request_id):
        # A redelivered event: do not pay Content Safety again for a record that exists.
        result.duplicates.append(request_id)
        return
    try:
        record, details = await make_record(exchange, enricher, ports.safety, budget=budget)
    except ParseBudgetExceeded as exc:
        poison = poison or f"over the parser's budget: {exc}"
        record, details = valid_record(base_record(exchange), exchange), {}
    if poison is not None:
        record["parse_error"] = poison[:1000]
    if ports.budgets is not None:
        # Before the record is stored, so that it carries the settlement; a redelivered event is
        # charged once (the ledger remembers the request ids it settled). Never raises.
        await ports.budgets.settle(record, exchange.budget)

    try:
        added = await _retry(lambda: ports.records.add(record, details), delays, sleep)
    except Exception as exc:
        what = "record not writable" if _is_poison(exc) else "record store unavailable"
        await _deadletter(ports, result, request_id, f"{what}: {type(exc).__name__}: {exc}", _json(record))
        return
    await _batch_accounting(record, details, exchange, ports, enricher, batch_files, delays, sleep)
    if not added:
        result.duplicates.append(request_id)
        return
    telemetry.observe(exchange, record, details)
    try:
        await _retry(lambda: ports.sink.emit(record), delays, sleep)
    except Exception as exc:
        # The record is stored; only its telemetry copy is missing. Keep it for a re-emit.
        await _deadletter(
            ports, result, request_id, f"usage sink unavailable: {type(exc).__name__}: {exc}", _json(record)
        )
        return
    result.recorded.append(request_id)
    if poison is not None:
        # Once: a redelivery finds the record and stops above, as a duplicate.
        await _deadletter(ports, result, request_id, poison, event if event is not None else exchange.to_json())


@dataclass(frozen=True, slots=True)
class ParserBudget:
    """What one exchange may cost the parser (PARSER_EXCHANGE_BUDGET_SECONDS, PARSER_MAX_EXCHANGE_BYTES)."""

    seconds: float = 30.0
    max_bytes: int = 64_000_000
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_settings(cls, settings: Settings) -> ParserBudget:
        return cls(settings.parser_exchange_budget_seconds, settings.parser_max_exchange_bytes)

    def admit(self, exchange: Exchange) -> None:
        """Raise ParseBudgetExceeded when the exchange holds more than the parser will consolidate."""
        size = exchange_bytes(exchange)
        if size > self.max_bytes:
            raise ParseBudgetExceeded(f"the exchange holds {size} bytes, over the parser's limit of {self.max_bytes}")


#: Exchanges larger than this are normalized on a worker thread.
_THREAD_BYTES = 1_000_000


def _normalize_within(exchange: Exchange, budget: ParserBudget) -> tuple[UsageRecord, dict[str, Any]]:
    with within(budget.seconds, budget.clock):
        return normalize(exchange)


def exchange_bytes(exchange: Exchange) -> int:
    """Bytes the parser would work through: the request body, the response body or event stream."""
    response = exchange.response
    size = _int(exchange.request.body_bytes)
    if response is not None:
        size += len(response.sse) if isinstance(response.sse, str) else _int(response.body_bytes)
    return size


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


async def _batch_accounting(
    record: UsageRecord,
    details: dict[str, Any],
    exchange: Exchange,
    ports: Ports,
    enricher: Enricher,
    files: BatchFiles | None,
    delays: Sequence[float],
    sleep: Callable[[float], Awaitable[Any]],
) -> None:
    """A batch's creator remembered; a completed batch's lines recorded (parser/batches.py).

    Never fails the event: what cannot be done now is done when the batch is polled again."""
    try:
        await batches.remember_owner(record, ports)
        await batches.remember_output_files(record, details, ports, batches.OWNER_TTL_SECONDS)
        for line in await batches.settle(record, details, exchange, ports, files):
            item = valid_record(cast(UsageRecord, line), exchange)
            enricher.price(item, {})
            item["safety"] = dict(SKIPPED)
            if await _retry(functools.partial(ports.records.add, item, {}), delays, sleep):
                await _retry(functools.partial(ports.sink.emit, item), delays, sleep)
    except Exception:
        log.exception("parser: batch accounting failed for %s; the next poll retries", record.get("request_id"))


async def make_record(
    exchange: Exchange, enricher: Enricher, safety: ContentSafety | None = None, *, budget: ParserBudget | None = None
) -> tuple[UsageRecord, dict[str, Any]]:
    """normalize + validate + cost and content safety: the record as the parser stores and emits it.

    The normalized record is validated (and repaired) first, so cost is computed from valid fields;
    the enrichment's own fields are valid by construction (`Enricher.enrich` checks the safety
    object, which carries data from the exchange), which keeps the schema pass to one per record.
    """
    if budget is None:
        record, details = normalize(exchange)
    else:
        budget.admit(exchange)
        if exchange_bytes(exchange) > _THREAD_BYTES:
            # Seconds of CPU: off the event loop, which the proxy shares in the same worker.
            record, details = await asyncio.to_thread(_normalize_within, exchange, budget)
        else:
            record, details = _normalize_within(exchange, budget)
    record = valid_record(record, exchange)
    await enricher.enrich(record, details, exchange, safety)
    return record, details


def build_record(exchange: Exchange) -> tuple[UsageRecord, dict[str, Any]]:
    """normalize + validate, without cost or content safety (see `make_record` for the full record)."""
    record, details = normalize(exchange)
    return valid_record(record, exchange), details


def valid_record(record: UsageRecord, exchange: Exchange) -> UsageRecord:
    """`record` if the schema accepts it; else only the offending top-level fields are reset (or
    dropped) and `parse_error` says why, so a record is never lost to a bad field."""
    problems = record_schema.errors(record)
    if not problems:
        return record
    # Reset only the offending top-level fields to their neutral values and keep the rest.
    base: dict[str, Any] = dict(base_record(exchange))
    repaired: dict[str, Any] = {
        key: value
        for key, value in record.items()
        if key in base or key in record_schema.validator().schema["properties"]
    }
    for error in record_schema.validator().iter_errors(record):
        key = error.absolute_path[0] if error.absolute_path else None
        if isinstance(key, str):
            if key in base:
                repaired[key] = base[key]
            else:
                repaired.pop(key, None)
    reason = ("record failed schema validation: " + "; ".join(problems))[:1000]
    repaired["parse_error"] = reason
    if record_schema.errors(repaired):
        repaired = {**base, "parse_error": reason}
    record_schema.validate(repaired)  # base_record is valid for any well-formed exchange
    return cast(UsageRecord, repaired)


async def _already_recorded(ports: Ports, request_id: str) -> bool:
    try:
        return await ports.records.get(request_id) is not None
    except Exception as exc:  # unknown: go on; `add` is idempotent anyway
        log.warning("parser: could not check for %s before analysis: %s: %s", request_id, type(exc).__name__, exc)
        return False


async def _load(ports: Ports, request_id: str) -> Exchange:
    exchange = await ports.exchanges.load(request_id)
    if exchange is None:
        raise _Missing(request_id)
    return exchange


def _is_poison(exc: BaseException) -> bool:
    """A failure no retry can mend: the data is wrong, not the store (items of an exchange that
    are still landing are the one ValueError worth waiting for)."""
    if isinstance(exc, IncompleteExchange):
        return False
    return isinstance(exc, (PoisonExchange, TypeError, ValueError, KeyError, AttributeError))


async def _retry(op: Callable[[], Awaitable[T]], delays: Sequence[float], sleep) -> T:
    """`op`, tried again after each delay while it fails for a transient reason (store, network)."""
    for delay in delays:
        try:
            return await op()
        except Exception as exc:
            if _is_poison(exc):
                raise
            log.warning("parser: retrying after %s: %s", type(exc).__name__, exc)
            await sleep(delay)
    return await op()


async def _deadletter(ports: Ports, result: BatchResult, key: str, reason: str, payload: Any) -> None:
    try:
        await ports.deadletters.put(key, reason, payload if isinstance(payload, str) else _text(payload))
        result.deadlettered.append(key)
        log.warning("parser: dead-lettered %s: %s", key, reason)
    except Exception:
        log.exception("parser: could not dead-letter %s (%s)", key, reason)
        result.failed.append(key)


def _carried_exchange(event: str | bytes, request_id: str) -> Exchange | None:
    """The exchange an event carries (the proxy puts it there when the store is down), else None.
    One that cannot be read is poison like a stored one."""
    raw = event.encode("utf-8") if isinstance(event, str) else bytes(event)
    if not raw.lstrip().startswith(b"{") or b'"exchange"' not in raw:
        return None
    data = orjson.loads(raw).get("exchange")
    if data is None:
        return None
    try:
        return Exchange.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"the exchange on the event is not readable: {type(exc).__name__}: {exc}"
        raise PoisonExchange(reason, data) from exc


def _key(event: Any) -> str:
    try:
        return request_id_of(event)
    except Exception:
        return "(unreadable event)"


def _text(payload: Any) -> str:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload).decode("utf-8", "backslashreplace")
    return str(payload)


def _json(record: Mapping[str, Any]) -> str:
    return orjson.dumps(record).decode()
