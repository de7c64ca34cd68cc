"""Stopping asyncio tasks for certain.

On Python 3.11 a `Task.cancel()` can be lost. A task that awaits another task hands the cancel
on to it; if that inner task is an `asyncio.wait_for` whose awaited future completed in the same
step, `wait_for` returns the result instead of raising (CPython gh-86296, fixed in 3.12), the
outer task gets a value, not `CancelledError`, and runs on. nats-py's `Subscription.next_msg`
(under every JetStream `fetch`) is such an inner task, so a loop that fetches from a busy
stream swallows a cancel whenever a message arrives at that moment: measured here, one stop in
ten of a job index following a bucket under writes, and one CI run hung 600 s in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# Seconds between cancels of a task that is still running (its last cancel was lost).
_RECANCEL_S = 0.05


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any] | None]) -> None:
    """Cancel each of `tasks` (None: skipped) and return once every one has ended, cancelling
    again every `_RECANCEL_S` seconds any that runs on (see the module's docstring). What the
    tasks raised is retrieved and dropped: a caller that needs it awaits the task itself first.
    Never raises for the tasks; a cancel of the caller stops the wait (the tasks stay cancelled)."""
    pending = {task for task in tasks if task is not None}
    everything = list(pending)
    pending = {task for task in pending if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_S)
    for task in everything:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at collection
