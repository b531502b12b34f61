"""Tenant isolation for stored objects: only the subscription that created a response, a file or a
batch reaches it through the gateway.

Every team calls AOAI with the gateway's identity, so AOAI cannot tell teams apart: the gateway
keeps `(kind, id) -> subscription` (the `OwnershipStore` port) and answers any other subscription
exactly as AOAI answers an id it does not know. It fails closed: an id with no owner on file (made
before isolation was on, made outside the gateway, or whose claim was lost) is unknown to everyone,
and a store that cannot answer gives a 503 rather than a guess.

- `referenced` (pure) lists the objects a request names: the id in the path (retrieve, input
  items, content, delete, cancel) and ids in a create body (`previous_response_id`, a batch's
  `input_file_id`);
- `created` (pure) lists the objects an answer makes known to its caller: the created response,
  file or batch, and a batch's output and error files;
- `OwnerTap` claims those ids for the caller while the answer passes, and waits (briefly) for the
  write before the answer ends, so a follow-up at once finds its claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from proxy.routing.affinity import CreatedResponseWatcher
from proxy.streams.id_tap import WRITE_WAIT_SECONDS, IdTap, IdWatcher
from shared.background import BackgroundTasks
from shared.errors import ErrorResponse
from shared.normalize.sse import SSEDecoder
from shared.ports import OwnershipStore

log = logging.getLogger(__name__)

Kind = Literal["response", "file", "batch", "chat.completion"]

#: `/openai[/v1]/{collection}/{id}[/...]`, anywhere below `/openai/` (vector store files included).
_PATH_ID = re.compile(r"/(?P<collection>responses|files|batches|chat/completions)/(?P<id>[^/]+)")
_KINDS: dict[str, Kind] = {
    "responses": "response",
    "files": "file",
    "batches": "batch",
    "chat/completions": "chat.completion",
}
#: A chat completion stored with `store: true` (retrieved, listed, deleted on `/chat/completions/{id}`).
_CHAT_CREATE = re.compile(r"/chat/completions/?$")
#: Collections whose POST creates an object the caller then owns.
_CREATES = re.compile(r"/(?P<collection>responses|files|batches)/?$")
#: Listings of owned objects (`GET /openai[/v1]/files`, `.../batches`), filtered to the caller's.
_LISTS = re.compile(r"^/openai/(?:v1/)?(?P<collection>files|batches|chat/completions)/?$")
#: Owner look-ups of one listing at the same time.
LIST_LOOKUPS = 16


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: Kind
    id: str
    #: Where the request names it: the path, or a create body's field.
    via: Literal["path", "previous_response_id", "input_file_id"] = "path"


def referenced(method: str, path: str, body: Any) -> list[ObjectRef]:
    """The stored objects a request reaches, by kind and id (path first, then body fields)."""
    refs: list[ObjectRef] = []
    after = path.split("/openai/", 1)[-1]
    for m in _PATH_ID.finditer("/" + after):
        refs.append(ObjectRef(_KINDS[m["collection"]], m["id"]))
    create = _CREATES.search(path) if method.upper() == "POST" and isinstance(body, Mapping) else None
    if create is not None and isinstance(body, Mapping):
        collection = create["collection"]
        previous = body.get("previous_response_id")
        if collection == "responses" and isinstance(previous, str) and previous:
            refs.append(ObjectRef("response", previous, "previous_response_id"))
        input_file = body.get("input_file_id")
        if collection == "batches" and isinstance(input_file, str) and input_file:
            refs.append(ObjectRef("file", input_file, "input_file_id"))
    return refs


def created(payload: Any) -> list[tuple[Kind, str]]:
    """Objects an answer makes known to its caller: `{"object": "response"|"file"|"batch", "id"}`,
    plus a batch's `output_file_id` / `error_file_id` (files the service made for that caller)."""
    if not isinstance(payload, Mapping):
        return []
    kind = payload.get("object")
    oid = payload.get("id")
    if kind not in ("response", "file", "batch", "chat.completion") or not isinstance(oid, str) or not oid:
        return []
    found: list[tuple[Kind, str]] = [(kind, oid)]
    if kind == "batch":
        for name in ("output_file_id", "error_file_id"):
            fid = payload.get(name)
            if isinstance(fid, str) and fid:
                found.append(("file", fid))
    return found


def creates(method: str, path: str, status: int, has_path_id: bool, body: Any = None) -> bool:
    """Whether an answer may carry ids to claim: a 2xx to a create (a chat completion only with
    `store: true`), or to a batch's retrieve/cancel."""
    if not 200 <= status < 300:
        return False
    verb = method.upper()
    if _CHAT_CREATE.search(path):
        return verb == "POST" and isinstance(body, Mapping) and body.get("store") is True
    if verb == "POST" and _CREATES.search(path) and not has_path_id:
        return True
    return verb in ("GET", "POST") and "/batches/" in path


def listed_kind(method: str, path: str) -> Kind | None:
    """The kind a `GET` listing returns (files, batches), else None."""
    m = _LISTS.match(path) if method.upper() == "GET" else None
    return _KINDS[m["collection"]] if m else None


class NotOwned(ErrorResponse):
    """The answer AOAI gives for an id it does not know, for each way of naming one."""

    def __init__(self, ref: ObjectRef) -> None:
        self.status, self.code, self._extra = _NOT_FOUND[(ref.kind, ref.via)]
        super().__init__(self._message(ref))

    def _message(self, ref: ObjectRef) -> str:
        if ref.via == "previous_response_id":
            return f"Previous response with id '{ref.id}' not found."
        if ref.kind == "response":
            return f"Response with id '{ref.id}' not found."
        if ref.kind == "file":
            return f"File with id '{ref.id}' not found."
        if ref.kind == "chat.completion":
            return f"Chat completion with id '{ref.id}' not found."
        return f"Batch with id '{ref.id}' not found."

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self._extra}}


#: (kind, via) -> status, code, other fields, as AOAI answers an unknown id.
_NOT_FOUND: dict[tuple[Kind, str], tuple[int, str, dict[str, Any]]] = {
    ("response", "path"): (404, "NotFound", {"param": None, "type": "invalid_request_error"}),
    ("response", "previous_response_id"): (
        400,
        "previous_response_not_found",
        {"param": "previous_response_id", "type": None},
    ),
    ("file", "path"): (404, "NotFound", {}),
    ("file", "input_file_id"): (404, "NotFound", {}),
    ("batch", "path"): (404, "NotFound", {}),
    ("chat.completion", "path"): (404, "NotFound", {}),
}


class OwnershipUnavailable(ErrorResponse):
    status, code = 503, "ServiceUnavailable"


class Ownership:
    """The ownership store as the proxy uses it (one per app)."""

    def __init__(self, store: Callable[[], OwnershipStore | None]) -> None:
        self._get_store = store
        self._tasks = BackgroundTasks()
        #: Claims being written, by object: a follow-up naming one waits for its claim. A client
        #: reading a stream stops at its last event, before the response ends and so before the
        #: end of the answer waited for the claim; its next request can arrive while it is written.
        self._claiming: dict[tuple[str, str], asyncio.Task[None]] = {}

    def _store(self) -> OwnershipStore:
        store = self._get_store()
        if store is None:
            raise RuntimeError("no ownership store is wired")
        return store

    async def check(self, refs: list[ObjectRef], subscription: str) -> None:
        """Raise the unknown-id answer for the first object `subscription` does not own."""
        for ref in refs:
            claiming = self._claiming.get((ref.kind, ref.id))
            if claiming is not None:  # `_claim` never raises; a slow one is not waited for long
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(claiming), WRITE_WAIT_SECONDS)
            try:
                owner = await self._store().owner(ref.kind, ref.id)
            except Exception as exc:  # noqa: BLE001 - an outage must not let anyone through
                log.warning("ownership lookup failed (%s); refusing %s %s", type(exc).__name__, ref.kind, ref.via)
                raise OwnershipUnavailable(
                    "The service is temporarily unable to process your request. Please try again later."
                ) from exc
            if owner != subscription:
                raise NotOwned(ref)

    async def filter_list(self, body: bytes, kind: Kind, subscription: str) -> bytes:
        """A listing (`{"object": "list", "data": [...]}`) with only the caller's objects of `kind`;
        an answer that is not such a listing becomes an empty one (nothing unchecked gets out)."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        items = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(items, list):
            return orjson.dumps({"object": "list", "data": [], "has_more": False})
        gate = asyncio.Semaphore(LIST_LOOKUPS)

        async def mine(item: Any) -> bool:
            oid = item.get("id") if isinstance(item, Mapping) else None
            if not isinstance(oid, str) or not oid:
                return False
            async with gate:
                return await self._store().owner(kind, oid) == subscription

        try:
            keep = await asyncio.gather(*(mine(item) for item in items))
        except Exception as exc:  # noqa: BLE001 - an outage must not list anyone's objects
            log.warning("ownership lookup failed (%s); refusing a %s listing", type(exc).__name__, kind)
            raise OwnershipUnavailable(
                "The service is temporarily unable to process your request. Please try again later."
            ) from exc
        data = [item for item, ok in zip(items, keep, strict=True) if ok]
        out = {**payload, "data": data}
        if "first_id" in payload:
            out["first_id"] = data[0]["id"] if data else None
        if "last_id" in payload:
            out["last_id"] = data[-1]["id"] if data else None
        return orjson.dumps(out)

    def claim_soon(self, found: list[tuple[Kind, str]], subscription: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self._tasks.spawn(self._claim(found, subscription))
        keys = [(str(kind), oid) for kind, oid in found]
        for key in keys:
            self._claiming[key] = task

        def written(done: asyncio.Task[None]) -> None:
            for key in keys:
                if self._claiming.get(key) is done:
                    del self._claiming[key]

        task.add_done_callback(written)
        return task

    async def _claim(self, found: list[tuple[Kind, str]], subscription: str) -> None:
        for kind, oid in found:
            try:
                await self._store().claim(kind, oid, subscription)
            except Exception as exc:  # noqa: BLE001 - the answer is already on its way
                log.error(
                    "storing the owner of a %s failed (%s): its creator will get 404 for it", kind, type(exc).__name__
                )

    def tap(self, subscription: str, stream: bool, chunks: list[bytes], path: str = "") -> OwnerTap:
        return OwnerTap(self, subscription, stream, chunks, chat=bool(_CHAT_CREATE.search(path)))

    async def drain(self) -> None:
        await self._tasks.drain()


class ChatChunkWatcher:
    """Finds a streamed chat completion's id in its first chunks (`object: chat.completion.chunk`;
    Azure's prompt-annotation event before them has an empty id)."""

    __slots__ = ("_decoder", "_seen", "done")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._seen = 0
        self.done = False

    def decode(self, chunk: bytes) -> str | None:
        for event in self._decoder.decode(chunk):
            if self.done or event.data is None or not event.data.startswith("{"):
                continue
            self._seen += 1
            self.done = self._seen >= 4
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            oid = payload.get("id") if isinstance(payload, dict) else None
            if payload.get("object") == "chat.completion.chunk" and isinstance(oid, str) and oid:
                self.done = True
                return oid
        return None

    def flush(self) -> None:
        return None


class AnswerTap(Protocol):
    """A stream filter that watches an answer's chunks as they pass and returns each unchanged
    (`proxy/streams/filters.py`); `settled` waits, at the end, for what it stores."""

    def decode(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    async def settled(self) -> None: ...


class BothTaps:
    """Two taps on one answer, fed in order."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: AnswerTap, second: AnswerTap) -> None:
        self._first, self._second = first, second

    def decode(self, chunk: bytes) -> bytes:
        self._first.decode(chunk)
        return self._second.decode(chunk)

    def flush(self) -> bytes:
        return self._first.flush() + self._second.flush()

    async def settled(self) -> None:
        await self._first.settled()
        await self._second.settled()


def both(first: AnswerTap | None, second: AnswerTap) -> AnswerTap:
    return second if first is None else BothTaps(first, second)


class OwnerTap(IdTap):
    """Claims, for the caller, the ids one answer makes known (stream: from its first events)."""

    __slots__ = ("_ownership", "_subscription", "_kind")
    what = "an owner"

    def __init__(
        self, ownership: Ownership, subscription: str, stream: bool, chunks: list[bytes], chat: bool = False
    ) -> None:
        watcher: IdWatcher | None = None
        if stream:
            watcher = ChatChunkWatcher() if chat else CreatedResponseWatcher()
        super().__init__(stream, chunks, watcher)
        self._ownership = ownership
        self._subscription = subscription
        self._kind: Kind = "chat.completion" if chat else "response"

    def _store_streamed(self, found: str) -> asyncio.Task[None] | None:
        return self._ownership.claim_soon([(self._kind, found)], self._subscription)

    def _store_body(self, body: bytes) -> asyncio.Task[None] | None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        found = created(payload)
        return self._ownership.claim_soon(found, self._subscription) if found else None
