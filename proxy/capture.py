"""Exchange capture: store each exchange and announce it, off the hot path, losing none.

`CaptureWriter` stores then publishes each exchange (built by `proxy/recorder.py`) in a tracked
background task, retrying the store with backoff; if the store stays down the exchange is announced
on the event itself when it fits, and spilled (spill store, outbox directory, or memory), and a
drain task stores and announces it as soon as the store is back, so nothing is lost and the stream
never waits. The capture level (`shared/privacy/`) is applied here, before anything is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from proxy.recorder import ExchangeRecorder
from shared.background import BackgroundTasks
from shared.exchange import (
    Exchange,
    exchange_event,
)
from shared.ports import Ports, SpillStore
from shared.privacy.capture import CapturePrivacy, reduce, without_bodies

log = logging.getLogger(__name__)


def default_outbox_dir() -> Path:
    return Path(tempfile.gettempdir()) / "aoai-gateway-outbox"


#: Spill-store prefix of spilled files that are not exchanges (kept for a person, never replayed).
UNREADABLE = "unreadable/"
#: Drain pass backoff while the log store is still down (seconds, doubling up to the second).
DRAIN_BACKOFF = (1.0, 60.0)
#: With nothing spilled here, how often the shared spill store is looked at anyway: an instance
#: recycled or scaled in leaves its spilled exchanges there for the others to drain.
DRAIN_IDLE_SECONDS = 60.0
#: Exchanges being written to the store at once, at most; more wait in the spill places (disk).
MAX_SAVING = 256
#: Exchanges with at most this many body bytes get capture levels without recognizers applied on
#: the event loop (`CaptureWriter._apply_privacy`).
INLINE_REDUCE_BYTES = 512 * 1024


def _body_bytes(exchange: Exchange) -> int:
    response = exchange.response
    return exchange.request.body_bytes + (response.body_bytes if response is not None else 0)


class CaptureWriter:
    """Store, then announce, each exchange in the background; spill it when the store is down.

    With the store down, an exchange that fits in one event is announced on the event itself (the
    parser records it from there), and spilled all the same: to the spill store when one is wired
    (Azure Blob: durable off the instance), else (or when that fails too) to the local outbox
    directory, else it is held in memory. A drain task stores and announces them again as soon as the store takes them, with
    backoff while it does not; it runs from the first spill (or `start()`) until `aclose()`.
    """

    def __init__(
        self,
        ports: Callable[[], Ports],
        outbox_dir: Path | None = None,
        *,
        store_attempts: int = 5,
        backoff_seconds: float = 0.2,
        privacy: CapturePrivacy | None = None,
        record_in_place: Callable[[Exchange], Awaitable[object]] | None = None,
        drain_backoff: tuple[float, float] = DRAIN_BACKOFF,
        drain_idle_seconds: float = DRAIN_IDLE_SECONDS,
        max_saving: int = MAX_SAVING,
    ) -> None:
        """`privacy` applies CAPTURE_LEVELS to each exchange before it is stored; an exchange at
        level `none` goes to `record_in_place` (the parser's record step) instead of the store."""
        self._ports = ports
        self.outbox_dir = outbox_dir or default_outbox_dir()
        self._store_attempts = store_attempts
        self._backoff = backoff_seconds
        self._drain_backoff = drain_backoff
        self._drain_idle = drain_idle_seconds
        self._tasks = BackgroundTasks()
        #: Exchanges (JSON) no spill place took: kept here until the store does.
        self.held: dict[str, bytes] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        #: Spilled exchanges stored and announced again since start (a metric for the logs).
        self.drained = 0
        #: Responses being relayed, whose exchange is submitted when they end (`relay_started`).
        self._relaying = 0
        self._no_relays: asyncio.Event | None = None  # made by `drain`, inside the running loop
        self._privacy = privacy
        self._record_in_place = record_in_place
        #: Store writes in flight, and the bound past which new exchanges go to the spill places.
        self._saving = 0
        self._max_saving = max_saving

    def relay_started(self) -> None:
        """A response is on its way to the client; its exchange comes with `submit(..., relay=True)`.

        A client may hold a complete answer a moment before its relay ends (a JSON body sent with
        its length is complete at its last byte), so `drain` waits for relays still open too."""
        self._relaying += 1

    def submit(
        self,
        exchange: Exchange | ExchangeRecorder,
        before: Callable[[], Awaitable[None]] | None = None,
        *,
        relay: bool = False,
    ) -> None:
        """Hand an exchange (or the recorder that will build it) over; returns at once (the task
        is tracked until done). Given a recorder, `finish()` (join, decode, redact) runs in the
        task, after the client's last byte, instead of in the response's path. `before` runs first
        in the same task (storing the answer in the response cache, which the exchange then notes)."""
        if relay:
            self._relaying -= 1
            if self._relaying == 0 and self._no_relays is not None:
                self._no_relays.set()
        self._tasks.spawn(self._persist(exchange, before))

    @property
    def pending(self) -> int:
        return self._tasks.pending

    async def drain(self, relay_wait_seconds: float = 30.0) -> None:
        """Wait for open relays to end (at most `relay_wait_seconds`), then for every submitted
        exchange (shutdown, tests)."""
        if self._relaying > 0:
            if self._no_relays is None:
                self._no_relays = asyncio.Event()
            self._no_relays.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_relays.wait(), relay_wait_seconds)
        await self._tasks.drain()

    def start(self) -> None:
        """Start the drain task (it looks for spilled exchanges at once, then as described above)."""
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain_loop())
        self._wake.set()

    async def aclose(self) -> None:
        """Finish submitted exchanges, try one last drain pass, stop the drain task."""
        await self.drain()
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if self.held:
            with contextlib.suppress(Exception):
                await self.replay_outbox()
            if self.held:
                log.error("%d exchange(s) neither stored nor spilled at shutdown", len(self.held))

    async def _persist(
        self, exchange: Exchange | ExchangeRecorder, before: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if before is not None:
            try:
                await before()
            except Exception:  # never lose the exchange to it
                log.exception("the step before capturing %s failed", exchange.request_id)
        if isinstance(exchange, ExchangeRecorder):
            recorder = exchange
            try:
                exchange = recorder.finish()
            except Exception as exc:  # a defect: still store what arrived, as bytes
                log.exception("building the exchange of %s failed; storing its raw bytes", recorder.request_id)
                exchange = recorder.fallback(f"{type(exc).__name__}: {exc}")
        if self._privacy is not None:
            exchange = await self._apply_privacy(exchange, self._privacy)
            if exchange.capture_level == "none" and self._record_in_place is not None:
                await self._record_in_place(exchange)
                return
        ports = self._ports()
        if self._saving >= self._max_saving:
            # The store is behind (after an outage, or under more load than it takes): keep the
            # exchange on disk for the drain task rather than one more in memory; memory stays bounded.
            await self._spill(exchange, "backlog")
            return
        self._saving += 1
        try:
            await self._store(ports, exchange)
        finally:
            self._saving -= 1

    async def _store(self, ports: Ports, exchange: Exchange) -> None:
        delay = self._backoff
        for attempt in range(1, self._store_attempts + 1):
            try:
                await ports.exchanges.save(exchange)
                break
            except Exception as exc:
                log.warning(
                    "storing exchange %s failed (attempt %d/%d): %s",
                    exchange.request_id,
                    attempt,
                    self._store_attempts,
                    type(exc).__name__,
                )
                if attempt == self._store_attempts:
                    await self._announce_with_exchange(exchange)
                    await self._spill(exchange, "store")
                    return
                await asyncio.sleep(delay)
                delay *= 2
        try:
            await ports.channel.publish(exchange.request_id)
        except Exception as exc:
            log.warning("announcing exchange %s failed: %s", exchange.request_id, type(exc).__name__)
            await self._spill(exchange, "publish")

    @staticmethod
    async def _apply_privacy(exchange: Exchange, privacy: CapturePrivacy) -> Exchange:
        """The capture level, applied off the event loop when there is much work: recognizers over
        every text (`redacted`) cost milliseconds per 100 KB, which other streams must not wait for.
        Without them (`metadata`, `none`) the work is the record's normalization, about 1 ms per
        128 KB stream: done in place up to `INLINE_REDUCE_BYTES`, since handing it to a thread
        cost more CPU than the work (the two threads take turns at the GIL)."""
        level, rule = privacy.level_of(exchange)
        try:
            if level == "full" or (level in ("metadata", "none") and _body_bytes(exchange) <= INLINE_REDUCE_BYTES):
                return reduce(exchange, level, rule, privacy.pii)
            return await asyncio.to_thread(reduce, exchange, level, rule, privacy.pii)
        except Exception as exc:  # a defect: fail closed, keep no content rather than too much
            # The type only: a traceback's locals and messages can quote the bodies being redacted.
            log.error(
                "applying capture level %s to %s failed (%s); keeping no bodies",
                level,
                exchange.request_id,
                type(exc).__name__,
            )
            return without_bodies(exchange, rule)

    async def _announce_with_exchange(self, exchange: Exchange) -> None:
        """The store is down: announce the exchange itself when it fits in one event, so the parser
        records it now. It is spilled all the same, and stored and announced again once the store
        is back (the parser then finds the record: a duplicate, not a second record)."""
        channel = self._ports().channel
        publish = getattr(channel, "publish_exchange", None)
        event = exchange_event(exchange.request_id, exchange.to_json()) if publish is not None else None
        if event is None:
            return
        try:
            await publish(exchange.request_id, event)  # type: ignore[misc]
            log.warning("exchange %s announced with the exchange on the event (store down)", exchange.request_id)
        except Exception as exc:
            log.warning("announcing exchange %s on the event failed: %s", exchange.request_id, type(exc).__name__)

    def _spill_store(self) -> SpillStore | None:
        return getattr(self._ports(), "spill", None)

    async def _spill(self, exchange: Exchange, stage: str) -> None:
        """Keep the (already redacted) exchange for the drain task: spill store, outbox, memory."""
        rid = exchange.request_id
        data = exchange.to_json()
        spill = self._spill_store()
        try:
            if spill is not None:
                try:
                    await spill.put(f"{rid}.json", data)
                    log.error("exchange %s spilled to the spill store after %s failure", rid, stage)
                    return
                except Exception as exc:
                    log.error("spill store refused exchange %s (%s); trying the outbox", rid, type(exc).__name__)
            try:
                self.outbox_dir.mkdir(parents=True, exist_ok=True)
                final = self.outbox_dir / f"{rid}.json"
                tmp = final.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, final)
                log.error("exchange %s spilled to %s after %s failure", rid, final, stage)
            except OSError as exc:
                self.held[rid] = data
                log.error("exchange %s held in memory: outbox not writable (%s)", rid, exc)
        finally:
            self.start()

    async def replay_outbox(self) -> int:
        """Store and announce every spilled exchange again (memory, outbox, spill store); returns
        how many were sent. A pass stops at the first store failure: the store is still down. A
        spilled file that is not an exchange (damaged on disk) is set aside (`.bad`, `unreadable/`)
        so that it never holds up the others."""
        sent = 0
        ports = self._ports()

        async def resend(data: bytes, where: str) -> bool:
            try:
                exchange = Exchange.from_json(data)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("spilled exchange %s is unreadable, set aside: %s", where, type(exc).__name__)
                return False
            await ports.exchanges.save(exchange)
            await ports.channel.publish(exchange.request_id)
            return True

        try:
            for rid, data in list(self.held.items()):
                sent += await resend(data, rid)
                self.held.pop(rid, None)
            if self.outbox_dir.is_dir():
                for path in sorted(self.outbox_dir.glob("*.json")):
                    try:
                        data = path.read_bytes()
                    except FileNotFoundError:  # another pass took it
                        continue
                    if await resend(data, str(path)):
                        path.unlink(missing_ok=True)
                        sent += 1
                    else:
                        os.replace(path, path.with_suffix(".bad"))
            spill = self._spill_store()
            if spill is not None:
                for key in await spill.keys(limit=500):
                    if key.startswith(UNREADABLE):
                        continue
                    spilled = await spill.get(key)
                    if spilled is not None:
                        if await resend(spilled, key):
                            sent += 1
                        else:
                            await spill.put(UNREADABLE + key, spilled)
                    await spill.delete(key)
        except Exception as exc:
            log.warning("replaying spilled exchanges stopped after %d: %s", sent, type(exc).__name__)
        finally:
            self.drained += sent
            if sent:
                log.info("replayed %d spilled exchange(s) (%d since start)", sent, self.drained)
        return sent

    async def _backlog(self) -> bool:
        """Whether anything spilled is left (the spill store is asked only when it is wired)."""
        if self.held or (self.outbox_dir.is_dir() and any(self.outbox_dir.glob("*.json"))):
            return True
        spill = self._spill_store()
        if spill is None:
            return False
        try:
            return any(not key.startswith(UNREADABLE) for key in await spill.keys(limit=500))
        except Exception:
            return True

    async def _drain_loop(self) -> None:
        assert self._wake is not None
        low, high = self._drain_backoff
        delay = low
        while True:
            self._wake.clear()
            await self.replay_outbox()
            if await self._backlog():
                await asyncio.sleep(delay)
                delay = min(delay * 2, high)
                continue
            delay = low
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_idle):
                    await self._wake.wait()
