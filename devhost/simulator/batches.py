"""Files and Batch API: uploads (purpose batch), the batch lifecycle and its output file.

A batch moves one step each time it is retrieved: validating -> in_progress -> finalizing ->
completed, so a client polling it (as the SDK examples do) sees every state in order without
timers. On completion every input line is answered as the chat or embeddings endpoint would
answer it (same builders, same token counts), and the answers go to an output file whose lines
carry `custom_id`, `response.status_code`, `response.body` (with `usage`) and `error`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import audio, chat, embeddings
from .models import encoding_for, model_for
from .wire import BadRequest, Context, Plan

_STEPS = ("validating", "in_progress", "finalizing", "completed")
_ENDPOINTS: dict[str, Callable[[dict[str, Any], Context], Plan]] = {
    "/chat/completions": lambda body, ctx: chat.build(body, ctx, stream=False),
    "/v1/chat/completions": lambda body, ctx: chat.build(body, ctx, stream=False),
    "/embeddings": lambda body, ctx: embeddings.build(body, ctx, stream=False),
    "/v1/embeddings": lambda body, ctx: embeddings.build(body, ctx, stream=False),
}


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(slots=True)
class StoredBatch:
    body: dict[str, Any]
    step: int = 0


@dataclass(slots=True)
class FileStore:
    """One simulator's files and batches, by id."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    batches: dict[str, StoredBatch] = field(default_factory=dict)


class NotFound(Exception):
    """A file or batch id the simulator does not hold (answered 404)."""


def handle(
    method: str, parts: list[str], body: bytes, content_type: str, store: FileStore, context: Callable[[str], Context]
) -> Plan:
    """`parts`: the path after `/openai[/v1]/`, split on `/` (`["files", "file-1", "content"]`)."""
    if parts[0] == "files":
        return _files(method, parts[1:], body, content_type, store, context)
    return _batches(method, parts[1:], body, store, context)


def _files(
    method: str, rest: list[str], body: bytes, content_type: str, store: FileStore, context: Callable[[str], Context]
) -> Plan:
    if not rest:
        if method == "GET":
            data = [f.object() for f in store.files.values()]
            return Plan(body=orjson.dumps({"object": "list", "data": data, "has_more": False}))
        if method == "POST":
            fields = audio.form_fields(content_type, body)
            upload, purpose = fields.get("file"), fields.get("purpose")
            if not isinstance(upload, bytes) or not upload:
                raise BadRequest("'file' is a required property.", param="file")
            if purpose not in ("batch", "fine-tune", "assistants", "user_data", "evals"):
                raise BadRequest(
                    "'purpose' must be one of batch, fine-tune, assistants, user_data, evals.", param="purpose"
                )
            if purpose == "batch":
                _check_batch_input(upload)
            ctx = context("")
            stored = StoredFile(
                id=ctx.new_id("file", "-"), filename="input.jsonl", purpose=str(purpose), content=upload
            )
            store.files[stored.id] = stored
            return Plan(body=orjson.dumps(stored.object()))
    stored_file = store.files.get(rest[0]) if rest else None
    if stored_file is None:
        raise NotFound
    if len(rest) == 1 and method == "GET":
        return Plan(body=orjson.dumps(stored_file.object()))
    if len(rest) == 1 and method == "DELETE":
        del store.files[stored_file.id]
        return Plan(body=orjson.dumps({"id": stored_file.id, "object": "file", "deleted": True}))
    if rest[1:] == ["content"] and method == "GET":
        return Plan(body=stored_file.content, content_type="application/octet-stream")
    raise NotFound


def _check_batch_input(upload: bytes) -> None:
    for number, line in enumerate(upload.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadRequest(f"Line {number} of the batch file is not valid JSON.", param="file") from None
        if not isinstance(item, dict) or not item.get("custom_id") or item.get("url") not in _ENDPOINTS:
            raise BadRequest(
                f"Line {number}: each line needs custom_id, method, url (a supported endpoint) and body.", param="file"
            )


def _batches(method: str, rest: list[str], body: bytes, store: FileStore, context: Callable[[str], Context]) -> Plan:
    if not rest:
        if method == "GET":
            data = [b.body for b in store.batches.values()]
            return Plan(body=orjson.dumps({"object": "list", "data": data, "has_more": False}))
        if method == "POST":
            return _create(body, store, context)
    batch = store.batches.get(rest[0]) if rest else None
    if batch is None:
        raise NotFound
    if len(rest) == 1 and method == "GET":
        _advance(batch, store, context)
        return Plan(body=orjson.dumps(batch.body))
    if rest[1:] == ["cancel"] and method == "POST":
        if batch.body["status"] not in ("completed", "failed", "expired", "cancelled"):
            batch.body.update(status="cancelled", cancelled_at=int(time.time()))
        return Plan(body=orjson.dumps(batch.body))
    raise NotFound


def _create(raw: bytes, store: FileStore, context: Callable[[str], Context]) -> Plan:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    input_id, endpoint = body.get("input_file_id"), body.get("endpoint")
    if input_id not in store.files:
        raise BadRequest(f"File '{input_id}' not found.", param="input_file_id")
    if endpoint not in _ENDPOINTS:
        raise BadRequest("'endpoint' must be /chat/completions or /embeddings.", param="endpoint")
    if body.get("completion_window") != "24h":
        raise BadRequest("'completion_window' must be '24h'.", param="completion_window")
    ctx = context("")
    now = int(time.time())
    batch = {
        "id": ctx.new_id("batch", "_"),
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_id,
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + 86400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    store.batches[batch["id"]] = StoredBatch(body=batch)
    return Plan(body=orjson.dumps(batch))


def _advance(batch: StoredBatch, store: FileStore, context: Callable[[str], Context]) -> None:
    if batch.body["status"] not in _STEPS or batch.body["status"] == "completed":
        return
    batch.step = min(batch.step + 1, len(_STEPS) - 1)
    status = _STEPS[batch.step]
    now = int(time.time())
    batch.body["status"] = status
    batch.body[f"{status}_at"] = now
    if status == "completed":
        _run(batch, store, context)


def _run(batch: StoredBatch, store: FileStore, context: Callable[[str], Context]) -> None:
    """Answer every line and store the output (and error) file."""
    lines = [
        orjson.loads(line) for line in store.files[batch.body["input_file_id"]].content.splitlines() if line.strip()
    ]
    out: list[bytes] = []
    errors: list[bytes] = []
    for item in lines:
        body = item.get("body") if isinstance(item.get("body"), dict) else {}
        deployment = str(body.get("model") or "")
        ctx = context(deployment)
        answer = {"id": ctx.new_id("batch_req", "_"), "custom_id": item["custom_id"], "error": None}
        try:
            plan = _ENDPOINTS[batch.body["endpoint"]](body, ctx)
            answer["response"] = {"status_code": 200, "request_id": ctx.new_id("", ""), "body": orjson.loads(plan.body)}
            out.append(orjson.dumps(answer))
        except BadRequest as exc:
            answer["response"] = {
                "status_code": 400,
                "request_id": ctx.new_id("", ""),
                "body": {"error": {"code": exc.code, "message": exc.message}},
            }
            errors.append(orjson.dumps(answer))
    ctx = context("")
    output = StoredFile(
        id=ctx.new_id("file", "-"),
        filename="batch_output.jsonl",
        purpose="batch_output",
        content=b"\n".join(out) + (b"\n" if out else b""),
    )
    store.files[output.id] = output
    batch.body["output_file_id"] = output.id
    if errors:
        error_file = StoredFile(
            id=ctx.new_id("file", "-"),
            filename="batch_errors.jsonl",
            purpose="batch_output",
            content=b"\n".join(errors) + b"\n",
        )
        store.files[error_file.id] = error_file
        batch.body["error_file_id"] = error_file.id
    batch.body["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}


def context_factory(config: Any, rng: Any, base_url: str) -> Callable[[str], Context]:
    """A builder context for a deployment (the model it reports, its encoding), as `_dispatch` makes one."""

    def make(deployment: str) -> Context:
        model = model_for(deployment, config.models) if deployment else "gpt-4o"
        return Context(
            config=config,
            deployment=deployment,
            model=model,
            enc=encoding_for(model),
            rng=rng,
            chunks=max(1, config.stream_chunks),
            base_url=base_url,
        )

    return make
