"""The in-process event channel: an asyncio queue standing in for Event Hubs in the dev host.

The dev host feeds the app's Event Hub-triggered function from `batches()`, in batches as the
Functions host would. Delivery is at least once, like Event Hubs: publishing an id twice delivers
it twice, which is how tests exercise the parser's idempotency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

_CLOSED = object()


class LocalEventChannel:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False
        #: How many ids were published in total (redeliveries included).
        self.published_count = 0

    @property
    def backlog(self) -> int:
        """Announced request ids not yet taken by the consumer."""
        return self._queue.qsize()

    async def publish(self, request_id: str) -> None:
        if self._closed:
            raise RuntimeError("the local event channel is closed")
        self.published_count += 1
        self._queue.put_nowait(request_id)

    async def publish_exchange(self, request_id: str, event: bytes) -> None:
        """An event that carries its exchange (`shared.exchange.exchange_event`): its JSON text."""
        await self.publish(event.decode("utf-8"))

    async def batches(self, max_batch: int = 100, max_wait: float = 0.05) -> AsyncIterator[list[str]]:
        """Published ids in batches of up to `max_batch`, waiting at most `max_wait` s to fill one.

        A batch counts as handled when the consumer asks for the next one (or stops iterating),
        which is what `join()` waits for. Iteration ends after `close()` once the queue is empty.
        """
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is _CLOSED:
                self._queue.task_done()
                return
            batch: list[str] = [first]  # type: ignore[list-item]
            stop = False
            deadline = loop.time() + max_wait
            while len(batch) < max_batch:
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        item = self._queue.get_nowait()
                    else:
                        # Queue.get is cancellation-safe: a timeout never loses an id.
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if item is _CLOSED:
                    self._queue.task_done()
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            try:
                yield batch
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    async def join(self) -> None:
        """Wait until every id published so far was handed out in a batch and handled."""
        await self._queue.join()

    def drain(self) -> list[str]:
        """Take every id still waiting, without a consumer (marks them handled)."""
        ids: list[str] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return ids
            self._queue.task_done()
            if item is not _CLOSED:
                ids.append(item)  # type: ignore[arg-type]

    def pending(self) -> int:
        """Ids published and not yet handed out."""
        return self._queue.qsize()

    async def close(self) -> None:
        """Refuse new ids; a running `batches()` ends once what is queued was handed out."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSED)
