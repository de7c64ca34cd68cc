"""Run one function as a process: `klipnote serve NAME [--transport jetstream|http]`.

A function lives in `functions/<name>/function.py` and exposes `create(settings) -> Function`;
adding a model function needs no registry entry here.

The process is composed of separate hosts: always the HTTP host (health probes and Prometheus's
`/metrics`, plus the function's own routes when it has some, on API_HOST:API_PORT, else on
HEALTH_HOST:HEALTH_PORT);
then under the `jetstream` transport the JetStream host (pull consumers), under `http` the HTTP
host's CloudEvents receiver instead (Knative Eventing pushes the events).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import pkgutil
import signal
from typing import Literal

from events import logs, metrics, tracing
from events.errors import CodedError
from events.runtime.function import Function
from events.runtime.http import HttpHost
from events.runtime.jetstream import JetStreamHost
from events.runtime.process import FunctionProcess, Host
from events.settings import Settings

Transport = Literal["jetstream", "http"]


class UnknownFunction(CodedError):
    """`klipnote serve NAME` for a NAME with no `functions/<NAME>/function.py` in this install."""

    def __init__(self, name: str) -> None:
        known = ", ".join(installed()) or "none"
        super().__init__("function_unknown", f"no function {name!r} here (this install has: {known})")


class ReceiverUnguarded(CodedError):
    """`klipnote serve NAME --transport http` for a function with its own public routes (ingest's
    API) and no RECEIVER_TOKEN: its CloudEvents receiver would share the public port, and anyone
    who reaches the API could push any event (a `completed` naming any object, say) past the key."""

    def __init__(self, name: str) -> None:
        super().__init__(
            "receiver_unguarded",
            f"{name} serves a public API: under the HTTP transport its CloudEvents receiver shares that "
            "port, so set RECEIVER_TOKEN (docs/security.md)",
        )


def installed() -> list[str]:
    """The functions this install (an image ships its own) can serve, by name."""
    # Found by name, as `load_function` imports them: the runtime depends on no function.
    spec = importlib.util.find_spec("functions")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return sorted(
        info.name
        for info in pkgutil.iter_modules(folders)
        if info.ispkg and importlib.util.find_spec(f"functions.{info.name}.function") is not None
    )


def load_function(name: str, settings: Settings) -> Function:
    """The function `functions.<name>.function.create(settings)`. Raises UnknownFunction when
    there is none; an import error inside the function (a missing dependency) propagates."""
    if not name.isidentifier():
        raise UnknownFunction(name)
    try:
        module = importlib.import_module(f"functions.{name}.function")
    except ModuleNotFoundError as error:
        if error.name not in (f"functions.{name}", f"functions.{name}.function"):
            raise
        raise UnknownFunction(name) from None
    function: Function = module.create(settings)
    return function


async def serve(name: str, settings: Settings, transport: Transport = "jetstream") -> None:
    function = load_function(name, settings)
    process = FunctionProcess(function, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.stop)

    routes = function.app()
    if transport == "http" and routes is not None and settings.receiver_token is None:
        raise ReceiverUnguarded(name)
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
