"""Run one function as a process: `klipnote serve NAME [--transport jetstream|http]`.

A function lives in `functions/<name>/function.py` and exposes `create(settings) -> Function`;
adding a model function needs no registry entry here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Iterator
from typing import Literal

import uvicorn

from events import logs, metrics, tracing
from events.runtime.function import Function
from events.runtime.http import health_app, receiver_app
from events.runtime.jetstream import JetStreamHost
from events.settings import Settings

Transport = Literal["jetstream", "http"]


def load_function(name: str, settings: Settings) -> Function:
    module = importlib.import_module(f"functions.{name}.function")
    function: Function = module.create(settings)
    return function


class _Server(uvicorn.Server):
    # The host owns SIGTERM/SIGINT (graceful drain); uvicorn must not swallow them.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(name: str, settings: Settings, transport: Transport = "jetstream") -> None:
    function = load_function(name, settings)
    host = JetStreamHost(function, settings, consume=transport == "jetstream")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, host.stop)

    extra = function.app()
    app = receiver_app(host) if transport == "http" else health_app(host, extra)
    port = settings.api_port if extra is not None else settings.health_port
    host_address = settings.api_host if extra is not None else settings.health_host
    server = _Server(uvicorn.Config(app, host=host_address, port=port, log_config=None, access_log=False))
    await host.connect()
    http_task = asyncio.create_task(server.serve())
    try:
        await host.run()
    finally:
        server.should_exit = True
        await http_task


def main(name: str, transport: Transport = "jetstream") -> None:
    logs.configure(name)
    # Telemetry before the function is built: its tracers and meters come from these providers.
    tracing.configure(name)
    metrics.configure(name)
    asyncio.run(serve(name, Settings(), transport))
