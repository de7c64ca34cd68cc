"""Structured logs: one JSON object per line, with the job id and trace id when there is one.

A line gets them from the log call's `extra`, or else from where it is logged: the job a host is
handling (`job`) and the current span, so a function's own lines carry them without asking.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from events import tracing

_FIELDS = ("function", "job_id", "trace_id", "event_id", "consumer", "model", "run_id")


_JOB_ID: ContextVar[str | None] = ContextVar("job_id", default=None)


@contextlib.contextmanager
def job(job_id: str | None) -> Iterator[None]:
    """Lines logged inside (and in tasks and threads started with this context) name the job."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


class JobContext(logging.Filter):
    """Fills `job_id` and `trace_id` from the context when the log call did not pass them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _JOB_ID.get()
        if getattr(record, "trace_id", None) is None:
            record.trace_id = tracing.current_trace_id()
        return True


class JsonLines(logging.Formatter):
    def __init__(self, function: str) -> None:
        super().__init__()
        self.function = function

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "function": self.function,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(function: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(function))
    handler.addFilter(JobContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that chatter at INFO about every request.
    for noisy in ("uvicorn.access", "httpx", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
