"""ingest as a function: it wires its parts together and holds their subscriptions.

- the router (`router.py`): `transcription.requested` → `transcribe.<model>`, and language
  hand-overs;
- the projector (`jobs.py`): lifecycle events → job records;
- the webhook deliverer (`webhooks/`): a signed call when a job ends;
- the bucket drop and its reconcile (`uploads/`): a file dropped into the uploads bucket → a job;
- the retention sweeper (`retention.py`): expired jobs deleted;
- the HTTP API (`api/`), over the gateway (`gateway.py`: admission, submission, job views).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fastapi import FastAPI
from minio import Minio

from events import catalogue, metrics, storage
from events.runtime.function import Health, Runtime, Subscription
from events.settings import Settings
from events.tasks import cancel_and_wait
from functions.ingest import NAME
from functions.ingest.admission import Admission
from functions.ingest.api import create_app
from functions.ingest.gateway import Gateway
from functions.ingest.jobs import JobStore, Projector
from functions.ingest.links import ResultLinks
from functions.ingest.retention import Sweeper
from functions.ingest.router import Router
from functions.ingest.uploads.drop import BucketDrop
from functions.ingest.uploads.notification import decode_notification
from functions.ingest.uploads.reconcile import Reconciler
from functions.ingest.webhooks.delivery import WebhookDeliverer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Started:
    """The parts that need the bus (the job store, the publisher): made at start."""

    jobs: JobStore
    gateway: Gateway
    router: Router
    projector: Projector
    webhooks: WebhookDeliverer
    uploads: BucketDrop
    reconciler: Reconciler
    sweeper: Sweeper


class Ingest:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Minio = storage.client(settings)
        self.links = ResultLinks(self.store, settings.result_link_expiry_s)
        self.admission = Admission.from_settings(settings)
        self._started: _Started | None = None
        self._reconcile: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._app = create_app(settings, self.admission, self._gateway)

    def _gateway(self) -> Gateway | None:
        return self._started.gateway if self._started is not None else None

    def _parts(self) -> _Started:
        if self._started is None:
            raise RuntimeError("ingest has not started: its handlers need the job store and the bus")
        return self._started

    @property
    def subscriptions(self) -> list[Subscription]:
        """The router, the projector, the webhook deliverer and the bucket drop (after start)."""
        parts = self._parts()
        return [
            Subscription(catalogue.INGEST_ROUTER, parts.router.route),
            # A job's end projected: its duration (the metrics middleware knows no function).
            Subscription(catalogue.INGEST_PROJECTOR, parts.projector.project, observe=metrics.job_ended),
            Subscription(catalogue.INGEST_WEBHOOKS, parts.webhooks.deliver),
            Subscription(catalogue.INGEST_UPLOADS, parts.uploads.handle, decode=decode_notification),
        ]

    async def start(self, runtime: Runtime) -> None:
        jobs = await JobStore.open(runtime)
        await asyncio.to_thread(storage.ensure_buckets, self.store, self.settings)
        gateway = Gateway(self.settings, jobs, runtime.publisher, self.store, self.links)
        uploads = BucketDrop(self.settings.uploads_bucket, gateway)
        self._started = _Started(
            jobs=jobs,
            gateway=gateway,
            router=Router(self.settings, self.admission, jobs),
            projector=Projector(jobs),
            webhooks=WebhookDeliverer(self.settings, jobs, self.links, self.admission.guard),
            uploads=uploads,
            reconciler=Reconciler(uploads, self.store, self.settings.uploads_reconcile_interval_s),
            sweeper=Sweeper(gateway, self.settings.results_ttl_s, self.settings.retention_sweep_interval_s),
        )
        if self.settings.api_key is None:
            log.warning(
                "the API accepts requests without an API key (set API_KEY); "
                "bind it only to loopback (API_HOST=%s)",
                self.settings.api_host,
            )
        if self.settings.uploads_reconcile_interval_s > 0:
            self._reconcile = asyncio.create_task(self._started.reconciler.reconcile_forever())
        if self.settings.retention_sweep_interval_s > 0:
            self._sweep = asyncio.create_task(self._started.sweeper.sweep_forever())

    async def stop(self) -> None:
        await cancel_and_wait([self._reconcile, self._sweep])
        if self._started is not None:
            await self._started.jobs.close()  # the job index's reader

    def health(self) -> Health:
        return Health(ready=self._started is not None)

    def app(self) -> FastAPI:
        return self._app


def create(settings: Settings) -> Ingest:
    return Ingest(settings)
