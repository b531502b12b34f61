"""Batch jobs charged back per line: who created a batch, and its lines once it completed.

When the parser records a batch's creation it remembers the creator (by batch id, in the object
store the proxy also uses for Responses API affinity). When a record shows the batch completed,
the output file is read from the account that ran it (`BatchFiles`, the proxy's upstream client)
and every line becomes a usage record priced at the batch rate, plus one record for the batch.
The batch record is written last and marks the batch settled: polling it again reads nothing,
and a failure half-way is finished by the next poll (line records are keyed, never duplicated).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from shared.exchange import Exchange
from shared.normalize.batch_lines import OWNER_FIELDS, batch_request_id, completed_batch, line_records
from shared.ports import Ports

log = logging.getLogger(__name__)

#: How long the creator of a batch is remembered: the 24 h window plus the 30 days output files are kept.
OWNER_TTL_SECONDS = 31 * 24 * 3600


class BatchFiles(Protocol):
    """Reads a file's bytes from the backend account that holds it (None: not readable now)."""

    async def content(self, backend: str, file_id: str, api_version: str | None) -> bytes | None: ...


def owner_key(batch_id: str) -> str:
    return f"batch-owner:{batch_id}"


async def remember_output_files(record: Mapping[str, Any], details: Mapping[str, Any], ports: Ports, ttl: int) -> None:
    """A batch's output and error files are created by the service on the batch's account: pin them
    there, so that their download through the gateway reaches that account."""
    body = details.get("response")
    backend = record.get("backend")
    if record.get("api") != "batches" or not isinstance(body, Mapping) or not isinstance(backend, str):
        return
    for key in ("output_file_id", "error_file_id"):
        file_id = body.get(key)
        if isinstance(file_id, str) and file_id:
            await ports.affinity.remember(file_id, backend, ttl)


async def remember_owner(record: Mapping[str, Any], ports: Ports) -> None:
    """A batch created through the gateway: remember who created it, for its lines' attribution."""
    batch_id = record.get("batch_id")
    if record.get("api") != "batches" or record.get("operation") != "create" or not isinstance(batch_id, str):
        return
    if not 200 <= int(record.get("status_code") or 0) < 300 or record.get("custom_id") is not None:
        return
    owner = {k: record.get(k) for k in OWNER_FIELDS}
    await ports.affinity.remember(owner_key(batch_id), orjson.dumps(owner).decode(), OWNER_TTL_SECONDS)


async def settle(
    record: Mapping[str, Any],
    details: Mapping[str, Any],
    exchange: Exchange,
    ports: Ports,
    files: BatchFiles | None,
) -> list[dict[str, Any]]:
    """The unpriced line records and batch record (last) for a record that saw a batch complete;
    [] when it did not, when the batch is settled already, or when its output cannot be read yet."""
    body = details.get("response")
    if files is None or not isinstance(body, Mapping) or not completed_batch(record, body):
        return []
    batch_id = str(body["id"])
    if await ports.records.get(batch_request_id(batch_id)) is not None:
        return []
    backend = exchange.backend or (exchange.attempts[-1].backend if exchange.attempts else None)
    if not backend:
        log.warning("parser: batch %s completed but no backend is known to read its output from", batch_id)
        return []
    content = await files.content(backend, str(body["output_file_id"]), record.get("api_version"))
    if content is None:
        log.warning("parser: output file of batch %s not readable on %s; the next poll tries again", batch_id, backend)
        return []
    stored = await ports.affinity.lookup(owner_key(batch_id))
    owner = orjson.loads(stored) if stored else None
    lines, summary, problems = line_records(record, body, content, owner if isinstance(owner, dict) else None)
    if problems:
        summary["estimation_notes"] = problems[:20]
    return [*lines, summary]
