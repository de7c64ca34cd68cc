"""Least-privilege NATS users, one per function, derived from the event catalogue.

    python -m infra.nats_permissions           # rewrite infra/nats/permissions.conf
    python -m infra.nats_permissions --check   # exit 1 when it is stale

Subjects come from events/catalogue.py and models from the model registry (events/routing.py
MODELS, every model with an image, whichever ENABLED_MODELS picks at run time), so a model added
there gets its user here and nothing spells a subject by hand. A model function may fetch only
from its own durable on `transcribe.<model>` and publish only its segment and lifecycle events
and its own DLQ subject.
Passwords are read from the environment by nats-server (`$KLIPNOTE_<USER>_NATS_PASSWORD`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from events import catalogue
from events.catalogue import Consumer, EventKind
from events.registry import MODELS
from infra.generated import write_or_check

CONF_PATH = Path(__file__).resolve().parent / "nats" / "permissions.conf"

# nats-py's default inbox: JetStream publish acks and pull-consumer deliveries arrive here.
INBOX = "_INBOX.>"


def _every(kind: EventKind) -> str:
    return f"{kind.subject_prefix}.>"


def _pull(consumer: Consumer) -> list[str]:
    """What binding to one durable pull consumer, fetching and acking needs."""
    stream, durable = consumer.stream.name, consumer.durable
    return [
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _create_consumer(stream: str) -> list[str]:
    """Creating an ephemeral consumer: nats-py sends the create to `$JS.API.CONSUMER.CREATE.<stream>`
    itself (`.>` does not match that subject), newer clients to `...<stream>.<name>.<filter>`."""
    return [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>"]


def _ordered_reader(stream: catalogue.Stream) -> list[str]:
    """What an ordered (ephemeral) consumer on one stream needs: find it, create, delete."""
    return [
        "$JS.API.STREAM.NAMES",
        f"$JS.API.STREAM.INFO.{stream.name}",
        *_create_consumer(stream.name),
        f"$JS.API.CONSUMER.DELETE.{stream.name}.>",
    ]


@dataclass
class User:
    name: str
    why: str
    publish: list[str]
    subscribe: list[str] = field(default_factory=lambda: [INBOX])

    @property
    def password_env(self) -> str:
        return f"KLIPNOTE_{self.name.upper().replace('-', '_')}_NATS_PASSWORD"


def _kv(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        *_create_consumer(stream),
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
    ]


def users() -> list[User]:
    ingest_consumers = [
        catalogue.INGEST_ROUTER,
        catalogue.INGEST_PROJECTOR,
        catalogue.INGEST_WEBHOOKS,
        catalogue.INGEST_UPLOADS,
    ]
    result = [
        User(
            "ingest",
            "routes requests to model queues, keeps job records, follows a job's events for the API, "
            "takes bucket notifications, calls webhooks",
            [
                _every(catalogue.REQUESTED),
                _every(catalogue.QUEUED),
                _every(catalogue.FAILED),
                _every(catalogue.WEBHOOK),
                f"{catalogue.DISPATCHED.subject_prefix}.*",
                *(catalogue.dead_letter_subject(c.durable) for c in ingest_consumers),
                *(s for c in ingest_consumers for s in _pull(c)),
                *_kv(catalogue.JOBS_KV_BUCKET),
                *_ordered_reader(catalogue.JOBS),
            ],
        ),
        User(
            "optimize",
            "turns a run's segments into results, reports completed/failed",
            [
                _every(catalogue.COMPLETED),
                _every(catalogue.FAILED),
                catalogue.dead_letter_subject(catalogue.OPTIMIZE.durable),
                *_pull(catalogue.OPTIMIZE),
                *_ordered_reader(catalogue.SEGMENTS),
            ],
        ),
    ]
    for model in MODELS:
        consumer = catalogue.model_consumer(model)
        result.append(
            User(
                model,
                f"consumes only {consumer.filter_subject}; publishes segments and its lifecycle events",
                [
                    _every(catalogue.SEGMENT),
                    _every(catalogue.PROGRESS),
                    _every(catalogue.LANGUAGE_DETECTED),
                    _every(catalogue.TRANSCRIBED),
                    _every(catalogue.FAILED),
                    catalogue.dead_letter_subject(consumer.durable),
                    *_pull(consumer),
                ],
            )
        )
    result += [
        User(
            "minio",
            "MinIO's NATS target (JetStream mode): bucket notifications only",
            [catalogue.STORAGE_UPLOADS_SUBJECT],
        ),
        User(
            "provision",
            "`klipnote provision`: creates and updates streams, consumers and KV (an operator job)",
            ["$JS.API.>"],
        ),
    ]
    return result


def render() -> str:
    lines = [
        "# Generated by `python -m infra.nats_permissions` from events/catalogue.py and the model",
        "# registry (events/routing.py MODELS); do not edit.",
        "# Included by nats-server.conf. Each password comes from the server's environment.",
        "authorization {",
        "  users = [",
    ]
    for user in users():
        lines += [
            f"    # {user.name}: {user.why}",
            "    {",
            f"      user: {user.name}",
            f"      password: ${user.password_env}",
            "      permissions: {",
            "        publish: {allow: [" + ", ".join(f'"{s}"' for s in user.publish) + "]}",
            "        subscribe: {allow: [" + ", ".join(f'"{s}"' for s in user.subscribe) + "]}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(CONF_PATH, render(), "infra.nats_permissions", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
