"""The one shape of an error KlipNote reports: a machine-readable `code` and a plain `message`.

Every error a person or a client may read derives from `CodedError`: the `failed` event, the job
record's `error`, the HTTP API's error body and the dead-letter reason all carry the same two
fields. docs/bad-input.md lists the codes.
"""

from __future__ import annotations


class CodedError(Exception):
    """An error with a stable machine-readable `code` (snake_case, e.g. `media_unreadable`) and a
    `message` written for a person (never a raw tool log)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
