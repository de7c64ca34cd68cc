"""Canceled jobs, as a model function sees them: ingest publishes `transcription.canceled.<job>`
on `POST /v1/jobs/{id}/cancel`, and the model reads the JOBS stream for it
(`lifecycle.was_canceled`: the store's current view, not ingest's record, which only ingest reads).

- Before a job starts (`TranscriptionFunction.handle`, before the media is fetched): a canceled
  job is acknowledged and nothing is done, so a job canceled while queued never reaches a model.
- While it runs (`Cancellations.wait`, beside the model's thread): one read every
  `CANCEL_CHECK_INTERVAL_S` seconds; on a cancel the model's thread is told to stop at its next
  report (a segment or a progress fraction, a window at most) and the run ends with `JobCanceled`,
  publishing neither `transcribed` nor `failed`.

A read that fails (NATS away a moment) is no cancel: the job goes on and the next read tries
again. A model that finished before it saw the cancel publishes `transcribed`; optimize then
writes nothing for the canceled job (functions/optimize/function.py).
"""

from __future__ import annotations

import asyncio
import logging

from events import lifecycle

log = logging.getLogger("functions.transcriber")


class JobCanceled(Exception):
    """The job was canceled while it ran: the run ends without `transcribed` or `failed`."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was canceled")
        self.job_id = job_id


class Cancellations:
    """Reads whether jobs were canceled, from `bus` (the function's `Runtime`; None before the
    function started, or a runtime without JetStream, as the test harness has: then no job is
    ever canceled). `interval_s`: seconds between two reads of one running job."""

    def __init__(self, bus: lifecycle.LastEvent | None, interval_s: float) -> None:
        self.bus = bus
        self.interval_s = interval_s

    async def canceled(self, job_id: str) -> bool:
        """Whether the job was canceled; False when the read fails (logged; the job goes on)."""
        if self.bus is None:
            return False
        try:
            return await lifecycle.was_canceled(self.bus, job_id)
        except RuntimeError:  # a runtime without JetStream (the harness): nothing to read
            self.bus = None
            return False
        except Exception as error:  # NATS away a moment: the next read tries again
            log.warning("could not read whether job %s was canceled: %s", job_id, error)
            return False

    async def wait(self, job_id: str) -> JobCanceled:
        """Once the job is canceled (a read at once, then one every `interval_s` seconds): the
        exception that ends its run. Never returns for a job nobody cancels: the caller cancels
        this wait when the run ends."""
        while True:
            if await self.canceled(job_id):
                return JobCanceled(job_id)
            await asyncio.sleep(self.interval_s)  # a read of the bus, not a wait for a local event
