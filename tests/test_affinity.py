import pytest

from proxy.routing.affinity import CreatedResponseWatcher, affinity_key, created_response_id, response_id_from_event
from shared.normalize.apis import classify
from shared.normalize.sse import decode_all
from testing.memory import MemoryAffinityStore

STREAM = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_abc","object":"response","status":"in_progress"}}\n\n'
    b'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_abc","object":"response"}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":2,"delta":"Hi"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","sequence_number":3,"response":{"id":"resp_abc","object":"response","status":"completed"}}\n\n'
)


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/openai/v1/responses", {"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_1"}, "resp_1"),
        ("/openai/responses", {"model": "gpt-4o", "previous_response_id": "resp_2"}, "resp_2"),
        ("/openai/v1/responses/resp_3", None, "resp_3"),  # GET / DELETE
        ("/openai/responses/resp_4/input_items", None, "resp_4"),
        ("/openai/v1/responses", {"model": "gpt-4o", "input": "hi"}, None),
        ("/openai/v1/responses", {"model": "gpt-4o", "previous_response_id": ""}, None),
        ("/openai/v1/responses", {"model": "gpt-4o", "previous_response_id": 5}, None),
        ("/openai/v1/responses", "not an object", None),
        ("/openai/deployments/gpt-4o/chat/completions", {"previous_response_id": "resp_5"}, None),
    ],
)
def test_affinity_key(path, body, key):
    assert affinity_key(classify(path), body) == key


def test_created_response_id_from_a_non_stream_answer():
    assert created_response_id(b'{"id": "resp_9", "object": "response", "status": "completed"}') == "resp_9"
    assert created_response_id(b'{"id": "chatcmpl-1", "object": "chat.completion"}') is None
    assert created_response_id(b'{"error": {"code": "429"}}') is None
    assert created_response_id(b"not json") is None


def test_response_id_from_stream_events():
    events = decode_all(STREAM)
    assert [response_id_from_event(e) for e in events] == ["resp_abc", "resp_abc", None, None]


@pytest.mark.parametrize("size", [1, 7, 64, len(STREAM)])
def test_watcher_finds_the_id_across_chunk_boundaries_once(size):
    watcher = CreatedResponseWatcher()
    found = [watcher.decode(STREAM[i : i + size]) for i in range(0, len(STREAM), size)]
    assert [f for f in found if f] == ["resp_abc"] and watcher.response_id == "resp_abc" and watcher.done


def test_watcher_gives_up_on_a_stream_without_an_id():
    watcher = CreatedResponseWatcher()
    for i in range(10):
        assert watcher.decode(f'data: {{"type": "x", "n": {i}}}\n\n'.encode()) is None
    assert watcher.done and watcher.response_id is None
    assert watcher.decode(STREAM) is None  # stopped looking


async def test_round_trip_through_the_affinity_store_with_ttl():
    now = [100.0]
    store = MemoryAffinityStore(clock=lambda: now[0])
    watcher = CreatedResponseWatcher()
    await store.remember(watcher.decode(STREAM), "eastus", 60)
    key = affinity_key(classify("/openai/v1/responses"), {"model": "gpt-4o", "previous_response_id": "resp_abc"})
    assert await store.lookup(key) == "eastus"
    now[0] += 60
    assert await store.lookup(key) is None  # expired: normal selection
