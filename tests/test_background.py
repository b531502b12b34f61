"""BackgroundTasks.drain: returns once every task is done, even before their done-callbacks ran."""

import asyncio
import threading

from shared.background import BackgroundTasks


def _finishes_within(seconds: float, scenario) -> bool:
    thread = threading.Thread(target=lambda: asyncio.run(scenario()), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_drain_returns_when_a_finished_task_is_still_in_the_set():
    async def scenario():
        tasks = BackgroundTasks()

        async def quick():
            return None

        task = tasks.spawn(quick())
        await asyncio.sleep(0)  # the task ran and finished; its done-callback is only scheduled
        assert task.done()
        await tasks.drain()  # a gather loop spins here forever: gather on done tasks never yields
        assert tasks.pending == 0

    assert _finishes_within(5, scenario), "drain spun on a finished task"


async def test_drain_waits_for_tasks_spawned_while_draining():
    tasks = BackgroundTasks()
    done: list[str] = []

    async def second():
        await asyncio.sleep(0.01)
        done.append("second")

    async def first():
        await asyncio.sleep(0.01)
        tasks.spawn(second())
        done.append("first")

    tasks.spawn(first())
    assert tasks.pending == 1
    await tasks.drain()
    assert done == ["first", "second"] and tasks.pending == 0
