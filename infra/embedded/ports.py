"""The ports of an embedded stack, all on 127.0.0.1: the fixed defaults a person's `klipnote up`
binds, or free ones for tests and stacks running side by side."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field, fields

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
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Ports:
    """Every port the stack binds on 127.0.0.1; `health` maps a function name to the port of its
    health endpoints (ingest's is the API's)."""

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
        """All ports chosen free now (`free_port`): for tests and stacks running side by side."""
        ports = cls()
        for f in fields(cls):
            if f.name != "health":
                setattr(ports, f.name, free_port())
        return ports

    def all(self) -> list[int]:
        """Every port, the functions' health ports included."""
        return [getattr(self, f.name) for f in fields(self) if f.name != "health"] + list(
            self.health.values()
        )
