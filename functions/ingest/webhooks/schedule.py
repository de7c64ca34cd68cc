"""When a failed webhook call is tried again: `WEBHOOK_SCHEDULE_S`, or a receiver's longer
Retry-After (RFC 9110 section 10.2.3: seconds or an HTTP date), honoured up to a day (Standard
Webhooks' longest delay)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 24 * 3600.0
_DELAY_SECONDS = re.compile(r"[0-9]+")


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay in seconds, or an HTTP date) as seconds from now, at most
    MAX_RETRY_AFTER_S; None when absent or unreadable. Never raises: the header is the receiver's,
    and anything may come (non-ASCII digits such as '²' or '٣', which `str.isdigit` accepts and
    `float` may not, absurd dates, bytes decoded as Latin-1)."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):  # RFC 9110's delay-seconds: 1*DIGIT, ASCII only
        return min(float(value), MAX_RETRY_AFTER_S)
    if not value.isascii():
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def next_delay(schedule: Sequence[float], attempt: int, retry_after: float | None) -> float | None:
    """The delay in seconds before the attempt after `attempt` (1-based), or None when that was
    the last. `schedule[i]` is the delay before attempt i + 1."""
    if attempt >= len(schedule):
        return None
    delay = float(schedule[attempt])
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay
