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
