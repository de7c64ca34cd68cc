"""The API's FastAPI dependencies: the API key, and the parts routes work with (settings, the
admission, the gateway once ingest has started)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from events.models import Decoding, Diarization, WebhookTarget
from events.runtime.problems import problem
from events.settings import Settings
from functions.ingest.admission import REFUSALS, Admission
from functions.ingest.api.limits import UNAUTHORIZED_MESSAGE, StreamSlots, key_accepted
from functions.ingest.gateway import Gateway

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Parts:
    """What the routes work with. `gateway` gives the gateway, or None until ingest has started
    (the API is served from the moment the process is up; the job store and the bus come later);
    `streams` the slots of live event streams."""

    settings: Settings
    admission: Admission
    gateway: Callable[[], Gateway | None]
    streams: StreamSlots

    async def admit(
        self,
        *,
        model: str | None,
        language: str | None,
        webhook: WebhookTarget | None,
        decoding: Decoding | None = None,
        diarization: Diarization | None = None,
    ) -> None:
        """Admit a request's options (`Admission.admit`), or answer 422 with the refusal's code."""
        try:
            await self.admission.admit(
                model=model, language=language, webhook=webhook, decoding=decoding, diarization=diarization
            )
        except REFUSALS as error:
            raise problem(422, error.code, error.message) from error

    def started_gateway(self) -> Gateway:
        """The gateway; a 503 `not_ready` answer while ingest is still starting."""
        gateway = self.gateway()
        if gateway is None:
            raise problem(503, "not_ready", "ingest is still starting; try again shortly")
        return gateway


def parts(request: Request) -> Parts:
    """The parts `create_app` was given (kept in the app's state)."""
    given: Parts = request.app.state.parts
    return given


def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse (401 `unauthorized`) without `Authorization: Bearer <API_KEY>`, when API_KEY is set;
    the key is compared in constant time. `limits.RequestGuard` has refused such a request before
    its body was read; this names the scheme in the OpenAPI document and holds for any route
    mounted outside the guard's paths."""
    token = f"Bearer {credentials.credentials}" if credentials is not None else None
    if not key_accepted(parts(request).settings.api_key, token):
        raise problem(401, "unauthorized", UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


def use_gateway(request: Request) -> Gateway:
    """The started gateway (503 `not_ready` before)."""
    return parts(request).started_gateway()


PartsDep = Annotated[Parts, Depends(parts)]
GatewayDep = Annotated[Gateway, Depends(use_gateway)]
