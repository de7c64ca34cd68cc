"""Trust boundaries of the job pipeline (issue 15) on the session stack (real nats-server,
SeaweedFS and functions): a finished job never runs again, and each process holds only the
secrets it needs."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext
from pydantic import ValidationError

from events import binding, catalogue, lifecycle, storage
from events.bus import Publisher
from events.lifecycle import JobState
from events.models import ObjectRef, TranscriptionRequested
from events.runtime.function import Runtime
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.ids import job_id_for, keyed_job_id, object_job_id, valid_caller_job_id, valid_job_id
from functions.ingest.jobs import JobStore
from functions.ingest.router import Router
from infra.embedded.processes import SECRETS, Processes, function_env
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, job_events, subject_count
from tests.support.paths import API_KEY, AUDIO, WEBHOOK_SECRET


async def test_a_completed_job_requested_again_is_not_run_again(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    """Past JetStream's dedupe window (1 h), the same request is a new message: a re-announced
    bucket object, a re-published CloudEvent, the same object named again. Before, the router
    dispatched it again and the new run overwrote the finished job's results. Here the router
    and the projector read the real record of a job that completed; the request arrives anew
    (a fresh CloudEvent id, as after the window)."""
    key = f"again/{uuid.uuid4().hex}.wav"
    data = (AUDIO / "librispeech-1995-1837-0001.wav").read_bytes()
    storage.client(stack.settings).put_object(stack.settings.uploads_bucket, key, io.BytesIO(data), len(data))
    response = await api.post("/v1/jobs", data={"media": f"s3://uploads/{key}", "language": "en"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    done = await finished_job(api, js, job_id)
    assert done["state"] == "completed", done
    events = await job_events(js, job_id, {catalogue.COMPLETED.type}, 30)
    (first,) = [event for event in events if binding.kind_of(event) is catalogue.REQUESTED]
    request = binding.parse_data(first, TranscriptionRequested)
    again = binding.new_event(catalogue.REQUESTED, request, function="ingest", event_id=uuid.uuid4().hex)

    runtime = Runtime(stack.settings, Publisher(js, stack.settings), js)
    jobs = await JobStore.open(runtime)
    router = Router(stack.settings, Admission.from_settings(stack.settings), jobs)
    try:
        assert [out async for out in router.route(again)] == []  # no second `dispatched`
        record = await jobs.project(again, job_id)  # the projector's step: nothing moves back
    finally:
        await jobs.close()
    assert record is not None and record.state is JobState.COMPLETED and record.results
    # The API's way in, the same object named again: the same job, still completed, queued once.
    response = await api.post("/v1/jobs", data={"media": f"s3://uploads/{key}", "language": "en"})
    assert response.status_code == 202 and response.json()["id"] == job_id
    assert response.json()["state"] == "completed"
    assert await subject_count(js, catalogue.QUEUED.subject(job_id)) == 1


def environ(pid: int) -> dict[str, str]:
    """A running process's environment, as the kernel keeps it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode(errors="replace").split("\0") if "=" in entry)


def test_each_function_of_the_embedded_stack_holds_only_the_secrets_it_needs(stack: EmbeddedStack) -> None:
    """Before, every child got every setting: the model functions, which parse hostile media,
    held the API key and the webhook signing secret."""
    ingest = environ(stack.child("ingest").process.pid)
    assert ingest["API_KEY"] == API_KEY and ingest["WEBHOOK_SECRET"] == WEBHOOK_SECRET
    for name in ("whisperx", "optimize"):
        env = environ(stack.child(name).process.pid)
        assert "API_KEY" not in env and "WEBHOOK_SECRET" not in env, name
        assert API_KEY not in env.values() and WEBHOOK_SECRET not in env.values(), name
        assert env["S3_SECRET_KEY"] == stack.settings.s3_secret_key  # it reads or writes the store


def test_a_server_of_the_stack_inherits_none_of_the_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-server and SeaweedFS are spawned with our environment: without any of `SECRETS`
    (`env`, standing in for a server, prints what it got)."""
    for name in SECRETS:
        monkeypatch.setenv(name, f"secret-{name}")
    processes = Processes(tmp_path)
    child = processes.spawn("server-stand-in", ["env"])
    assert child.process.wait(timeout=30) == 0
    printed = child.log_path.read_text()
    assert "PATH=" in printed
    assert not [name for name in SECRETS if f"{name}=" in printed]


async def test_an_idempotency_key_sent_again_with_another_request_is_refused(api: httpx.AsyncClient) -> None:
    """Before, the key reused with another file silently answered with the first job: the caller
    believed the second file was being transcribed. Now the same request is the same job, and
    another file or other options under the key are a 422 (draft-ietf-httpapi-idempotency-key-header)."""
    key = {"Idempotency-Key": uuid.uuid4().hex}

    async def post(clip: str, **form: str) -> httpx.Response:
        with open(AUDIO / clip, "rb") as body:
            return await api.post("/v1/jobs", files={"file": ("talk.wav", body)}, data=form, headers=key)

    first = await post("librispeech-1995-1837-0001.wav", language="en")
    assert first.status_code == 202, first.text
    assert (await post("librispeech-1995-1837-0001.wav", language="en")).json()["id"] == first.json()["id"]
    for other in (post("jfk.flac", language="en"), post("librispeech-1995-1837-0001.wav", language="de")):
        refused = await other
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["code"] == "idempotency_key_reused"
    job = (await api.get(f"/v1/jobs/{first.json()['id']}")).json()
    assert job["language"] == "en" and "request_digest" not in job


async def test_a_keyed_request_whose_publish_failed_runs_when_it_is_retried(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    """The gateway writes the record before it publishes the request: when the publish fails the
    caller gets an error and retries with its key. Before, the retry found the record and answered
    with it, and the job stayed `requested` for ever. Here the record is written and nothing is
    published (the failed publish); the retry publishes the request again and the job runs."""
    idempotency_key = uuid.uuid4().hex
    job_id = keyed_job_id(idempotency_key)
    key = f"klipnote-api/{job_id}/talk.wav"
    data = (AUDIO / "librispeech-1995-1837-0001.wav").read_bytes()
    put = storage.client(stack.settings).put_object(
        stack.settings.uploads_bucket, key, io.BytesIO(data), len(data)
    )
    media = ObjectRef(bucket=stack.settings.uploads_bucket, key=key, etag=put.etag, size=len(data))
    request = TranscriptionRequested(job_id=job_id, media=media, language="en", filename="talk.wav")
    event = binding.new_event(
        catalogue.REQUESTED, request, function="ingest", event_id=lifecycle.requested_id(job_id)
    )
    jobs = await JobStore.open(Runtime(stack.settings, Publisher(js, stack.settings), js))
    try:
        assert (await jobs.project(event, job_id)) is not None  # the record, and no request on the bus
    finally:
        await jobs.close()

    with open(AUDIO / "librispeech-1995-1837-0001.wav", "rb") as body:
        retry = await api.post(
            "/v1/jobs",
            files={"file": ("talk.wav", body)},
            data={"language": "en"},
            headers={"Idempotency-Key": idempotency_key},
        )
    assert retry.status_code == 202 and retry.json()["id"] == job_id
    assert (await finished_job(api, js, job_id))["state"] == "completed"


def test_a_caller_cannot_name_a_job_of_ours_by_its_event_source_and_id() -> None:
    """A job a caller's CloudEvent names is derived from its source and id; before, the source
    `request` and id `<key>` spelled the job of that Idempotency-Key (and `object` the job of a
    stored object), so a caller could take either before it existed."""
    media = ObjectRef(bucket="uploads", key="k.wav", etag="e1")
    request = TranscriptionRequested(media=media)
    forged_key = CloudEvent({"type": catalogue.REQUESTED.type, "source": "request", "id": "key-1"}, {})
    forged_object = CloudEvent(
        {"type": catalogue.REQUESTED.type, "source": "object", "id": "uploads\nk.wav\ne1"}, {}
    )
    assert job_id_for(forged_key, request) != keyed_job_id("key-1")
    assert job_id_for(forged_object, request) != object_job_id("uploads", "k.wav", "e1")
    split = CloudEvent({"type": catalogue.REQUESTED.type, "source": "a\nb", "id": "c"}, {})
    other = CloudEvent({"type": catalogue.REQUESTED.type, "source": "a", "id": "b\nc"}, {})
    assert job_id_for(split, request) != job_id_for(other, request)


@pytest.mark.parametrize("job_id", ["job\n", "job\r\n", "\njob"])
def test_a_job_id_with_a_line_break_is_no_job_id(job_id: str) -> None:
    """`re.match` with `$` let a final newline through, and the id then broke the subject it
    names (a 500 over HTTP, a crashing router on NATS)."""
    assert not valid_job_id(job_id) and not valid_caller_job_id(job_id)


@pytest.mark.parametrize("setting", ["API_KEY", "WEBHOOK_SECRET", "RECEIVER_TOKEN"])
def test_an_empty_secret_is_refused_at_start(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty Secret set API_KEY to "": `Authorization: Bearer ` (nothing after it) was the key."""
    monkeypatch.setenv(setting, "")
    with pytest.raises(ValidationError, match=setting.lower()):
        Settings()


def test_a_secret_named_in_lower_case_is_held_back_too() -> None:
    """Settings read the environment case-insensitively: `api_key` is the API key as well."""
    env = {"api_key": "k", "Webhook_Secret": "w", "PATH": "/bin"}
    assert function_env("whisperx", env) == {"PATH": "/bin"}
    assert function_env("ingest", env) == env
