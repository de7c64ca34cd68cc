"""Retention: a sweeper in ingest deletes each job whose time is up, through the API's own delete
(`Gateway.delete`: upload, results, events and record, a tombstone left).

A job's time is its record's `expires_at`, which the projector sets when the job ends
(`jobs.expiry`: the request's `delete_after` seconds after its end, else RESULTS_TTL_S; neither:
kept for ever). A job that ended before retention existed has no `expires_at` and is kept: an
upgrade must not delete data its operator never agreed to expire (delete such jobs with the API,
or they keep until deleted). Every RETENTION_SWEEP_INTERVAL_S seconds the sweeper asks the job
index for the jobs expired by then (`JobIndex.expired`: a range of a list sorted by expiry, so
a round costs the expired jobs, not every job) and deletes them. Several ingest replicas may
sweep at once: a delete is idempotent, so two of them deleting one job remove the same things
twice and leave one tombstone.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Protocol

from events.models import utcnow
from functions.ingest.schema import JobRecord

log = logging.getLogger(__name__)


class Deleter(Protocol):
    """What the sweeper needs of the gateway: the expired jobs and the one delete."""

    async def expired_jobs(self, now: datetime) -> list[str]: ...

    async def delete(self, job_id: str) -> bool: ...


def expires_at(record: JobRecord) -> datetime | None:
    """When `record`'s job is deleted: the `expires_at` the projector set when the job ended
    (`jobs.expiry`); None for a job still running, kept for ever, or ended before retention
    existed (no `expires_at`: never deleted by a sweep it was not told about)."""
    if not record.finished:
        return None
    return record.expires_at


class Sweeper:
    """Deletes the expired jobs of `gateway` every `interval_s` seconds (RETENTION_SWEEP_INTERVAL_S).
    `results_ttl_s` (RESULTS_TTL_S) is kept for the record: each job's `expires_at` was fixed
    from it when the job ended."""

    def __init__(self, gateway: Deleter, results_ttl_s: int, interval_s: float) -> None:
        self.gateway = gateway
        self.results_ttl_s = results_ttl_s
        self.interval_s = interval_s

    async def sweep_once(self, now: datetime | None = None) -> list[str]:
        """One round: delete every job expired at `now` (default: the current UTC time); the ids
        deleted. A job whose delete fails (the store or the bus away) is logged and left for the
        next round; listing the jobs raises what the bus raises."""
        now = now or utcnow()
        deleted = []
        for job_id in await self.gateway.expired_jobs(now):
            try:
                await self.gateway.delete(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("retention could not delete job %s, retrying next round: %s", job_id, error)
                continue
            log.info("retention deleted job %s (expired by %s)", job_id, now.isoformat())
            deleted.append(job_id)
        return deleted

    async def sweep_forever(self) -> None:
        """Sweep every interval; a round that fails (NATS down) waits for the next."""
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("retention sweep failed, retrying in %.0fs: %s", self.interval_s, error)
            await asyncio.sleep(self.interval_s)
