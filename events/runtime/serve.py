"""Run one function as a process: `klipnote serve NAME [--transport jetstream|http]`.

A function lives in `functions/<name>/function.py` and exposes `create(settings) -> Function`;
adding a model function needs no registry entry here.

The process is composed of separate hosts: always the HTTP host (health probes, plus the
function's own routes when it has some, on API_HOST:API_PORT, else on HEALTH_HOST:HEALTH_PORT);
then under the `jetstream` transport the JetStream host (pull consumers), under `http` the HTTP
host's CloudEvents receiver instead (Knative Eventing pushes the events).
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from typing import Literal

from events import logs, metrics, tracing
from events.runtime.function import Function
from events.runtime.http import HttpHost
from events.runtime.jetstream import JetStreamHost
from events.runtime.process import FunctionProcess, Host
from events.settings import Settings

Transport = Literal["jetstream", "http"]


def load_function(name: str, settings: Settings) -> Function:
    module = importlib.import_module(f"functions.{name}.function")
    function: Function = module.create(settings)
    return function


async def serve(name: str, settings: Settings, transport: Transport = "jetstream") -> None:
    function = load_function(name, settings)
    process = FunctionProcess(function, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.stop)

    routes = function.app()
    http = HttpHost(process, receiver=transport == "http", routes=routes)
    if routes is not None:
        address = (settings.api_host, settings.api_port)
    else:
        address = (settings.health_host, settings.health_port)
    hosts: list[Host] = [JetStreamHost(process)] if transport == "jetstream" else []
    await process.connect()
    async with http.serving(*address):
        await process.run(hosts)


def main(name: str, transport: Transport = "jetstream") -> None:
    logs.configure(name)
    # Telemetry before the function is built: its tracers and meters come from these providers.
    tracing.configure(name)
    metrics.configure(name)
    asyncio.run(serve(name, Settings(), transport))
