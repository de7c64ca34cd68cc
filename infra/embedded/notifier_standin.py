"""A stand-in for MinIO's bucket notifier on the embedded stack: SeaweedFS has no S3 bucket
notifications, so this process follows its filer's metadata stream (`weed filer.meta.tail`) under
the uploads bucket and publishes, for each object stored there, the S3 event record MinIO's NATS
target would publish (../shared/reference/minio-nats-put-event.json) on `storage.uploads`. Ingest
cannot tell the two apart: a file dropped into the bucket starts its job within about a second,
not at the next reconcile (`UPLOADS_RECONCILE_INTERVAL_S`), which stays as the safety net.

    python -m infra.embedded.notifier_standin --filer 127.0.0.1:8888.18888 --position FILE

The embedded stack runs it as its child `notifier-standin` when `UPLOADS_WATCH` is on.

- What is announced: a file stored under `/buckets/<UPLOADS_BUCKET>/` (`filer.meta.tail` prints
  each change as a JSON document). Not directories (folder markers), not deletions, not the part
  files of a multipart upload in progress (`.uploads/`); a completed multipart upload is one
  object, announced once as `s3:ObjectCreated:CompleteMultipartUpload`.
- Its eTag is S3's (a HEAD of the object, the same the reconcile lists), so the job id ingest
  derives (bucket, key, eTag: `functions/ingest/ids.py`) is the reconcile's for the same drop:
  the two never make two jobs of one object. A HEAD that finds no object (deleted since) announces
  nothing.
- At least once: every record carries `Nats-Msg-Id` = a hash of (bucket, key, eTag), so a repeat
  within the stream's duplicate window (`DEDUPE_WINDOW_S`) is a JetStream duplicate. A publish or
  a HEAD that fails (NATS or SeaweedFS down) is retried until it succeeds, in event order.
- Restarts: `filer.meta.tail` exits when the filer goes away. It is started again (after
  `RESTART_DELAY_S`) from the time of the last event handled, which `--position` keeps on disk
  so a restart of this process resumes there too (`-timeAgo`, replayed events are duplicates).
  That replay misses events of the last seconds in SeaweedFS 4.48 (seen in about two restarts of
  three), so each start also lists the bucket and announces what was stored since that time
  (`catch_up`). A document it cannot parse is logged and skipped, never fatal.
- NATS: it connects as MinIO's NATS target does (infra/nats_permissions.py, user `minio`): it
  publishes only on `storage.uploads` and takes JetStream acks on nats' default inbox `_INBOX.>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import nats
from minio import Minio
from minio.error import S3Error
from nats.aio.client import Client as NATS

from events import storage
from events.bus import MSG_ID_HEADER
from events.catalogue import STORAGE_UPLOADS_SUBJECT
from events.settings import Settings
from infra.embedded.processes import NOTIFIER_STANDIN, die_with_parent
from infra.embedded.servers import binary

log = logging.getLogger("infra.embedded.notifier_standin")

# The embedded stack's child that runs this module.
CHILD = NOTIFIER_STANDIN
# SeaweedFS keeps S3 buckets under this filer folder (the filer's default `dirBuckets`).
BUCKETS_DIR = "/buckets"
# Where SeaweedFS keeps the parts of multipart uploads in progress, inside the bucket's folder.
MULTIPART_DIR = ".uploads"
# Seconds before `filer.meta.tail` is started again after it exited (the filer restarting).
RESTART_DELAY_S = 1.0
# Seconds between attempts of a HEAD or a publish that failed (SeaweedFS or NATS down).
RETRY_DELAY_S = 1.0
# Replay this much (nanoseconds) before the last event handled when resuming: an event stamped
# the same nanosecond as the last one is not lost; a replayed one is a JetStream duplicate.
RESUME_OVERLAP_NS = 1_000_000_000
# A document of `filer.meta.tail` is one JSON object printed over many lines; a line longer than
# this (bytes) or a document that never closes is skipped, not buffered without end.
MAX_DOCUMENT_BYTES = 16 * 2**20

_MULTIPART_ETAG_SUFFIX = "-"  # S3 gives a completed multipart upload the eTag `<md5>-<parts>`
_CREATED_PUT = "s3:ObjectCreated:Put"
_USER_META = "x-amz-meta-"  # user metadata headers, MinIO's `userMetadata` (with content-type)
_CREATED_MULTIPART = "s3:ObjectCreated:CompleteMultipartUpload"


class UnreadableEvent(ValueError):
    """A document of the metadata stream that is not a filer event of the expected shape."""


@dataclass(frozen=True)
class StoredFile:
    """A file the filer stored (created or replaced) under a bucket's folder: `key` is its S3
    object key, `ts_ns` the event's time (nanoseconds since the epoch)."""

    bucket: str
    key: str
    ts_ns: int


def filer_event(document: Any) -> tuple[int, StoredFile | None]:
    """One document of `filer.meta.tail`: its time (ns) and the file it stored under a bucket,
    or None for anything else (a directory, a deletion, a multipart part, outside `/buckets`).
    UnreadableEvent when it is no filer event (no `tsNs`, no `eventNotification`, wrong types).

    The shape is SeaweedFS's `SubscribeMetadataResponse` as protojson prints it:
    `{"directory", "eventNotification": {"oldEntry", "newEntry": {"name", "isDirectory", ...},
    "newParentPath"}, "tsNs": "<int64 as a string>"}`."""
    if not isinstance(document, dict):
        raise UnreadableEvent("not a JSON object")
    try:
        ts_ns = int(document["tsNs"])
        notification = document["eventNotification"]
        directory = document.get("directory") or ""
        if not isinstance(notification, dict) or not isinstance(directory, str):
            raise TypeError("eventNotification is not an object or directory not a string")
        entry = notification.get("newEntry")
        if entry is None:
            return ts_ns, None  # a deletion
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TypeError("newEntry has no name")
        if entry.get("isDirectory"):
            return ts_ns, None  # a folder (a folder marker `dir/` is one)
        # A rename names the new folder; S3 never renames, but the filer may.
        parent = notification.get("newParentPath") or directory
        if not isinstance(parent, str):
            raise TypeError("newParentPath is not a string")
    except (KeyError, TypeError, ValueError) as error:
        raise UnreadableEvent(f"not a filer metadata event: {error!r}") from error
    path = f"{parent.rstrip('/')}/{entry['name']}"
    prefix = BUCKETS_DIR + "/"
    if not path.startswith(prefix):
        return ts_ns, None
    bucket, _, key = path[len(prefix) :].partition("/")
    if not bucket or not key or key.split("/", 1)[0] == MULTIPART_DIR:
        return ts_ns, None  # the bucket's own folder, or a part of an upload in progress
    return ts_ns, StoredFile(bucket, key, ts_ns)


def documents(lines: Iterable[str]) -> Iterable[Any]:
    """The JSON documents of `filer.meta.tail`'s output, given line by line (see `DocumentReader`);
    for tests and tools that hold the whole output."""
    reader = DocumentReader()
    for line in lines:
        yield from reader.feed(line)


class DocumentReader:
    """Splits `filer.meta.tail`'s output into documents: each is a JSON object printed over many
    lines, from a line `{` to a line `}` (protojson's indented form). A line outside a document
    (the tool's own messages, such as why it stopped) is logged; a document that is no JSON is
    logged and skipped."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0

    def feed(self, line: str) -> list[Any]:
        """The documents this line completes (none or one)."""
        text = line.rstrip("\r\n")
        if not self._lines:
            if text.strip() == "{":
                self._lines, self._size = [text], len(text)
            elif text.strip():
                log.info("filer.meta.tail: %s", text.strip())
            return []
        self._lines.append(text)
        self._size += len(text)
        if text == "}":
            body, self._lines, self._size = "\n".join(self._lines), [], 0
            try:
                return [json.loads(body)]
            except ValueError as error:
                log.warning("skipping a filer event that is no JSON (%s): %.200s", error, body)
                return []
        if self._size > MAX_DOCUMENT_BYTES:
            log.warning("skipping a filer event over %d bytes that never closed", MAX_DOCUMENT_BYTES)
            self._lines, self._size = [], 0
        return []


def s3_record(
    stored: StoredFile,
    *,
    etag: str,
    size: int | None,
    content_type: str | None,
    metadata: dict[str, str],
    principal: str,
    region: str = "",
) -> dict[str, Any]:
    """The message MinIO's NATS target publishes for one stored object
    (../shared/reference/minio-nats-put-event.json): `{"EventName", "Key": "bucket/key",
    "Records": [one S3 event record]}`. `etag` without quotes; `size` in bytes; `metadata` the
    object's `X-Amz-Meta-*` headers; `principal` the access key that stored it. The key is
    query-escaped as MinIO escapes it (`unquote_plus` decodes it); `sequencer` is the event's
    time in hex nanoseconds, as MinIO's."""
    event_name = _CREATED_MULTIPART if _MULTIPART_ETAG_SUFFIX in etag else _CREATED_PUT
    when = datetime.fromtimestamp(stored.ts_ns / 1e9, UTC)
    user_metadata = {"content-type": content_type} if content_type else {}
    user_metadata.update(metadata)
    obj: dict[str, Any] = {
        "key": quote_plus(stored.key),
        "size": size,
        "eTag": etag,
        "contentType": content_type or "",
        "userMetadata": user_metadata,
        "sequencer": f"{stored.ts_ns:X}",
    }
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": region,
        "eventTime": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": event_name,
        "userIdentity": {"principalId": principal},
        "requestParameters": {"principalId": principal, "region": region, "sourceIPAddress": ""},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": stored.bucket,
                "ownerIdentity": {"principalId": principal},
                "arn": f"arn:aws:s3:::{stored.bucket}",
            },
            "object": obj,
        },
        "source": {"host": "", "port": "", "userAgent": CHILD},
    }
    return {"EventName": event_name, "Key": f"{stored.bucket}/{stored.key}", "Records": [record]}


def message_id(bucket: str, key: str, etag: str) -> str:
    """The `Nats-Msg-Id` of an object version's record: every announcement of the same version
    (a replay after a restart, a metadata-only update) is a JetStream duplicate."""
    version = f"{bucket}\n{key}\n{etag.strip().strip(chr(34))}"
    return "s3-object-" + hashlib.sha256(version.encode()).hexdigest()[:40]


def tail_command(filer: str, bucket: str, time_ago_ns: int) -> list[str]:
    """`weed filer.meta.tail` on the bucket's folder, replaying the last `time_ago_ns`
    nanoseconds. `filer` is SeaweedFS's `host:port.grpcPort` (its gRPC port is not the default
    port + 10000 on a stack with free ports)."""
    return [
        binary("weed"),
        "filer.meta.tail",
        f"-filer={filer}",
        f"-pathPrefix={BUCKETS_DIR}/{bucket}/",  # the slash: not a bucket `uploads2`
        f"-timeAgo={max(time_ago_ns, 0)}ns",
    ]


class Position:
    """The time (ns since the epoch) of the last filer event handled, kept in a file so that a
    restart resumes there."""

    def __init__(self, path: Path, start_ns: int) -> None:
        self.path = path
        try:
            self.ts_ns = int(path.read_text().strip())
        except (OSError, ValueError):
            self.ts_ns = start_ns
            self.save(start_ns)

    def save(self, ts_ns: int) -> None:
        self.ts_ns = ts_ns
        partial = self.path.with_suffix(".partial")
        partial.write_text(str(ts_ns))
        os.replace(partial, self.path)


class MinioNotifierStandIn:
    """Follows the filer's metadata under the uploads bucket and publishes MinIO's record for
    each object stored there (see the module's docstring)."""

    def __init__(self, settings: Settings, filer: str, position: Position) -> None:
        self.settings = settings
        self.filer = filer
        self.position = position
        self.bucket = settings.uploads_bucket
        self.store: Minio = storage.client(settings)

    async def run(self, nc: NATS, stopping: asyncio.Event) -> None:
        """Until `stopping` is set: run `filer.meta.tail`, announce what it reports, and start it
        again from the last event handled whenever it exits."""
        js = nc.jetstream()
        while not stopping.is_set():
            replay_ns = time.time_ns() - self.position.ts_ns + RESUME_OVERLAP_NS
            command = tail_command(self.filer, self.bucket, replay_ns)
            log.info("following the filer's metadata: %s", " ".join(command[1:]))
            tail = await asyncio.create_subprocess_exec(
                *command,
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                limit=MAX_DOCUMENT_BYTES,
                preexec_fn=die_with_parent,
            )
            try:
                assert tail.stdout is not None
                # The tool's replay (-timeAgo) of the last seconds misses events in this SeaweedFS
                # build: what the listing shows stored since then is announced first.
                await self._retrying(self.catch_up, js, stopping=stopping)
                async for document in _read(tail.stdout, stopping):
                    await self.handle(document, js, stopping)
            finally:
                if tail.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        tail.terminate()
                code = await tail.wait()
            if not stopping.is_set():
                log.warning("filer.meta.tail exited (%s); starting it again in %.0f s", code, RESTART_DELAY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RESTART_DELAY_S)

    async def catch_up(self, js: Any) -> int:
        """Announce every object of the bucket stored since the last event handled (less
        RESUME_OVERLAP_NS and the listing's one-second resolution), as a listing shows them: what
        happened while `filer.meta.tail` was down. Returns how many; repeats are duplicates."""
        since_s = (self.position.ts_ns - RESUME_OVERLAP_NS) / 1e9 - 1.0
        listed = await asyncio.to_thread(lambda: list(self.store.list_objects(self.bucket, recursive=True)))
        announced = 0
        for obj in listed:
            key, modified = obj.object_name, obj.last_modified
            if not key or obj.is_dir or modified is None or modified.timestamp() < since_s:
                continue
            if key.split("/", 1)[0] == MULTIPART_DIR:
                continue
            message = await self.record(StoredFile(self.bucket, key, int(modified.timestamp() * 1e9)))
            if message is not None:
                await self.publish(js, message)
                announced += 1
        if announced:
            log.info("caught up: %d object(s) stored since the last event handled", announced)
        return announced

    async def handle(self, document: Any, js: Any, stopping: asyncio.Event) -> None:
        """Announce the object one document stored, if any; then move the position past it."""
        try:
            ts_ns, stored = filer_event(document)
        except UnreadableEvent as error:
            log.warning("skipping an unreadable filer event (%s): %.300s", error, json.dumps(document))
            return
        if stored is not None and stored.bucket == self.bucket:
            message = await self._retrying(self.record, stored, stopping=stopping)
            if message is not None:
                await self._retrying(self.publish, js, message, stopping=stopping)
        if ts_ns > self.position.ts_ns:
            self.position.save(ts_ns)

    async def record(self, stored: StoredFile) -> dict[str, Any] | None:
        """MinIO's record of a stored object, from a HEAD of it (S3's eTag, size, type and user
        metadata, as the reconcile sees them), or None when it is gone or no client can name it."""
        try:
            stat = await asyncio.to_thread(self.store.stat_object, stored.bucket, stored.key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                log.info("not announcing s3://%s/%s: deleted since it was stored", stored.bucket, stored.key)
                return None
            raise
        except ValueError as error:  # a name the client refuses: the reconcile skips it too
            log.warning("not announcing s3://%s/%s: %s", stored.bucket, stored.key, error)
            return None
        if not stat.etag:
            log.warning("not announcing s3://%s/%s: the store gave no eTag", stored.bucket, stored.key)
            return None
        headers = {str(name): str(value) for name, value in (stat.metadata or {}).items()}
        return s3_record(
            stored,
            etag=stat.etag.strip().strip('"'),
            size=stat.size,
            content_type=stat.content_type,
            metadata={name: value for name, value in headers.items() if name.lower().startswith(_USER_META)},
            principal=self.settings.s3_access_key,
            region=self.settings.s3_region or "",
        )

    async def publish(self, js: Any, message: dict[str, Any]) -> None:
        """Publish one record on `storage.uploads` and wait for JetStream's ack."""
        obj = message["Records"][0]["s3"]["object"]
        key = message["Key"].partition("/")[2]
        msg_id = message_id(self.bucket, key, obj["eTag"])
        ack = await js.publish(
            STORAGE_UPLOADS_SUBJECT, json.dumps(message).encode(), headers={MSG_ID_HEADER: msg_id}
        )
        repeat = " (a duplicate)" if ack.duplicate else ""
        log.info("announced s3://%s/%s (eTag %s)%s", self.bucket, key, obj["eTag"], repeat)

    async def _retrying(self, action: Any, *args: Any, stopping: asyncio.Event) -> Any:
        # At least once: an object stored is announced however long NATS or the store is down.
        while True:
            try:
                return await action(*args)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if stopping.is_set():
                    raise
                log.warning("%s failed, retrying in %.0f s: %s", action.__name__, RETRY_DELAY_S, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RETRY_DELAY_S)


async def _read(stream: asyncio.StreamReader, stopping: asyncio.Event) -> AsyncIterator[Any]:
    reader = DocumentReader()
    while not stopping.is_set():
        try:
            line = await stream.readline()
        except ValueError as error:  # a line over the limit: the rest of the stream is unusable
            log.warning("filer.meta.tail printed a line over %d bytes: %s", MAX_DOCUMENT_BYTES, error)
            return
        if not line:
            return
        for document in reader.feed(line.decode(errors="replace")):
            yield document


async def connect(settings: Settings) -> NATS:
    """A connection like MinIO's NATS target's: nats' default inbox, reconnecting forever."""
    return await nats.connect(
        servers=[url.strip() for url in settings.nats_url.split(",")],
        name="klipnote-" + CHILD,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )


async def serve(settings: Settings, filer: str, position: Position) -> None:
    """Run the stand-in until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    nc = await connect(settings)
    try:
        runner = asyncio.create_task(MinioNotifierStandIn(settings, filer, position).run(nc, stopping))
        await stopping.wait()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.embedded.notifier_standin")
    parser.add_argument("--filer", required=True, help="SeaweedFS filer as host:port.grpcPort")
    parser.add_argument("--position", type=Path, required=True, help="file keeping the last event's time")
    parser.add_argument(
        "--since-ns",
        type=int,
        default=None,
        help="where to start when the position file does not exist yet (ns since the epoch; default now)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    position = Position(args.position, args.since_ns if args.since_ns is not None else time.time_ns())
    asyncio.run(serve(Settings(), args.filer, position))


if __name__ == "__main__":
    main()
