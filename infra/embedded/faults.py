"""Fault injection for the embedded stack (tests/system/test_chaos.py): a function crashing
(SIGKILL) and coming back, a server's outage (stopped in place, started again on the same ports
and data dir). Mixed into `EmbeddedStack`, whose processes, ports and settings it acts on."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path

from events.settings import Settings
from infra.embedded.ports import Ports
from infra.embedded.processes import Processes
from infra.embedded.servers import SERVERS


class FaultInjection(ABC):
    """Crashes and outages on demand, for fault tests."""

    data_dir: Path
    ports: Ports
    settings: Settings
    processes: Processes

    @abstractmethod
    def spawn_function(self, name: str) -> None:
        """Start the process of function `name` (without waiting for it)."""

    @abstractmethod
    def wait_ready(self, name: str, deadline: float | None = None) -> None:
        """Until function `name` is ready (`deadline` in `time.monotonic()` seconds)."""

    def kill(self, name: str) -> None:
        """SIGKILL one function process, as a crash would."""
        self.processes.end(self.processes.child(name), kill=True)

    def restart(self, name: str) -> None:
        """Start a killed or stopped function again and wait until it is ready."""
        self.spawn_function(name)
        self.wait_ready(name)

    def stop_server(self, name: str, *, kill: bool = False, timeout: float = 40.0) -> None:
        """Stop nats-server ("nats") or SeaweedFS ("seaweedfs") in place, as an outage would
        (SIGTERM, or SIGKILL with `kill`; SIGKILL after `timeout` seconds anyway); its ports and
        data dir stay the stack's."""
        self.processes.end(self.processes.child(SERVERS[name].child), kill=kill, timeout=timeout)

    def start_server(self, name: str, timeout: float = 120.0) -> None:
        """Start a stopped server again on the same ports and data dir; return once it answers
        (StackError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        SERVERS[name].start(self.processes, self.data_dir, self.ports, self.settings, deadline)
