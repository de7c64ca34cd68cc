"""When a failed webhook call is tried again: `WEBHOOK_SCHEDULE_S`, or a receiver's longer
Retry-After (RFC 9110 section 10.2.3: seconds or an HTTP date), honoured up to a day (Standard
Webhooks' longest delay)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 24 * 3600.0


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay in seconds, or an HTTP date) as seconds from now; None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def next_delay(schedule: Sequence[float], attempt: int, retry_after: float | None) -> float | None:
    """The delay in seconds before the attempt after `attempt` (1-based), or None when that was
    the last. `schedule[i]` is the delay before attempt i + 1."""
    if attempt >= len(schedule):
        return None
    delay = float(schedule[attempt])
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay
