"""Standard Webhooks signing (https://www.standardwebhooks.com, with the `standardwebhooks`
package): the signer from `WEBHOOK_SECRET`, the `webhook-id` and the signed headers of a call."""

from __future__ import annotations

import uuid
from datetime import datetime

from standardwebhooks import Webhook

from events import catalogue
from functions.ingest.webhooks.errors import WebhookRefused

_WEBHOOK_ID_NAMESPACE = uuid.UUID("0b4d3f7e-58c2-4d55-9a43-2f8e6c1d9b70")


def signer(secret: str | None) -> Webhook:
    """The signer of `secret` (`whsec_` + base64); WebhookRefused `webhook_unsigned` when there is
    none or it is not a valid one (the message never echoes the secret)."""
    if not secret:
        raise WebhookRefused(
            "webhook_unsigned", "webhooks are off: this ingest has no WEBHOOK_SECRET to sign them"
        )
    try:
        return Webhook(secret)
    except Exception:  # never echo the secret
        raise WebhookRefused(
            "webhook_unsigned", "WEBHOOK_SECRET is not a valid signing secret (whsec_ + base64)"
        ) from None


def webhook_id(job_id: str, kind: catalogue.EventKind) -> str:
    """`webhook-id`: one per job end, the same on every retry (and free of '.', which signs)."""
    return "msg_" + uuid.uuid5(_WEBHOOK_ID_NAMESPACE, f"{job_id}\n{kind.type}").hex


def signed_headers(sign: Webhook, hook_id: str, sent_at: datetime, body: str) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` (POSIX seconds) and `webhook-signature` of one call."""
    return {
        "webhook-id": hook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": sign.sign(hook_id, sent_at, body),
    }
