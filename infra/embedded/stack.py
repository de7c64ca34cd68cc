"""The embedded stack: one machine, no containers.

Starts nats-server with JetStream and SeaweedFS (`weed mini`) bound to 127.0.0.1
(`infra.embedded.servers`), provisions streams, consumers, KV and buckets with the same
idempotent entry point production uses (`events.provision`), then runs each function as a local
process (`klipnote serve NAME`), and with `UPLOADS_WATCH` the stand-in for MinIO's bucket notifier
(`infra.embedded.notifier_standin`), so a file dropped into the uploads bucket starts its job at
once. Children die with the stack (PR_SET_PDEATHSIG) and are reaped on
stop (`infra.embedded.processes`). Ports: `infra.embedded.ports`; crashes and outages for fault
tests: `infra.embedded.faults`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import TracebackType

from events import provision
from events.settings import Settings
from infra.embedded.faults import FaultInjection
from infra.embedded.ports import Ports, free_port, port_in_use
from infra.embedded.processes import NOTIFIER_STANDIN, Child, Processes, StackError, function_env
from infra.embedded.servers import SERVERS

# The names tests and the CLI import from here.
__all__ = ["Child", "EmbeddedStack", "Ports", "StackError", "free_port", "port_in_use"]


class EmbeddedStack(FaultInjection):
    """nats-server, SeaweedFS and the function processes of one data dir (`<data_dir>/logs`
    holds a log per child). `settings` are copied with the stack's endpoints; `functions`
    defaults to ingest, optimize and the enabled models; `extra_env` is added to every
    function's environment. `nats_url` (comma separated URLs, e.g. a cluster's members) points
    the stack at a NATS it does not run: no nats-server is started, and provisioning and every
    function use that one. A context manager: `start` on enter, `stop` on exit."""

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: Ports | None = None,
        settings: Settings | None = None,
        functions: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        nats_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.ports = ports or Ports()
        self.external_nats = nats_url is not None
        base = settings or Settings()
        self.settings = base.model_copy(
            update={
                "nats_url": nats_url or f"nats://127.0.0.1:{self.ports.nats}",
                "s3_endpoint": f"127.0.0.1:{self.ports.s3}",
                "s3_secure": False,
                "api_host": "127.0.0.1",
                "api_port": self.ports.api,
            }
        )
        self.functions = (
            functions if functions is not None else ["ingest", "optimize", *self.settings.enabled_models]
        )
        for name in self.functions:
            self.ports.health.setdefault(name, free_port() if name != "ingest" else self.ports.api)
        self.extra_env = extra_env or {}
        self.processes = Processes(data_dir / "logs")

    # -- what clients need ------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def env(self) -> dict[str, str]:
        """The environment a client of this stack runs with: every setting, the secrets included,
        so a client sees exactly the configuration the stack was given. A function process gets
        this less the secrets it does not need (`spawn_function`); a model function turns the
        model hubs off itself (functions/transcriber/hub.py)."""
        return {**self.settings.to_env(), **self.extra_env}

    @property
    def children(self) -> list[Child]:
        """The running children: the servers, then the functions."""
        return self.processes.children

    def child(self, name: str) -> Child:
        return self.processes.child(name)

    def failed_children(self) -> list[Child]:
        return self.processes.exited()

    def health_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.health[name]}/health/readiness"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        """Servers, provisioning, then every function, each waited on until ready. StackError
        when a port is taken (before anything starts), a child exits, or `timeout` seconds pass;
        whatever started is stopped again."""
        busy = [port for port in self.ports.all() if port_in_use(port)]
        if busy:
            raise StackError(f"ports already in use on 127.0.0.1: {busy} (is another stack running?)")
        self.processes.log_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        # The stand-in announces every file stored from now on, however late it subscribes.
        started_ns = time.time_ns()
        try:
            for name, server in SERVERS.items():
                if name == "nats" and self.external_nats:
                    continue
                server.start(self.processes, self.data_dir, self.ports, self.settings, deadline)
            self.provision()
            if self.settings.uploads_watch:
                self.spawn_notifier_standin(started_ns)
            for name in self.functions:
                self.spawn_function(name)
            for name in self.functions:
                self.wait_ready(name, deadline)
        except BaseException:
            self.stop()
            raise

    def provision(self) -> None:
        """`klipnote provision` on this stack: streams, consumers, KV and buckets (idempotent)."""
        provision.run(self.settings)

    def stop(self, timeout: float = 40.0) -> None:
        """Functions and the notifier stand-in first (they drain through NATS), then the servers;
        reap every child."""
        clients = {*self.functions, NOTIFIER_STANDIN}
        functions = [c for c in self.children if c.name in clients]
        servers = [c for c in self.children if c.name not in clients]
        self.processes.stop([functions, servers], timeout)

    def spawn_function(self, name: str) -> None:
        """Start `klipnote serve NAME` with the stack's environment and its own health port, and
        of the secret settings only those it needs (`infra.embedded.processes.SECRETS`)."""
        env = {**os.environ, **self.env(), "HEALTH_PORT": str(self.ports.health[name])}
        self.processes.spawn(
            name, [sys.executable, "-m", "infra.cli", "serve", name], env=function_env(name, env)
        )

    def spawn_notifier_standin(self, since_ns: int | None = None) -> None:
        """Start the stand-in for MinIO's bucket notifier (child `notifier-standin`), following the
        filer from where it left off (`<data_dir>/notifier-standin.position`), or else from
        `since_ns` (ns since the epoch; default now). Of the secrets it gets the S3 key only."""
        command = [
            sys.executable,
            "-m",
            "infra.embedded.notifier_standin",
            "--filer",
            f"127.0.0.1:{self.ports.filer}.{self.ports.filer_grpc}",
            "--position",
            str(self.data_dir / f"{NOTIFIER_STANDIN}.position"),
        ]
        if since_ns is not None:
            command += ["--since-ns", str(since_ns)]
        env = {**os.environ, **self.env()}
        self.processes.spawn(NOTIFIER_STANDIN, command, env=function_env(NOTIFIER_STANDIN, env))

    def wait_ready(self, name: str, deadline: float | None = None) -> None:
        """Until function `name` answers its readiness probe (`deadline` in `time.monotonic()`
        seconds, default 180 s from now); StackError otherwise."""
        self.processes.wait_http(name, self.health_url(name), deadline or time.monotonic() + 180)

    def wait(self) -> Child:
        """Block until a child exits (it should not): returns it, for the caller to report."""
        return self.processes.wait_any()
