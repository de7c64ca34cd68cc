"""Least-privilege NATS users, one per function, derived from the event catalogue.

    python -m infra.nats_permissions           # rewrite infra/nats/permissions.conf
    python -m infra.nats_permissions --check   # exit 1 when it is stale

Subjects come from events/catalogue.py and models from the model registry (events/routing.py
MODELS, every model with an image, whichever ENABLED_MODELS picks at run time), so a model added
there gets its user here and nothing spells a subject by hand. A model function may fetch only
from its own durable on `transcribe.<model>` and publish only its segment and lifecycle events
and its own DLQ subject; it and optimize read single messages of JOBS (`$JS.API.STREAM.MSG.GET`:
whether a job was canceled), ingest alone publishes `transcription.canceled`.
Passwords are read from the environment by nats-server (`$KLIPNOTE_<USER>_NATS_PASSWORD`).

Each user subscribes only to its own inbox, `_INBOX_<user>.>` (`events.bus.inbox_prefix`, which
`bus.connect` sets), so no credential reads another client's replies (job records, webhook
headers, transcripts). MinIO's NATS target (nats.go) cannot be given an inbox prefix: it keeps the
default `_INBOX.>`, which none of ours uses. No user but `provision` may
create, update, delete or (unless it is its own) fetch from a durable: readers create and delete
their ephemeral consumers by name (`$JS.API.CONSUMER.CREATE.<stream>.<name>`, `...DELETE...`;
`events.reader`), which `_reader` allows for any name and `_durable_denies` denies for the
durables' names. The nameless create
(`...CREATE.<stream>`, the name in the body, where the server would update a durable named there)
and `...DURABLE.CREATE...` are allowed to no one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from events import bus, catalogue
from events.catalogue import Consumer, EventKind
from events.registry import MODELS
from infra.generated import write_or_check

CONF_PATH = Path(__file__).resolve().parent / "nats" / "permissions.conf"

# nats' default inbox, for MinIO only (its NATS target cannot set a prefix): JetStream publish
# acks come back there. Our clients use `_INBOX_<user>`, outside it.
DEFAULT_INBOX = "_INBOX.>"


def own_inbox(user: str) -> str:
    """The only inbox `user` may subscribe to: replies to its own requests."""
    return f"{bus.inbox_prefix(user)}.>"


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


def _reader(*streams: catalogue.Stream) -> list[str]:
    """What reading subjects of these streams needs (`events.reader.reading`: an ephemeral pull
    consumer with a random name): find the stream, create the consumer by name
    (`$JS.API.CONSUMER.CREATE.<stream>.<name>`), fetch from it, delete it; the stream's info
    (`SubjectReader.stored`, how many messages a subject holds). The durables' names are
    denied (`_durable_denies`): the subjects carry the name, so no reader can create, update,
    delete or fetch from a durable it does not own."""
    return [
        "$JS.API.STREAM.NAMES",
        *(
            subject
            for stream in streams
            for subject in (
                f"$JS.API.STREAM.INFO.{stream.name}",
                f"$JS.API.CONSUMER.CREATE.{stream.name}.*",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream.name}.*",
                f"$JS.API.CONSUMER.DELETE.{stream.name}.*",
            )
        ),
    ]


def _last_event(stream: catalogue.Stream) -> str:
    """What reading the last message of a subject of one stream needs (`Runtime.last_event`,
    nats-py's `get_last_msg`: the stream has no direct get)."""
    return f"$JS.API.STREAM.MSG.GET.{stream.name}"


def _durable_denies(streams: list[catalogue.Stream], own: list[Consumer]) -> list[str]:
    """For a user reading `streams`: every durable on them may not be created or updated by name
    (its own neither: provisioning owns their config), and no other's may be fetched from."""
    names = {stream.name for stream in streams}
    denies = []
    for consumer in provision_durables():
        if consumer.stream.name not in names:
            continue
        stream, durable = consumer.stream.name, consumer.durable
        denies.append(f"$JS.API.CONSUMER.CREATE.{stream}.{durable}")
        denies.append(f"$JS.API.CONSUMER.DELETE.{stream}.{durable}")
        if consumer not in own:
            denies.append(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
    return denies


def provision_durables() -> list[Consumer]:
    """Every durable provisioning may create: the catalogue's, and a queue per model image."""
    return [*catalogue.CONSUMERS, *(catalogue.model_consumer(model) for model in MODELS)]


@dataclass
class User:
    name: str
    why: str
    publish: list[str]
    # Default: its own inbox (`own_inbox`).
    subscribe: list[str] = field(default_factory=list)
    # Subjects refused although `publish` allows them (NATS: a deny wins over an allow).
    publish_deny: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.subscribe:
            self.subscribe = [own_inbox(self.name)]

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
    ]


def _kv_reader(bucket: str) -> list[str]:
    """What following a KV bucket's stream takes (`functions.ingest.index`: an ephemeral pull
    consumer with a random name on `KV_<bucket>`, as `_reader`'s; no durable lives there)."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}.*",
        f"$JS.API.CONSUMER.INFO.{stream}.*",  # whether the server still has it (`SubjectReader.exists`)
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
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
            "routes requests to model queues, keeps job records, follows a job's events and segments "
            "for the API, takes bucket notifications, calls webhooks",
            [
                _every(catalogue.REQUESTED),
                _every(catalogue.QUEUED),
                _every(catalogue.FAILED),
                _every(catalogue.CANCELED),  # POST /v1/jobs/{id}/cancel
                _every(catalogue.WEBHOOK),
                f"{catalogue.DISPATCHED.subject_prefix}.*",
                *(catalogue.dead_letter_subject(c.durable) for c in ingest_consumers),
                *(s for c in ingest_consumers for s in _pull(c)),
                *_kv(catalogue.JOBS_KV_BUCKET),
                *_reader(catalogue.JOBS, catalogue.SEGMENTS),  # the API's event streams
                # The job index follows the bucket's stream (headers only) with a reader of its own.
                *_kv_reader(catalogue.JOBS_KV_BUCKET),
                # A job's last end event (`Runtime.last_event`: JOBS has no direct get).
                _last_event(catalogue.JOBS),
                # Deleting a job removes its events (`JobStore.delete`: a purge filtered to the
                # job's subjects; the server cannot hold a user to a filter, so this allows any).
                f"$JS.API.STREAM.PURGE.{catalogue.JOBS.name}",
                f"$JS.API.STREAM.PURGE.{catalogue.SEGMENTS.name}",
            ],
            publish_deny=_durable_denies([catalogue.JOBS, catalogue.SEGMENTS], ingest_consumers),
        ),
        User(
            "optimize",
            "turns a run's segments into results, reports completed/failed",
            [
                _every(catalogue.COMPLETED),
                _every(catalogue.FAILED),
                catalogue.dead_letter_subject(catalogue.OPTIMIZE.durable),
                *_pull(catalogue.OPTIMIZE),
                *_reader(catalogue.SEGMENTS),
                _last_event(catalogue.JOBS),  # whether a job was canceled
            ],
            publish_deny=_durable_denies([catalogue.SEGMENTS], [catalogue.OPTIMIZE]),
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
                    _last_event(catalogue.JOBS),  # whether a job was canceled
                ],
            )
        )
    result += [
        User(
            "minio",
            "MinIO's NATS target (JetStream mode): bucket notifications only. Its client (nats.go) "
            "takes publish acks on nats' default inbox, and MinIO has no setting for a prefix: it keeps "
            "_INBOX.>, where none of the functions' replies go (theirs are _INBOX_<user>). Give no other "
            "client this user or the default inbox",
            [catalogue.STORAGE_UPLOADS_SUBJECT],
            [DEFAULT_INBOX],
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
            "        publish: {allow: ["
            + ", ".join(f'"{s}"' for s in user.publish)
            + "]"
            + (
                ", deny: [" + ", ".join(f'"{s}"' for s in user.publish_deny) + "]"
                if user.publish_deny
                else ""
            )
            + "}",
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
