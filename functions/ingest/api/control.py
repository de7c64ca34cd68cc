"""A job's whole life after it is submitted: cancel it, delete it (`/v1/jobs/{id}/cancel`,
`DELETE /v1/jobs/{id}`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from events.runtime.problems import ERRORS
from functions.ingest.api.dependencies import authorize

router = APIRouter(dependencies=[Depends(authorize)], responses=ERRORS)
