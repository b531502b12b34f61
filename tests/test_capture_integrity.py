"""Capture never loses an exchange: bodies that cannot be written back as JSON, a log store that is
down for a while, a spill store off the instance (Azurite), an outbox that is not writable either.

The stores are the real SQLite store (a database whose directory cannot be created is a real
outage), the real Blob spill adapter against azurite, and the real file system.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from parser.handler import handle_batch
from proxy.capture import CaptureWriter
from proxy.recorder import ExchangeRecorder
from shared.adapters.blob_spill import BlobSpillStore
from shared.adapters.sqlite import SqliteDatabase, SqliteDeadLetterStore, SqliteExchangeStore, SqliteRecordStore
from shared.exchange import Exchange, Identity
from shared.ports import Ports
from shared.settings import Settings
from shared.wiring import build_ports
from testing.memory import memory_ports
from tests.azurite_server import azurite_connection_string  # noqa: F401  (session fixture)

CHAT = "/openai/deployments/gpt-4o/chat/completions"


def nested(depth: int) -> bytes:
    return b'{"messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}"


def recorder(rid: str, body: bytes, answer: bytes = b'{"choices":[]}') -> ExchangeRecorder:
    rec = ExchangeRecorder(rid, Identity(subscription_id="team-a"))
    rec.set_request("POST", CHAT, [("api-version", "2024-10-21")], [("content-type", "application/json")], body)
    rec.set_response(200, [("content-type", "application/json")])
    rec.chunks.append(answer)
    return rec


class Switch:
    """The exchange store as seen by the proxy: a broken real SQLite store until `up()`."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "not-a-dir").write_text("a file where the database directory should be")
        self.down = SqliteExchangeStore(SqliteDatabase(tmp / "not-a-dir" / "gateway.db"))
        self.db = SqliteDatabase(tmp / "ok" / "gateway.db")
        self.ok = SqliteExchangeStore(self.db)
        self.current = self.down

    def up(self) -> None:
        self.current = self.ok

    async def save(self, exchange: Exchange) -> None:
        await self.current.save(exchange)

    async def load(self, request_id: str) -> Exchange | None:
        return await self.ok.load(request_id)


async def until(condition, what: str, attempts: int = 2000) -> None:
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


# ------------------------------------------------------------------------ bodies that do not re-serialize
async def test_a_request_nested_300_levels_is_stored_as_its_bytes_and_recorded(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    ports = memory_ports()
    ports.exchanges, ports.records, ports.deadletters = (
        SqliteExchangeStore(db),
        SqliteRecordStore(db),
        SqliteDeadLetterStore(db),
    )
    body = nested(300)
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox")
    writer.submit(recorder("deep-1", body))
    await writer.drain()
    stored = await ports.exchanges.load("deep-1")
    assert stored is not None and ports.channel.published == ["deep-1"]
    assert stored.request.body_encoding == "base64"
    assert base64.b64decode(stored.request.body["base64"]) == body
    result = await handle_batch(["deep-1"], ports)
    assert result.recorded == ["deep-1"] and result.deadlettered == []
    record = await ports.records.get("deep-1")
    assert record["status_code"] == 200 and record["deployment"] == "gpt-4o"
    await db.close()


async def test_a_deep_answer_is_kept_too_and_a_body_that_still_fails_is_replaced_not_lost() -> None:
    ex = recorder("deep-2", b'{"messages":[]}', answer=nested(400)).finish()
    assert ex.response.body_encoding == "base64"
    assert Exchange.from_json(ex.to_json()).response.body == ex.response.body
    # A body that cannot be written (a defect elsewhere): the exchange still serializes.
    ex.request.body = {"x": object()}
    back = Exchange.from_json(ex.to_json())
    assert back.request.body_encoding == "base64" and b"not serializable" in base64.b64decode(
        back.request.body["base64"]
    )


async def test_capture_survives_a_recorder_that_cannot_be_finished(tmp_path: Path) -> None:
    ports = memory_ports()
    rec = recorder("broken-1", b'{"messages":[],"api_key":"sk-abcdefghijklmnopqrstuvwxyz123456"}')
    rec.chunks = None  # type: ignore[assignment]  # finish() fails on it
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox")
    writer.submit(rec)
    await writer.drain()
    stored = await ports.exchanges.load("broken-1")
    assert stored is not None and ports.channel.published == ["broken-1"]
    assert stored.request.body_encoding == "base64"
    assert b"sk-abcdefghijklmnopqrstuvwxyz123456" not in stored.to_json()


async def test_a_deep_exchange_spills_and_is_replayed(tmp_path: Path) -> None:
    switch = Switch(tmp_path)
    ports = memory_ports()
    ports.exchanges = switch
    writer = CaptureWriter(
        lambda: ports, tmp_path / "outbox", store_attempts=2, backoff_seconds=0.001, drain_backoff=(0.005, 0.02)
    )
    writer.submit(recorder("deep-3", nested(300)))
    await writer.drain()
    assert (tmp_path / "outbox" / "deep-3.json").is_file()
    switch.up()
    await until(lambda: _published(ports, "deep-3"), "the spilled exchange is announced")
    assert (await switch.load("deep-3")).request.body_encoding == "base64"
    await writer.aclose()
    await switch.db.close()


async def _published(ports: Ports, rid: str) -> bool:
    return rid in ports.channel.published  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ the store comes back
async def test_the_outbox_is_drained_while_running_once_the_store_is_back(tmp_path: Path) -> None:
    switch = Switch(tmp_path)
    ports = memory_ports()
    ports.exchanges = switch
    writer = CaptureWriter(
        lambda: ports, tmp_path / "outbox", store_attempts=2, backoff_seconds=0.001, drain_backoff=(0.005, 0.02)
    )
    for i in range(5):
        writer.submit(recorder(f"out-{i}", b'{"messages":[]}'))
    await writer.drain()
    assert sorted(p.name for p in (tmp_path / "outbox").glob("*.json")) == [f"out-{i}.json" for i in range(5)]
    assert ports.channel.published == []
    await asyncio.sleep(0.03)  # a few drain passes find the store still down: nothing is lost
    assert len(list((tmp_path / "outbox").glob("*.json"))) == 5
    switch.up()  # no restart: the drain task notices
    await until(lambda: _all_published(ports, 5), "every spilled exchange is announced")
    assert sorted(ports.channel.published) == [f"out-{i}" for i in range(5)]  # once each
    assert list((tmp_path / "outbox").glob("*.json")) == []
    assert writer.drained == 5
    await writer.aclose()
    await switch.db.close()


async def _all_published(ports: Ports, n: int) -> bool:
    return len(ports.channel.published) >= n  # type: ignore[attr-defined]


async def test_an_unwritable_outbox_keeps_the_exchange_in_memory_until_the_store_takes_it(tmp_path: Path) -> None:
    switch = Switch(tmp_path)
    ports = memory_ports()
    ports.exchanges = switch
    (tmp_path / "outbox").write_text("a file, not a directory")
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox", store_attempts=1, drain_backoff=(0.005, 0.02))
    writer.submit(recorder("mem-1", b'{"messages":[]}'))
    await writer.drain()
    assert list(writer.held) == ["mem-1"]
    switch.up()
    await until(lambda: _published(ports, "mem-1"), "the held exchange is announced")
    assert writer.held == {} and (await switch.load("mem-1")) is not None
    await writer.aclose()
    await switch.db.close()


async def test_a_failed_announcement_is_spilled_and_announced_later(tmp_path: Path) -> None:
    ports = memory_ports()
    publish = ports.channel.publish
    failures = {"left": 1}

    async def flaky_publish(rid: str) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("event channel down")
        await publish(rid)

    ports.channel.publish = flaky_publish  # type: ignore[method-assign]
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox", drain_backoff=(0.005, 0.02))
    writer.submit(recorder("pub-1", b'{"messages":[]}'))
    await writer.drain()
    await until(lambda: _published(ports, "pub-1"), "announced after the channel recovers")
    await writer.aclose()


# ------------------------------------------------------------------------ off the instance: Azure Blob
def test_spilled_exchanges_go_to_blob_storage_and_any_writer_drains_them(
    tmp_path: Path,
    azurite_connection_string: str,  # noqa: F811
) -> None:
    async def scenario() -> None:
        container = "spill-" + tmp_path.name[-20:].lower().replace("_", "-")
        switch = Switch(tmp_path)
        spill = BlobSpillStore.from_connection_string(azurite_connection_string, container)
        ports = memory_ports()
        ports.exchanges, ports.spill = switch, spill
        first = CaptureWriter(lambda: ports, tmp_path / "outbox", store_attempts=1, drain_backoff=(0.005, 0.02))
        first.submit(recorder("blob-1", b'{"messages":[{"role":"user","content":"\xe4\xbd\x93\xe9\xa8\x93"}]}'))
        first.submit(recorder("blob-2", nested(300)))
        await first.drain()
        await first.aclose()  # the instance goes away with the store still down
        assert not (tmp_path / "outbox").exists()  # nothing on the instance's disk
        assert sorted(await spill.keys()) == ["blob-1.json", "blob-2.json"]
        switch.up()
        # Another instance (a new writer) drains what the first one spilled.
        second = CaptureWriter(lambda: ports, tmp_path / "outbox2", drain_backoff=(0.005, 0.02))
        second.start()
        await until(lambda: _all_published(ports, 2), "both announced by the other instance")
        assert sorted(ports.channel.published) == ["blob-1", "blob-2"]

        async def emptied() -> bool:
            return await spill.keys() == []

        await until(emptied, "the spill store emptied")
        assert (await switch.load("blob-1")).request.body["messages"][0]["content"] == "体験"
        await second.aclose()
        await spill.close()
        await switch.db.close()

    asyncio.run(scenario())


def test_the_spill_store_is_wired_from_settings(tmp_path: Path, azurite_connection_string: str) -> None:  # noqa: F811
    async def scenario() -> None:
        env = {
            "SQLITE_PATH": str(tmp_path / "g.db"),
            "CAPTURE_SPILL_CONNECTION_STRING": azurite_connection_string,
            "CAPTURE_SPILL_CONTAINER": "wired-spill",
        }
        async with build_ports(Settings.from_env(env)) as ports:
            assert isinstance(ports.spill, BlobSpillStore)
            await ports.spill.put("k", b"v")
            assert await ports.spill.get("k") == b"v"
            await ports.spill.delete("k")
        async with build_ports(Settings.from_env({"SQLITE_PATH": str(tmp_path / "h.db")})) as ports:
            assert ports.spill is None

    asyncio.run(scenario())


async def test_a_damaged_spilled_file_is_set_aside_and_does_not_hold_up_the_others(tmp_path: Path) -> None:
    ports = memory_ports()
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "0-damaged.json").write_bytes(b'{"request_id": "0-damaged", "trunc')
    (outbox / "1-good.json").write_bytes(recorder("1-good", b'{"messages":[]}').finish().to_json())
    writer = CaptureWriter(lambda: ports, outbox, drain_backoff=(0.005, 0.02))
    assert await writer.replay_outbox() == 1
    assert ports.channel.published == ["1-good"]
    assert sorted(p.name for p in outbox.iterdir()) == ["0-damaged.bad"]


async def test_an_exchange_whose_body_cannot_be_written_is_still_stored(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    store = SqliteExchangeStore(db)
    ex = recorder("odd-1", b'{"messages":[]}').finish()
    ex.response.body = {"x": object()}  # a defect upstream of the store
    await store.save(ex)
    back = await store.load("odd-1")
    assert back.response.body_encoding == "base64" and back.request.body == {"messages": []}
    await db.close()


async def test_with_the_store_down_the_exchange_rides_on_the_event_and_is_recorded_at_once(tmp_path: Path) -> None:
    from shared.adapters.local_channel import LocalEventChannel
    from shared.exchange import exchange_event

    switch = Switch(tmp_path)
    records_db = SqliteDatabase(tmp_path / "records.db")
    ports = memory_ports()
    ports.exchanges, ports.channel = switch, LocalEventChannel()
    ports.records, ports.deadletters = SqliteRecordStore(records_db), SqliteDeadLetterStore(records_db)
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox", store_attempts=1, drain_backoff=(0.005, 0.02))
    writer.submit(recorder("ride-1", b'{"messages":[{"role":"user","content":"hi"}]}'))
    await writer.drain()
    batches = ports.channel.batches(max_batch=10, max_wait=0.05)
    (event,) = await asyncio.wait_for(batches.__anext__(), 5)
    assert event.startswith('{"request_id":"ride-1","exchange":{')
    result = await handle_batch([event.encode()], ports, delays=(0.0,))  # the store is still down
    assert result.recorded == ["ride-1"] and result.deadlettered == []
    assert (await ports.records.get("ride-1"))["deployment"] == "gpt-4o"
    assert (tmp_path / "outbox" / "ride-1.json").is_file()  # spilled all the same
    switch.up()
    again = await asyncio.wait_for(batches.__anext__(), 5)  # the drain stores it and announces its id
    assert again == ["ride-1"] and (await switch.load("ride-1")) is not None
    assert (await handle_batch(again, ports)).duplicates == ["ride-1"]  # still one record
    await batches.aclose()
    await writer.aclose()
    await switch.db.close()
    await records_db.close()
    # An exchange too large for one event is only spilled.
    big = recorder("big-1", b'{"messages":[{"role":"user","content":"' + b"x" * 1_000_000 + b'"}]}').finish()
    assert exchange_event("big-1", big.to_json()) is None


class Gate:
    """An exchange store that holds every save until `open()` (a store far behind its load)."""

    def __init__(self, tmp: Path) -> None:
        self.inner = SqliteExchangeStore(SqliteDatabase(tmp / "gate.db"))
        self.opened = asyncio.Event()
        self.waiting = 0

    def open(self) -> None:
        self.opened.set()

    async def save(self, exchange: Exchange) -> None:
        self.waiting += 1
        await self.opened.wait()
        await self.inner.save(exchange)

    async def load(self, request_id: str) -> Exchange | None:
        return await self.inner.load(request_id)


async def test_a_store_far_behind_holds_a_bounded_number_of_exchanges_in_memory(tmp_path: Path) -> None:
    """Past `max_saving` writes in flight, exchanges go to the outbox (disk), and the drain task
    stores and announces them once the store keeps up: nothing lost, memory bounded."""
    ports = memory_ports()
    gate = Gate(tmp_path)
    ports.exchanges = gate
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox", max_saving=2, drain_backoff=(0.01, 0.05))
    for i in range(6):
        writer.submit(recorder(f"held-{i}", b'{"messages":[]}'))
    outbox = tmp_path / "outbox"
    await until(lambda: _true(gate.waiting >= 2 and len(list(outbox.glob("*.json"))) >= 3), "spilled")
    await asyncio.sleep(0.2)
    # Two saves in flight, one more the drain task took from the outbox (it replays one at a time),
    # the rest on disk: never all six in memory.
    assert gate.waiting <= 3 and len(list(outbox.glob("*.json"))) >= 3
    gate.open()
    await until(
        lambda: _all_stored(gate, [f"held-{i}" for i in range(6)]), "every exchange stored once the store keeps up"
    )
    await until(lambda: _true(len(ports.channel.published) == 6), "every exchange announced")
    await writer.aclose()


async def _true(value: bool) -> bool:
    return value


async def _all_stored(store: Gate, ids: list[str]) -> bool:
    return all([await store.load(i) is not None for i in ids])
