"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that verifies every call's
Standard Webhooks signature with the `standardwebhooks` library, and answers from a script."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # answer only after the sender has given up


@dataclass
class Hit:
    at: float
    path_qs: str
    headers: dict[str, str]
    payload: Any  # the verified payload, or None when the signature did not verify


class Receiver:
    """An HTTP server on 127.0.0.1 that verifies each call's signature; per hook name a script of
    replies (then 200)."""

    def __init__(self, secret: str) -> None:
        self.hits: dict[str, list[Hit]] = {}
        self.scripts: dict[str, list[Reply]] = {}
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()
        self.url = ""
        self._verifier = Webhook(secret)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = self._verifier.verify(body, headers)
        except Exception:
            payload = None
        async with self.changed:
            self.hits.setdefault(name, []).append(Hit(time.monotonic(), request.path_qs, headers, payload))
            self.changed.notify_all()
        script = self.scripts.get(name) or []
        reply = script.pop(0) if script else Reply()
        if reply.hang:
            await self.release.wait()
        return web.Response(status=reply.status, headers=reply.headers)

    async def wait_hits(self, name: str, count: int, timeout: float = 15) -> list[Hit]:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.hits.get(name, [])) >= count)
            return list(self.hits[name])


@contextlib.asynccontextmanager
async def serving(secret: str, port: int = 0) -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 (hooks at `<url>/hook/<name>`), on `port` or a free one
    (a port chosen in advance lets a receiver come up late, after refused connections)."""
    hooks = Receiver(secret)
    app = web.Application()
    app.router.add_post("/hook/{name}", hooks.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hooks.url = f"http://127.0.0.1:{port}"
    try:
        yield hooks
    finally:
        hooks.release.set()
        await runner.cleanup()


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that speaks no HTTP of its own: each connection gets `reply`
    (raw bytes, e.g. a header no HTTP library would write) once its request has arrived, or
    nothing at all (`reply=None`: accepts and never answers, a black-holed receiver)."""

    reply: bytes | None
    url: str = ""
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def hang_up(self) -> None:
        """Close every connection (a caller still waiting for an answer gets none, at once)."""
        for writer in self.writers:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        self.connected.set()
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request's head; its body does not matter
            if self.reply is None:
                await reader.read()  # until the caller gives up and closes
                return
            writer.write(self.reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def raw_serving(reply: bytes | None) -> AsyncIterator[RawServer]:
    """A RawServer listening on a free port of 127.0.0.1 (its `url` is `http://127.0.0.1:<port>`)."""
    raw = RawServer(reply)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield raw
    finally:
        server.close()
        raw.hang_up()  # Python 3.11's server leaves its connections open
        await server.wait_closed()
