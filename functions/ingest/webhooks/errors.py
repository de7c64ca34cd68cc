"""Why ingest will not call a webhook target."""

from __future__ import annotations

from events.errors import CodedError

# The codes of WebhookRefused.
REFUSALS = frozenset({"webhook_unsigned", "webhook_scheme", "webhook_invalid", "webhook_forbidden"})


class WebhookRefused(CodedError, ValueError):
    """A webhook target ingest will not call: `webhook_unsigned` (no usable WEBHOOK_SECRET),
    `webhook_scheme` (not http or https), `webhook_invalid` (whitespace or control characters, no
    host, a bad port, a host that is no IDNA2008 name), or `webhook_forbidden` (an address the
    SSRF guard refuses)."""
