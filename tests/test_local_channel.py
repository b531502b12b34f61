import asyncio

import pytest

from shared.adapters.local_channel import LocalEventChannel


async def consume(channel, handled, batches_seen, **kw):
    async for batch in channel.batches(**kw):
        batches_seen.append(list(batch))
        await asyncio.sleep(0.001)  # the handler takes a moment
        handled.extend(batch)


async def test_published_ids_arrive_in_batches_and_join_waits_for_handling():
    channel = LocalEventChannel()
    handled, seen = [], []
    consumer = asyncio.create_task(consume(channel, handled, seen, max_batch=10, max_wait=0.02))
    for i in range(25):
        await channel.publish(f"rid-{i}")
    await asyncio.wait_for(channel.join(), 2)
    assert handled == [f"rid-{i}" for i in range(25)]
    assert max(len(b) for b in seen) == 10
    assert len(seen) == 3
    await channel.close()
    await asyncio.wait_for(consumer, 2)  # iteration ends after close


async def test_a_partial_batch_is_delivered_after_max_wait():
    channel = LocalEventChannel()
    handled, seen = [], []
    consumer = asyncio.create_task(consume(channel, handled, seen, max_batch=100, max_wait=0.01))
    await channel.publish("only")
    await asyncio.wait_for(channel.join(), 2)
    assert seen == [["only"]]
    consumer.cancel()


async def test_same_id_published_twice_is_delivered_twice():
    channel = LocalEventChannel()
    await channel.publish("rid")
    await channel.publish("rid")
    assert channel.published_count == 2
    assert channel.drain() == ["rid", "rid"]
    await asyncio.wait_for(channel.join(), 1)


async def test_join_does_not_return_before_the_batch_is_handled():
    channel = LocalEventChannel()
    release = asyncio.Event()
    handled = []

    async def slow_consumer():
        async for batch in channel.batches(max_wait=0):
            await release.wait()
            handled.extend(batch)

    task = asyncio.create_task(slow_consumer())
    await channel.publish("a")
    joiner = asyncio.create_task(channel.join())
    await asyncio.sleep(0.05)
    assert not joiner.done() and handled == []
    release.set()
    await asyncio.wait_for(joiner, 1)
    assert handled == ["a"]
    task.cancel()


async def test_a_failing_consumer_does_not_hang_join():
    channel = LocalEventChannel()

    async def failing():
        async for _ in channel.batches(max_wait=0):
            raise RuntimeError("handler crashed")

    await channel.publish("a")
    with pytest.raises(RuntimeError):
        await failing()
    await asyncio.wait_for(channel.join(), 1)


async def test_publish_after_close_is_refused():
    channel = LocalEventChannel()
    await channel.close()
    with pytest.raises(RuntimeError):
        await channel.publish("late")
