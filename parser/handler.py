"""One batch of "exchange stored" events in, one usage record per exchange out, behind the ports.

Event Hubs delivers at least once and advances its checkpoint even when the function raises, so
this handler must neither lose nor duplicate: records are keyed by request id (`RecordStore.add`
is idempotent and only a new record is emitted), transient store/sink failures are retried with a
short bounded backoff, and what still cannot be handled goes to the dead-letter store with its
reason. One bad event never stops the others. Only when an event could not even be dead-lettered
does the batch raise `BatchIncomplete`, so the function's retry policy replays the batch (the
events already recorded are then skipped as duplicates).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from shared import record_schema
from shared.exchange import Exchange, IncompleteExchange
from shared.ports import Ports
from shared.usage import base_record, normalize

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Delays between tries: about 1.5 s in all, short enough to keep a partition moving.
DEFAULT_DELAYS = (0.05, 0.2, 0.5, 0.75)
_MAX_ID_CHARS = 200


class BatchIncomplete(RuntimeError):
    """Some events were neither recorded nor dead-lettered; the batch must be delivered again."""


class _Missing(LookupError):
    """The exchange is not (yet) in the store."""


@dataclass(slots=True)
class BatchResult:
    recorded: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    deadlettered: list[str] = field(default_factory=list)
    #: Events that could not even be dead-lettered (the batch raises when this is not empty).
    failed: list[str] = field(default_factory=list)


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
    delays: Sequence[float] = DEFAULT_DELAYS,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    raise_incomplete: bool = True,
) -> BatchResult:
    """Record every event of a batch; see the module docstring for the guarantees."""
    result = BatchResult()
    for event in events:
        try:
            await _handle_one(event, ports, result, delays, sleep)
        except Exception as exc:  # the per-event boundary: never let one event sink the batch
            log.exception("parser: unexpected failure for one event")
            await _deadletter(ports, result, _key(event), f"unexpected error: {type(exc).__name__}: {exc}", event)
    if result.failed and raise_incomplete:
        raise BatchIncomplete(f"{len(result.failed)} event(s) neither recorded nor dead-lettered: {result.failed[:5]}")
    return result


async def _handle_one(event: str | bytes, ports: Ports, result: BatchResult, delays, sleep) -> None:
    try:
        request_id = request_id_of(event)
    except (ValueError, UnicodeDecodeError, orjson.JSONDecodeError, AttributeError) as exc:
        await _deadletter(ports, result, _key(event), f"undecodable event: {exc}", event)
        return

    try:
        exchange = await _retry(lambda: _load(ports, request_id), delays, sleep)
    except _Missing:
        await _deadletter(ports, result, request_id, "exchange not found after retries", event)
        return
    except IncompleteExchange as exc:
        await _deadletter(ports, result, request_id, f"exchange incomplete after retries: {exc}", event)
        return
    except Exception as exc:
        await _deadletter(ports, result, request_id, f"exchange store unavailable: {type(exc).__name__}: {exc}", event)
        return

    record, details = build_record(exchange)

    try:
        added = await _retry(lambda: ports.records.add(record, details), delays, sleep)
    except Exception as exc:
        await _deadletter(ports, result, request_id, f"record store unavailable: {type(exc).__name__}: {exc}", _json(record))
        return
    if not added:
        result.duplicates.append(request_id)
        return
    try:
        await _retry(lambda: ports.sink.emit(record), delays, sleep)
    except Exception as exc:
        # The record is stored; only its telemetry copy is missing. Keep it for a re-emit.
        await _deadletter(ports, result, request_id, f"usage sink unavailable: {type(exc).__name__}: {exc}", _json(record))
        return
    result.recorded.append(request_id)


def build_record(exchange: Exchange) -> tuple[dict[str, Any], dict[str, Any]]:
    """normalize + validate; a record the schema rejects is replaced by a minimal valid one."""
    record, details = normalize(exchange)
    problems = record_schema.errors(record)
    if not problems:
        return record, details
    # Reset only the offending top-level fields to their neutral values and keep the rest.
    base = base_record(exchange)
    repaired = {key: value for key, value in record.items() if key in base or key in record_schema.validator().schema["properties"]}
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
    return repaired, details


async def _load(ports: Ports, request_id: str) -> Exchange:
    exchange = await ports.exchanges.load(request_id)
    if exchange is None:
        raise _Missing(request_id)
    return exchange


async def _retry(op: Callable[[], Awaitable[T]], delays: Sequence[float], sleep) -> T:
    for delay in delays:
        try:
            return await op()
        except Exception as exc:
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


def _key(event: Any) -> str:
    try:
        return request_id_of(event)
    except Exception:
        return "(unreadable event)"


def _text(payload: Any) -> str:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload).decode("utf-8", "backslashreplace")
    return str(payload)


def _json(record: dict[str, Any]) -> str:
    return orjson.dumps(record).decode()
