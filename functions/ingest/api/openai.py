"""The OpenAI-compatible routes (`/v1/audio/transcriptions`, `/v1/audio/translations`,
`/v1/models`): a request is a job like any other, answered in OpenAI's shapes when it ends."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
