"""The embedded stack starts and stops repeatedly and leaves no process or port behind."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports, StackError, port_in_use


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names `text` (our data dir): none may outlive a stop."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                line for line in (entry / "status").read_text().splitlines() if line.startswith("State:")
            )
        except (OSError, StopIteration):
            continue
        if text in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


def test_the_stack_starts_and_stops_repeatedly_without_leftovers(tmp_path: Path, model_cache: Path) -> None:
    settings = Settings(model_cache_dir=model_cache, enabled_models=["whisperx"])
    for cycle in range(2):
        ports = Ports.free()
        stack = EmbeddedStack(tmp_path / "stack", ports=ports, settings=settings)
        with stack:
            children = [child.process for child in stack.children]
            assert {child.name for child in stack.children} == {
                "nats-server",
                "seaweedfs",
                "ingest",
                "optimize",
                "whisperx",
                "notifier-standin",  # UPLOADS_WATCH, on by default
            }
            ready = httpx.get(f"{stack.api_url}/health/readiness", timeout=5)
            assert ready.status_code == 200, f"cycle {cycle}"
        assert all(process.returncode is not None for process in children)
        assert not processes_mentioning(str(tmp_path)), f"cycle {cycle}: processes left behind"
        assert not [port for port in ports.all() if port_in_use(port)], f"cycle {cycle}: ports open"


def test_a_busy_port_is_reported_before_anything_starts(tmp_path: Path, model_cache: Path) -> None:
    ports = Ports.free()
    blocker = __import__("socket").socket()
    blocker.bind(("127.0.0.1", ports.nats))
    blocker.listen()
    try:
        stack = EmbeddedStack(tmp_path, ports=ports, settings=Settings(model_cache_dir=model_cache))
        with pytest.raises(StackError, match="already in use"):
            stack.start()
        assert stack.children == []
    finally:
        blocker.close()
