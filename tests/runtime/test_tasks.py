"""Stopping tasks whose cancel Python 3.11 can lose (events/tasks.py)."""

from __future__ import annotations

import asyncio
import sys

from events.tasks import cancel_and_wait


async def follow(queue: asyncio.Queue[int], got: list[int]) -> None:
    """As a reader following a stream does: each message through an inner task around
    `asyncio.wait_for`, the shape of nats-py's `Subscription.next_msg`."""
    while True:
        got.append(await asyncio.create_task(asyncio.wait_for(queue.get(), 60)))


async def blocked_follower() -> tuple[asyncio.Task[None], asyncio.Queue[int], list[int]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    got: list[int] = []
    task = asyncio.create_task(follow(queue, got))
    while not queue._getters:  # type: ignore[attr-defined]  # noqa: ASYNC110 (no event inside wait_for to await)
        await asyncio.sleep(0)
    return task, queue, got


async def test_a_cancel_that_meets_a_message_is_lost_on_this_python_and_made_again() -> None:
    """A message arriving in the step the cancel does: the plain cancel is swallowed (3.11) and
    the task reads on; `cancel_and_wait` cancels again until it has ended. Before, a job index
    stopped under writes went on reading for ever (one stop in ten here; one CI run hung)."""
    task, queue, got = await blocked_follower()
    queue.put_nowait(1)
    task.cancel()
    await asyncio.wait({task}, timeout=0.2)
    if sys.version_info < (3, 12):  # CPython gh-86296: fixed in 3.12
        assert not task.done() and got == [1], "the cancel was not lost: the test no longer shows why"
    while not queue._getters:  # type: ignore[attr-defined]  # noqa: ASYNC110 (as in blocked_follower)
        await asyncio.sleep(0)

    # cancel_and_wait's own first cancel meets a message too: only a cancel made again ends it.
    queue.put_nowait(2)
    async with asyncio.timeout(10):  # a bound on a hang (a cancel made once), not a timing
        await cancel_and_wait([task])

    assert task.cancelled()
    if sys.version_info < (3, 12):
        assert got == [1, 2]


async def test_tasks_already_ended_or_none_are_passed_over_and_their_errors_retrieved() -> None:
    async def fail() -> None:
        raise ValueError("ended badly")

    failed = asyncio.create_task(fail())
    await asyncio.wait({failed})
    task, _, _ = await blocked_follower()

    await cancel_and_wait([failed, None, task])

    assert task.cancelled() and isinstance(failed.exception(), ValueError)
