"""Ownership of stored objects: which ids a request names, which an answer makes known, the
unknown-id answers, and the SQLite and in-memory stores (Cosmos: tests/test_cosmos_server.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from proxy.ownership import NotOwned, ObjectRef, Ownership, OwnershipUnavailable, created, creates, referenced
from shared.adapters.sqlite import SqliteDatabase, SqliteOwnershipStore
from testing.memory import MemoryOwnershipStore


@pytest.mark.parametrize(
    ("method", "path", "body", "refs"),
    [
        ("GET", "/openai/v1/responses/resp_1", None, [ObjectRef("response", "resp_1")]),
        ("GET", "/openai/responses/resp_1/input_items", None, [ObjectRef("response", "resp_1")]),
        ("DELETE", "/openai/v1/responses/resp_1", None, [ObjectRef("response", "resp_1")]),
        ("POST", "/openai/v1/responses/resp_1/cancel", None, [ObjectRef("response", "resp_1")]),
        (
            "POST",
            "/openai/v1/responses",
            {"model": "m", "previous_response_id": "resp_2"},
            [ObjectRef("response", "resp_2", "previous_response_id")],
        ),
        ("POST", "/openai/responses", {"model": "m", "previous_response_id": ""}, []),
        ("POST", "/openai/responses", {"model": "m", "previous_response_id": 7}, []),
        ("POST", "/openai/v1/responses", {"model": "m", "input": "hi"}, []),
        ("GET", "/openai/files/file-1/content", None, [ObjectRef("file", "file-1")]),
        ("DELETE", "/openai/v1/files/file-1", None, [ObjectRef("file", "file-1")]),
        ("GET", "/openai/v1/files", None, []),
        (
            "POST",
            "/openai/batches",
            {"input_file_id": "file-9", "endpoint": "/chat/completions"},
            [ObjectRef("file", "file-9", "input_file_id")],
        ),
        ("POST", "/openai/v1/batches/batch_1/cancel", None, [ObjectRef("batch", "batch_1")]),
        ("GET", "/openai/v1/vector_stores/vs_1/files/file-3", None, [ObjectRef("file", "file-3")]),
        ("POST", "/openai/deployments/gpt-4o/chat/completions", {"previous_response_id": "resp_3"}, []),
    ],
)
def test_the_objects_a_request_names(method, path, body, refs) -> None:
    assert referenced(method, path, body) == refs


def test_the_objects_an_answer_makes_known() -> None:
    assert created({"object": "response", "id": "resp_1", "status": "completed"}) == [("response", "resp_1")]
    assert created({"object": "file", "id": "file-1"}) == [("file", "file-1")]
    batch = {"object": "batch", "id": "batch_1", "output_file_id": "file-out", "error_file_id": None}
    assert created(batch) == [("batch", "batch_1"), ("file", "file-out")]
    assert created({"object": "list", "data": []}) == []
    assert created({"object": "response", "id": ""}) == []
    assert created([1, 2]) == [] and created(None) == []


@pytest.mark.parametrize(
    ("method", "path", "status", "has_id", "expected"),
    [
        ("POST", "/openai/v1/responses", 200, False, True),
        ("POST", "/openai/files", 201, False, True),
        ("POST", "/openai/v1/responses", 400, False, False),
        ("GET", "/openai/v1/responses/resp_1", 200, True, False),
        ("GET", "/openai/batches/batch_1", 200, True, True),
        ("POST", "/openai/deployments/gpt-4o/chat/completions", 200, False, False),
    ],
)
def test_which_answers_are_watched_for_ids(method, path, status, has_id, expected) -> None:
    assert creates(method, path, status, has_id) is expected


def test_unknown_id_answers_name_the_id_as_aoai_does() -> None:
    body = orjson.loads(NotOwned(ObjectRef("response", "resp_x")).to_bytes())
    assert body == {
        "error": {
            "code": "NotFound",
            "message": "Response with id 'resp_x' not found.",
            "param": None,
            "type": "invalid_request_error",
        }
    }
    error = NotOwned(ObjectRef("response", "resp_x", "previous_response_id"))
    assert error.status == 400 and error.code == "previous_response_not_found"
    assert NotOwned(ObjectRef("file", "file-1", "input_file_id")).status == 404


async def test_only_the_owner_passes_and_an_unclaimed_id_is_nobodys() -> None:
    store = MemoryOwnershipStore()
    ownership = Ownership(lambda: store)
    await store.claim("response", "resp_1", "team-b")
    await ownership.check([ObjectRef("response", "resp_1")], "team-b")
    with pytest.raises(NotOwned):
        await ownership.check([ObjectRef("response", "resp_1")], "team-a")
    with pytest.raises(NotOwned):
        await ownership.check([ObjectRef("response", "resp_unclaimed")], "team-b")


async def test_a_follow_up_waits_for_the_claim_still_being_written() -> None:
    """A client reading a stream stops at its last event and may ask for the object at once, while
    the claim is still on its way to the store: the check waits for it (the creator passes, anyone
    else still gets the unknown-id answer), and nothing is left behind once it is written."""
    release = asyncio.Event()

    class Slow(MemoryOwnershipStore):
        async def claim(self, kind: str, object_id: str, owner: str) -> None:
            await release.wait()
            await super().claim(kind, object_id, owner)

    store = Slow()
    ownership = Ownership(lambda: store)
    ownership.claim_soon([("chat.completion", "chatcmpl-1")], "team-b")
    checking = asyncio.create_task(ownership.check([ObjectRef("chat.completion", "chatcmpl-1")], "team-b"))
    await asyncio.sleep(0.01)
    assert not checking.done()  # waiting for the claim, not answering from a store that lacks it
    release.set()
    await checking
    with pytest.raises(NotOwned):
        await ownership.check([ObjectRef("chat.completion", "chatcmpl-1")], "team-a")
    assert ownership._claiming == {}


async def test_a_store_that_cannot_answer_refuses_with_503() -> None:
    class Down:
        async def claim(self, kind: str, object_id: str, owner: str) -> None:
            raise OSError("down")

        async def owner(self, kind: str, object_id: str) -> str | None:
            raise OSError("down")

    with pytest.raises(OwnershipUnavailable) as err:
        await Ownership(Down).check([ObjectRef("file", "file-1")], "team-a")
    assert err.value.status == 503 and err.value.code == "ServiceUnavailable"


async def test_a_claim_from_a_json_answer_is_stored_before_the_answer_ends() -> None:
    store = MemoryOwnershipStore()
    ownership = Ownership(lambda: store)
    chunks = [b'{"object": "batch", "id": "batch_7",', b' "output_file_id": "file-o"}']
    tap = ownership.tap("team-a", stream=False, chunks=chunks)
    await tap.settled()
    assert store.owners == {("batch", "batch_7"): "team-a", ("file", "file-o"): "team-a"}


async def test_a_claim_from_a_stream_is_found_in_its_first_event() -> None:
    store = MemoryOwnershipStore()
    ownership = Ownership(lambda: store)
    event = {"type": "response.created", "response": {"object": "response", "id": "resp_s"}}
    raw = b"event: response.created\ndata: " + orjson.dumps(event) + b"\n\n"
    tap = ownership.tap("team-a", stream=True, chunks=[])
    for i in range(0, len(raw), 7):
        tap.decode(raw[i : i + 7])
    await tap.settled()
    assert store.owners == {("response", "resp_s"): "team-a"}


async def test_sqlite_keeps_the_first_owner(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    store = SqliteOwnershipStore(db)
    try:
        assert await store.owner("response", "resp_1") is None
        await store.claim("response", "resp_1", "team-b")
        await store.claim("response", "resp_1", "team-a")  # a later claim never hands an id over
        assert await store.owner("response", "resp_1") == "team-b"
        assert await store.owner("file", "resp_1") is None  # kinds are separate
        await asyncio.gather(*(store.claim("file", f"file-{i}", "team-a") for i in range(20)))
        assert await store.owner("file", "file-19") == "team-a"
    finally:
        await db.close()


def test_a_chat_completion_is_claimed_only_when_stored() -> None:
    path = "/openai/deployments/gpt-4o/chat/completions"
    assert creates("POST", path, 200, False, {"messages": [], "store": True})
    assert not creates("POST", path, 200, False, {"messages": []})
    assert referenced("GET", "/openai/chat/completions/chatcmpl-1/messages", None) == [
        ObjectRef("chat.completion", "chatcmpl-1")
    ]
    assert referenced("POST", path, {"store": True}) == []


async def test_a_streamed_chat_completion_is_claimed_past_azures_annotation_event() -> None:
    store = MemoryOwnershipStore()
    tap = Ownership(lambda: store).tap("team-a", stream=True, chunks=[], path="/openai/v1/chat/completions")
    annotation = {"id": "", "object": "", "choices": [], "prompt_filter_results": []}
    first = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": []}
    tap.decode(b"data: " + orjson.dumps(annotation) + b"\n\ndata: " + orjson.dumps(first) + b"\n\n")
    await tap.settled()
    assert store.owners == {("chat.completion", "chatcmpl-9"): "team-a"}
