"""Fire-and-forget tasks that shutdown (and tests) can still wait for."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    """Holds a reference to each task until it is done (the loop keeps only weak ones)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        return sum(not t.done() for t in self._tasks)

    async def drain(self) -> None:
        """Wait until no task is left, including tasks spawned meanwhile.

        Finished tasks are dropped here rather than left to their done-callbacks: those run only
        when the loop gets control, and gathering tasks that are all done returns without giving
        it (Python 3.12+), so a loop over `gather` can spin forever on a finished task.
        """
        while True:
            self._tasks.difference_update([t for t in self._tasks if t.done()])
            if not self._tasks:
                return
            await asyncio.wait(list(self._tasks))
