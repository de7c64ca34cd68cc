"""The one shape of an error KlipNote reports: a machine-readable `code` and a plain `message`.

Every error a person or a client may read derives from `CodedError`: the `failed` event, the job
record's `error`, the HTTP API's error body and the dead-letter reason all carry the same two
fields. docs/bad-input.md lists the codes.
"""

from __future__ import annotations

from pydantic import BaseModel


class CodedError(Exception):
    """An error with a stable machine-readable `code` (snake_case, e.g. `media_unreadable`) and a
    `message` written for a person (never a raw tool log)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Problem(BaseModel):
    """An error as an HTTP answer carries it: `code` and `message` of a `CodedError`."""

    code: str
    message: str


class ProblemResponse(BaseModel):
    """The one HTTP error body of every KlipNote endpoint (the API's and a function's event
    receiver): `{"detail": {"code", "message"}}`, under FastAPI's own `detail` key so that its
    refusals (validation, 404 of an unknown route) and ours read the same."""

    detail: Problem


def problem_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON of the one HTTP error body (see `ProblemResponse`)."""
    return ProblemResponse(detail=Problem(code=code, message=message)).model_dump()
