"""The one HTTP error answer of every KlipNote app (ingest's API, a function's health and event
receiver): `{"detail": {"code", "message"}}` (`events.errors.ProblemResponse`), for our refusals,
FastAPI's request validation and Starlette's own (a multipart body it cannot parse, an unknown
route) alike; NATS unreachable is 503 `bus_unavailable` on every route."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import nats.errors
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from events import binding
from events.errors import ProblemResponse, problem_body

# The statuses every route may answer with the error body, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemResponse} for status in (400, 401, 404, 408, 409, 413, 415, 422, 503)
}


def problem(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    """The exception that answers `status` with the error body (raise it)."""
    return HTTPException(status, problem_body(code, message)["detail"], headers=headers)


def install(app: FastAPI) -> None:
    """Answer FastAPI's and Starlette's own errors in the one error body."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (a query parameter out of range, a header too long).
        problems = binding.describe_errors(error.errors(), "request")
        return JSONResponse(problem_body("request_invalid", problems), status_code=422)

    @app.exception_handler(nats.errors.Error)
    async def bus_unavailable(request: Request, error: nats.errors.Error) -> JSONResponse:
        # NATS away (or refusing a call): worth a retry, and never a bare 500 without a code.
        message = f"the message bus (NATS) cannot be reached ({type(error).__name__}); try again shortly"
        return JSONResponse(problem_body("bus_unavailable", message), status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Ours carry {code, message} already; Starlette's own refusals carry a bare string.
        if isinstance(error.detail, dict):
            body = {"detail": error.detail}
        else:
            code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
            body = problem_body(code, str(error.detail))
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)
