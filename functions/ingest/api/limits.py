"""The API's door: who may send a body, how big, how slowly; and how many live event streams.

`RequestGuard` is pure ASGI middleware in front of every route (issue 15, findings 1 and 8).
FastAPI reads and spools a whole multipart body before any dependency runs, so a key checked by
a dependency is checked after the upload has been written to disk, and `MAX_UPLOAD_BYTES` after
it has all arrived. The guard acts before the app reads a byte:

1. a protected route (everything under `/v1/` but the published schemas) without
   `Authorization: Bearer <API_KEY>` is answered 401 `unauthorized` (the body
   `dependencies.authorize` answers; the key compared in constant time) with the body unread
   (on the OpenAI-compatible routes, a body declared no larger than `API_MAX_BODY_BYTES` is read
   and discarded first, so that their clients can read the answer: `_drain_small_body`);
2. a `Content-Length` over the route's limit is answered 413 at once;
3. a body streamed without one (chunked) is counted as it arrives and answered 413 as soon as it
   passes the limit;
4. a body whose next part does not come within `API_BODY_TIMEOUT_S` (a slowloris) is answered
   408 `body_timeout`.

Limits, bytes: the uploads (`POST /v1/jobs`, `/v1/audio/transcriptions`, `/v1/audio/translations`)
take `MAX_UPLOAD_BYTES` of media plus `API_MAX_BODY_BYTES` for the multipart framing and the other
fields (413 `media_too_large`, the upload's own code); every other body `API_MAX_BODY_BYTES` (413
`body_too_large`). A refusal closes the connection (`Connection: close`): the rest of the body is
never read. The OpenAI-compatible routes (`/v1/audio/`, `/v1/models`) get the refusal in OpenAI's
error body (`openai_shapes.openai_error_body`, what their clients parse), every other route in
KlipNote's `{detail: {code, message}}`.

`StreamSlots` bounds the live event streams (`API_MAX_EVENT_STREAMS`, then 503
`too_many_streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.errors import problem_body
from events.settings import Settings
from functions.ingest.api.openai_shapes import openai_error_body

UNAUTHORIZED_MESSAGE = "a valid API key is required (Authorization: Bearer)"
_PROTECTED_PREFIX = "/v1/"
# Published without the key: a schema is no secret, and other systems fetch it to build their events.
_PUBLIC_PREFIXES = ("/v1/schemas/",)
_UPLOAD_PATHS = ("/v1/jobs", "/v1/audio/transcriptions", "/v1/audio/translations")
_OPENAI_PREFIXES = ("/v1/audio/", "/v1/models")
_DISCONNECT: Message = {"type": "http.disconnect"}


def key_accepted(api_key: str | None, authorization: str | None) -> bool:
    """Whether an `Authorization` header value carries `Bearer <api_key>` (always, when no key is
    set). Compared in constant time (`secrets.compare_digest`), so timing tells nothing of the key."""
    if api_key is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), api_key.encode())


def protected(path: str) -> bool:
    """Whether a route needs the API key: everything under `/v1/` but the published schemas. The
    health probes and the API's documentation (`/docs`, `/redoc`, `/openapi.json`) are public."""
    return path.startswith(_PROTECTED_PREFIX) and not path.startswith(_PUBLIC_PREFIXES)


def openai_route(path: str) -> bool:
    """Whether a path is one of the OpenAI-compatible routes (`/v1/audio/...`, `/v1/models...`),
    whose refusals take OpenAI's error body."""
    return path.startswith(_OPENAI_PREFIXES)


class RequestGuard:
    """Pure ASGI middleware: the key, the body's size and pace, checked before the app reads the
    body (see the module's docstring for the rules and codes)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        openai = openai_route(scope["path"])
        if not key_accepted(self.settings.api_key, headers.get("authorization")):
            if openai:
                await self._drain_small_body(receive, headers.get("content-length"))
            challenge = {"WWW-Authenticate": "Bearer"}
            await _answer(send, 401, "unauthorized", UNAUTHORIZED_MESSAGE, challenge, openai=openai)
            return
        limit, code = self._limit(scope)
        declared = headers.get("content-length")
        # An unparseable Content-Length never gets here: the HTTP server refuses it (400).
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, code, _too_large(limit), openai=openai)
            return
        body = _GuardedBody(receive, send, limit, code, self.settings.api_body_timeout_s, openai)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            # Once we have answered, the app's complaint at its cut-off body is no one's business.
            if not body.refused:
                raise

    async def _drain_small_body(self, receive: Receive, declared: str | None) -> None:
        """Read and discard a refused request's body when it is declared no larger than
        `API_MAX_BODY_BYTES`, all of it within `API_BODY_TIMEOUT_S`. A server that closes a
        connection with body bytes unread makes its TCP stack reset it, and a client still
        sending (the OpenAI SDKs, httpx) then loses the answer and reports a connection error
        instead of the SDK's `AuthenticationError`. Nothing is stored, and a body over the bound
        (or without a Content-Length) is not read: the key is still checked before any upload."""
        if declared is None or not declared.isdigit() or int(declared) > self.settings.api_max_body_bytes:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.api_body_timeout_s):
                while (message := await receive())["type"] == "http.request" and message.get("more_body"):
                    pass

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/") in _UPLOAD_PATHS:
            return self.settings.max_upload_bytes + self.settings.api_max_body_bytes, "media_too_large"
        return self.settings.api_max_body_bytes, "body_too_large"


@dataclass
class _GuardedBody:
    """`receive` and `send` of one request: counts the body as it comes, times each wait for it,
    and answers a refusal itself; the app then sees a disconnected client, and whatever it
    still sends is dropped."""

    _receive: Receive
    _send: Send
    limit: int
    code: str
    timeout_s: float
    openai: bool = False
    received: int = 0
    done: bool = False
    started: bool = False
    refused: bool = False

    async def receive(self) -> Message:
        if self.refused:
            return _DISCONNECT
        if self.done:  # the body has all arrived: this waits for the client to go (a live stream)
            return await self._receive()
        try:
            async with asyncio.timeout(self.timeout_s):
                message = await self._receive()
        except TimeoutError:
            seconds = f"{self.timeout_s:g}"
            return await self._refuse(408, "body_timeout", f"the request body stalled for over {seconds} s")
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.received > self.limit:
                return await self._refuse(413, self.code, _too_large(self.limit))
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        self.started = True
        await self._send(message)

    async def _refuse(self, status: int, code: str, message: str) -> Message:
        if not self.started:  # an answer under way cannot be replaced; the cut-off ends it
            await _answer(self._send, status, code, message, openai=self.openai)
        self.refused = True
        return _DISCONNECT


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes"


async def _answer(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    openai: bool = False,
) -> None:
    body = openai_error_body(status, code, message) if openai else problem_body(code, message)
    # The body is left unread, so the connection cannot carry another request.
    response = JSONResponse(body, status, headers={**(headers or {}), "Connection": "close"})
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return _DISCONNECT


@dataclass
class StreamSlots:
    """The live event streams open at once, at most `limit` (`API_MAX_EVENT_STREAMS`): each holds
    a NATS consumer and a connection for as long as a client keeps it."""

    limit: int
    open: int = 0

    def take(self) -> StreamSlot | None:
        """A slot, or None when every slot is taken."""
        if self.open >= self.limit:
            return None
        self.open += 1
        return StreamSlot(self)


@dataclass
class StreamSlot:
    """One stream's slot; `release` frees it once, however often it is called (the stream's end
    and the response's end both call it)."""

    slots: StreamSlots
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots.open -= 1
