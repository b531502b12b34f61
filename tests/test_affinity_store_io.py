"""Responses API affinity at the proxy's edges: store failures fall back, taps only where they matter."""

from proxy.routing.affinity import ResponsePinning
from shared.normalize.apis import classify
from testing.memory import MemoryAffinityStore

CREATE = classify("/openai/v1/responses")
BY_ID = classify("/openai/v1/responses/resp_1")


class BrokenStore:
    async def lookup(self, response_id):
        raise ConnectionError("store down")

    async def remember(self, response_id, backend, ttl_seconds):
        raise ConnectionError("store down")


async def test_lookup_by_id_or_previous_response_and_store_failures_fall_back():
    store = MemoryAffinityStore()
    await store.remember("resp_1", "east", 60)
    pinning = ResponsePinning(lambda: store, 60)
    assert await pinning.lookup(BY_ID, None) == "east"
    assert await pinning.lookup(CREATE, {"model": "m", "previous_response_id": "resp_1"}) == "east"
    assert await pinning.lookup(CREATE, {"model": "m"}) is None
    broken = ResponsePinning(lambda: BrokenStore(), 60)
    assert await broken.lookup(BY_ID, None) is None
    broken.remember_soon("resp_2", "east")
    await broken.drain()  # the failure is logged, not raised


async def test_taps_only_for_successful_creations_that_are_stored():
    pinning = ResponsePinning(lambda: MemoryAffinityStore(), 60)
    chat = classify("/openai/v1/chat/completions")
    assert pinning.tap(chat, "POST", {}, 200, "application/json", "east", []) is None
    assert pinning.tap(BY_ID, "GET", None, 200, "application/json", "east", []) is None
    assert pinning.tap(CREATE, "POST", {}, 400, "application/json", "east", []) is None
    assert pinning.tap(CREATE, "POST", {"store": False}, 200, "application/json", "east", []) is None
    assert pinning.tap(CREATE, "POST", {}, 200, "text/event-stream", "east", []) is not None


async def test_stream_tap_remembers_from_the_first_event_and_stops_looking():
    store = MemoryAffinityStore()
    pinning = ResponsePinning(lambda: store, 60)
    tap = pinning.tap(CREATE, "POST", {}, 200, "text/event-stream", "east", [])
    event = (
        b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_9","object":"response"}}\n\n'
    )
    tap.decode(event[:20])
    tap.decode(event[20:])
    await tap.settled()
    assert await store.lookup("resp_9") == "east"
    assert not tap.watching  # later chunks cost nothing


async def test_stream_tap_gives_up_after_the_first_few_kilobytes():
    store = MemoryAffinityStore()
    tap = ResponsePinning(lambda: store, 60).tap(CREATE, "POST", {}, 200, "text/event-stream", "east", [])
    tap.decode(b": " + b"x" * 20_000)  # a comment with no end in sight
    assert not tap.watching
    await tap.settled()
    assert store.entries == {}


async def test_json_tap_parses_the_whole_answer_at_the_end():
    store = MemoryAffinityStore()
    chunks = [b'{"id": "resp_7", "object": "resp', b'onse", "output": []}']
    tap = ResponsePinning(lambda: store, 60).tap(CREATE, "POST", {}, 200, "application/json", "west", chunks)
    for chunk in chunks:
        tap.decode(chunk)
    assert store.entries == {}
    await tap.settled()
    assert await store.lookup("resp_7") == "west"


async def test_a_follow_up_is_routed_by_a_mapping_still_being_written():
    """A client reading a stream stops at its last event and may continue the response at once,
    while the mapping is still on its way to the store: it goes to the backend that holds it."""
    import asyncio

    release = asyncio.Event()

    class Slow(MemoryAffinityStore):
        async def remember(self, response_id: str, backend: str, ttl_seconds: int) -> None:
            await release.wait()
            await super().remember(response_id, backend, ttl_seconds)

    store = Slow()
    pinning = ResponsePinning(lambda: store, 60)
    task = pinning.remember_soon("resp_9", "east")
    assert await pinning.lookup(CREATE, {"previous_response_id": "resp_9"}) == "east"
    release.set()
    await task
    assert pinning._remembering == {} and await pinning.lookup(CREATE, {"previous_response_id": "resp_9"}) == "east"
