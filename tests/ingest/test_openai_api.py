"""The OpenAI-compatible routes, driven by the real `openai` SDK against the running stack: each
`response_format` of ../shared/audio/jfk.flac (read back with pysubs2 and webvtt-py), Mandarin
through the same call landing on belle2, translation, the model list, and the refusals in OpenAI's
error shape that the SDK raises as its own exceptions. One real transcription per format; the
refusals make no job. The wait's end is tested on an ingest API served here with OPENAI_WAIT_S=0,
over the stack's NATS and SeaweedFS, so its job runs on the stack and the job id named can be
followed to its end."""

from __future__ import annotations

import asyncio
import io
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pysubs2
import pytest
import uvicorn
import webvtt
from fastapi import FastAPI
from nats.js import JetStreamContext

from events import catalogue, storage
from events.bus import Publisher
from events.runtime.function import Runtime
from functions.ingest.admission import Admission
from functions.ingest.api import create_app
from functions.ingest.api.openai import JOB_HEADER
from functions.ingest.api.openai_shapes import WHISPER_LANGUAGES, language_name, one_line, verbose
from functions.ingest.gateway import Gateway
from functions.ingest.jobs import JobStore
from functions.ingest.links import ResultLinks
from functions.ingest.schema import JobRecord
from infra.embedded.stack import EmbeddedStack
from tests.ingest.test_api_limits import exchange, post_head
from tests.support.jobs import finished_job
from tests.support.paths import API_KEY, AUDIO, reference
from tests.support.quality import wer

JFK = AUDIO / "jfk.flac"
JFK_SECONDS = 11.0
MANDARIN = AUDIO / "aishell-BAC009S0724W0121.wav"


def client(url: str, api_key: str = API_KEY) -> openai.AsyncOpenAI:
    # No retries: a test sees each answer as it came (an upload retried is a new job).
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=300)


@pytest.fixture
async def sdk(stack: EmbeddedStack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client(stack.api_url) as connected:
        yield connected


def jfk() -> tuple[str, bytes, str]:
    return ("jfk.flac", JFK.read_bytes(), "audio/flac")


async def transcribe(sdk: openai.AsyncOpenAI, **options: Any) -> tuple[Any, str]:
    """The parsed answer to a transcription of jfk and the job id its header names."""
    raw = await sdk.audio.transcriptions.with_raw_response.create(file=jfk(), **options)
    return raw.parse(), raw.headers[JOB_HEADER]


async def record(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    answer = await api.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


# -- each response_format ---------------------------------------------------------------------


async def test_json_gives_the_text_and_an_unknown_openai_model_routes_by_language(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient
) -> None:
    transcription, job_id = await transcribe(sdk, model="gpt-4o-transcribe", response_format="json")

    assert isinstance(transcription, openai.types.audio.Transcription)
    assert wer(reference("jfk"), transcription.text) <= 0.10, transcription.text
    job = await record(api, job_id)
    assert job["state"] == "completed" and job["requested_model"] is None
    assert (job["model"], job["routing_reason"]) == ("whisperx", "detected language")


async def test_text_is_the_plain_transcript_and_the_prompt_reaches_the_job(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient
) -> None:
    prompt = "President Kennedy's inaugural address."
    text, job_id = await transcribe(sdk, model="whisper-1", response_format="text", prompt=prompt)

    assert isinstance(text, str) and "{" not in text
    assert wer(reference("jfk"), text) <= 0.10, text
    job = await record(api, job_id)
    assert job["decoding"]["prompt"] == prompt and job["decoding"]["task"] == "transcribe"


async def test_srt_is_the_stored_subrip_file_and_a_klipnote_model_is_honoured(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient
) -> None:
    subrip, job_id = await transcribe(sdk, model="whisperx", response_format="srt", temperature=0.0)

    cues = pysubs2.SSAFile.from_string(subrip, format_="srt")
    assert len(cues) >= 2
    assert all(0 <= cue.start < cue.end <= JFK_SECONDS * 1000 for cue in cues)
    assert wer(reference("jfk"), " ".join(cue.plaintext for cue in cues)) <= 0.10
    job = await record(api, job_id)
    assert (job["requested_model"], job["routing_reason"]) == ("whisperx", "requested")
    # OpenAI's temperature 0 is the model's own schedule: no temperature of our own.
    assert job["decoding"]["temperature"] is None
    stored = await api.get(f"/v1/jobs/{job_id}/transcript.srt")
    assert stored.text == subrip


async def test_vtt_is_the_stored_webvtt_file(sdk: openai.AsyncOpenAI, api: httpx.AsyncClient) -> None:
    text, job_id = await transcribe(sdk, model="whisper-1", response_format="vtt")

    captions = webvtt.from_buffer(io.StringIO(text)).captions
    assert len(captions) >= 2
    assert all(0 <= caption.start_in_seconds < caption.end_in_seconds <= JFK_SECONDS for caption in captions)
    assert wer(reference("jfk"), " ".join(caption.text for caption in captions)) <= 0.10
    assert (await api.get(f"/v1/jobs/{job_id}/transcript.vtt")).text == text


async def test_verbose_json_gives_language_duration_segments_and_words(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient
) -> None:
    answer, job_id = await transcribe(
        sdk, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )

    assert isinstance(answer, openai.types.audio.TranscriptionVerbose)
    extra = answer.model_extra or {}
    assert extra["task"] == "transcribe" and answer.language == "english"
    assert answer.duration == pytest.approx(JFK_SECONDS, abs=0.2)
    assert wer(reference("jfk"), answer.text) <= 0.10, answer.text
    segments, words = answer.segments or [], answer.words or []
    assert segments and [segment.id for segment in segments] == list(range(len(segments)))
    assert all(0 <= s.start < s.end <= answer.duration + 0.01 for s in segments)
    assert wer(reference("jfk"), " ".join(segment.text for segment in segments)) <= 0.10
    # Every word, each timed, in order: the text again, word by word.
    assert wer(reference("jfk"), " ".join(word.word for word in words)) <= 0.10
    assert all(w.start <= w.end for w in words)
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    # The segments are the stored result's cues, not a transcription of their own.
    stored = (await api.get(f"/v1/jobs/{job_id}/transcript.json")).json()
    assert [(s.start, s.end) for s in segments] == [(c["start"], c["end"]) for c in stored["cues"]]


async def test_a_translation_answers_verbose_json_with_its_task_and_segments(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient
) -> None:
    """Task translate reaches the job; whisperx translates English speech to English. Segments,
    as OpenAI's translations give them, and no words."""
    raw = await sdk.audio.translations.with_raw_response.create(
        file=jfk(), model="whisper-1", response_format="verbose_json"
    )
    answer = raw.parse()

    assert (answer.model_extra or {})["task"] == "translate"
    assert answer.segments and "words" not in (answer.model_extra or {})
    assert wer(reference("jfk"), answer.text) <= 0.15, answer.text
    assert (await record(api, raw.headers[JOB_HEADER]))["decoding"]["task"] == "translate"


# -- Mandarin lands on belle2 -----------------------------------------------------------------


async def test_mandarin_through_whisper_1_lands_on_belle2(routing_stack: EmbeddedStack) -> None:
    """The same SDK call as any, model whisper-1: detection hears Mandarin, routing hands the job
    to belle2 (LANGUAGE_MODELS zh=belle2). The routing stack has no API key."""
    async with client(routing_stack.api_url, api_key="any") as sdk:
        raw = await sdk.audio.transcriptions.with_raw_response.create(
            file=(MANDARIN.name, MANDARIN.read_bytes(), "audio/wav"),
            model="whisper-1",
            response_format="verbose_json",
        )
    answer = raw.parse()

    assert answer.language == "chinese"
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in answer.text) >= 8, answer.text
    async with httpx.AsyncClient(base_url=routing_stack.api_url) as api:
        job = await record(api, raw.headers[JOB_HEADER])
    assert (job["model"], job["routing_reason"]) == ("belle2", "detected language")


async def test_a_translation_no_enabled_model_can_do_is_refused(routing_stack: EmbeddedStack) -> None:
    async with client(routing_stack.api_url, api_key="any") as sdk:
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.audio.translations.create(file=jfk(), model="belle2")

    assert (refused.value.code, refused.value.param) == ("task_unsupported", "model")
    assert "cannot translate" in refused.value.message


# -- models -----------------------------------------------------------------------------------


async def test_the_model_list_is_the_enabled_models_and_whisper_1(
    sdk: openai.AsyncOpenAI, stack: EmbeddedStack
) -> None:
    models = [model async for model in sdk.models.list()]

    assert [model.id for model in models] == [*stack.settings.enabled_models, "whisper-1"]
    assert {(model.object, model.owned_by) for model in models} == {("model", "klipnote")}
    assert (await sdk.models.retrieve("whisper-1")).id == "whisper-1"
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.models.retrieve("gpt-4o-transcribe")
    assert missing.value.code == "model_not_found"


async def test_an_unknown_audio_route_is_a_404_in_openais_shape(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.audio.speech.create(model="tts-1", voice="alloy", input="hello")

    assert missing.value.code == "route_not_found" and missing.value.type == "invalid_request_error"


# -- refusals ---------------------------------------------------------------------------------


async def test_a_file_the_decoder_cannot_read_is_a_400_with_the_jobs_code(
    sdk: openai.AsyncOpenAI, api: httpx.AsyncClient
) -> None:
    """A job is made, and fails: the answer carries its code and message, and its id."""
    corrupt = b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\xff" * 4000
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.audio.transcriptions.create(file=("notes.wav", corrupt, "audio/wav"), model="whisper-1")

    error = refused.value
    assert (error.code, error.type, error.param) == ("media_unreadable", "invalid_request_error", "file")
    job = await record(api, error.response.headers[JOB_HEADER])
    assert isinstance(error.body, dict)
    assert job["state"] == "failed" and job["error"]["message"] == error.body["message"]


async def test_a_file_that_is_no_media_is_refused_at_the_door(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.audio.transcriptions.create(file=("notes.txt", b"hello", "text/plain"), model="whisper-1")

    assert (refused.value.code, refused.value.param) == ("media_type_unsupported", "file")
    assert JOB_HEADER not in refused.value.response.headers  # no job was made


@pytest.mark.parametrize(
    ("options", "code", "param"),
    [
        ({"stream": True}, "stream_unsupported", "stream"),
        ({"response_format": "docx"}, "request_invalid", "response_format"),
        ({"timestamp_granularities": ["character"]}, "request_invalid", "timestamp_granularities[]"),
        ({"temperature": 1.5}, "request_invalid", "temperature"),
        ({"prompt": "x" * 2001}, "request_invalid", "prompt"),
        ({"language": "english"}, "language_invalid", "language"),
        ({"model": "belle2"}, "model_disabled", "model"),
    ],
    ids=["stream", "format", "granularity", "temperature", "prompt", "language", "model-disabled"],
)
async def test_invalid_options_are_a_400_naming_the_parameter(
    sdk: openai.AsyncOpenAI, options: dict[str, Any], code: str, param: str
) -> None:
    """Refused before a job is made (OpenAI answers invalid parameters 400, not 422)."""
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.audio.transcriptions.create(file=jfk(), **{"model": "whisper-1", **options})

    assert (refused.value.code, refused.value.param, refused.value.type) == (
        code,
        param,
        "invalid_request_error",
    )
    assert JOB_HEADER not in refused.value.response.headers


async def test_a_request_without_a_file_is_a_400(stack: EmbeddedStack) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as api:
        answer = await api.post("/v1/audio/transcriptions", data={"model": "whisper-1"})

    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": "body.file: Field required",
        "type": "invalid_request_error",
        "param": "file",
        "code": "request_invalid",
    }


async def test_a_wrong_key_is_an_authentication_error(stack: EmbeddedStack) -> None:
    """A voice clip (0.12 MiB), as Open WebUI sends: a body declared no larger than
    API_MAX_BODY_BYTES is drained before the answer, so the SDK reads it (a connection closed on
    unread bytes is reset, and the SDK saw only a connection error)."""
    clip = AUDIO / "dev" / "en_arctic_aew_a0001.wav"
    assert clip.stat().st_size < stack.settings.api_max_body_bytes
    async with client(stack.api_url, api_key="wrong-key") as wrong:
        with pytest.raises(openai.AuthenticationError) as refused:
            await wrong.audio.transcriptions.create(file=(clip.name, clip.read_bytes()), model="whisper-1")
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()

    assert refused.value.code == "unauthorized" and refused.value.type == "invalid_request_error"


async def test_an_upload_over_the_limit_is_a_413_in_openais_shape_before_its_body_is_read(
    stack: EmbeddedStack,
) -> None:
    limit = stack.settings.max_upload_bytes + stack.settings.api_max_body_bytes
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        head = post_head(path, length=limit + 1, more="Content-Type: multipart/form-data; boundary=x\n")
        answer = await exchange(stack.api_url, head)
        assert answer.status == 413
        assert answer.body["error"]["code"] == "media_too_large"  # type: ignore[index]
        assert answer.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    # KlipNote's own routes keep their shape.
    head = post_head("/v1/jobs", length=limit + 1, more="Content-Type: multipart/form-data; boundary=x\n")
    assert (await exchange(stack.api_url, head)).code == "media_too_large"


# -- the wait's end ---------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    app: FastAPI


@pytest.fixture
async def impatient_api(stack: EmbeddedStack, js: JetStreamContext) -> AsyncIterator[Served]:
    """ingest's API with OPENAI_WAIT_S=0 and one wait (or event stream) at a time, served by
    uvicorn here over the stack's NATS, SeaweedFS and jobs bucket (the stack's projector writes
    it): its jobs run on the stack."""
    settings = stack.settings.model_copy(update={"openai_wait_s": 0.0, "api_max_event_streams": 1})
    runtime = Runtime(settings, Publisher(js, settings), js)
    store = JobStore(await js.key_value(catalogue.JOBS_KV_BUCKET), runtime)
    s3 = storage.client(settings)
    gateway = Gateway(settings, store, runtime.publisher, s3, ResultLinks(s3, 60))
    app = create_app(settings, Admission.from_settings(settings), lambda: gateway)
    listening = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield Served(f"http://127.0.0.1:{listening.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        await task
        listening.close()


async def test_a_job_that_outlasts_the_wait_is_a_504_naming_the_job_to_poll(
    impatient_api: Served, api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    url = f"{impatient_api.url}/v1"
    async with openai.AsyncOpenAI(base_url=url, api_key=API_KEY, timeout=60) as sdk:
        # The SDK's own retries on: the answer tells it not to (a retried upload is a new job).
        with pytest.raises(openai.InternalServerError) as refused:
            await sdk.audio.transcriptions.create(file=jfk(), model="whisper-1")

    error = refused.value
    job_id = error.response.headers[JOB_HEADER]
    assert error.status_code == 504 and error.code == "job_still_running"
    assert error.response.headers["x-should-retry"] == "false"
    assert f"GET /v1/jobs/{job_id}" in error.message
    # The job goes on, and can be polled to its end as the message says.
    job = await finished_job(api, js, job_id)
    assert job["state"] == "completed"
    assert wer(reference("jfk"), (await api.get(f"/v1/jobs/{job_id}/transcript.txt")).text) <= 0.10


async def test_requests_waiting_at_once_are_bounded_by_the_stream_slots(impatient_api: Served) -> None:
    """A wait holds a reader of the job's events as a live stream does: with every slot taken
    (API_MAX_EVENT_STREAMS, here 1), 503 `too_many_streams` before anything is stored."""
    slot = impatient_api.app.state.parts.streams.take()
    assert slot is not None
    try:
        async with client(impatient_api.url) as sdk:
            with pytest.raises(openai.InternalServerError) as refused:
                await sdk.audio.transcriptions.create(file=jfk(), model="whisper-1")
    finally:
        slot.release()

    assert (refused.value.status_code, refused.value.code) == (503, "too_many_streams")
    assert JOB_HEADER not in refused.value.response.headers


class LostBus(Gateway):
    """A stand-in for NATS lost after the job was submitted: reading the job fails."""

    async def current_job(self, job_id: str) -> JobRecord | None:
        raise ConnectionError("nats: connection closed")


async def test_a_failure_after_the_job_exists_names_the_job_and_tells_the_sdk_not_to_retry(
    stack: EmbeddedStack, js: JetStreamContext, api: httpx.AsyncClient
) -> None:
    # A bare 500 would make the SDK upload the file again, as a new job, twice more.
    settings = stack.settings.model_copy(update={"openai_wait_s": 0.0})
    runtime = Runtime(settings, Publisher(js, settings), js)
    store = JobStore(await js.key_value(catalogue.JOBS_KV_BUCKET), runtime)
    s3 = storage.client(settings)
    gateway = LostBus(settings, store, runtime.publisher, s3, ResultLinks(s3, 60))
    app = create_app(settings, Admission.from_settings(settings), lambda: gateway)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        sdk = openai.AsyncOpenAI(base_url="http://ingest/v1", api_key=API_KEY, http_client=http)
        with pytest.raises(openai.InternalServerError) as refused:
            await sdk.audio.transcriptions.create(file=jfk(), model="whisper-1")

    error = refused.value
    assert (error.status_code, error.code) == (503, "job_unfollowed")
    assert error.response.headers["x-should-retry"] == "false"
    job_id = error.response.headers[JOB_HEADER]
    assert f"GET /v1/jobs/{job_id}" in error.message
    assert (await finished_job(api, js, job_id))["state"] == "completed"  # the one job, polled


# -- shapes without a stack -------------------------------------------------------------------


def test_language_names_are_whispers() -> None:
    from whisperx.utils import LANGUAGES

    assert WHISPER_LANGUAGES == LANGUAGES
    assert (language_name("zh-CN"), language_name("xx"), language_name(None)) == ("chinese", "xx", "")


def test_a_word_the_aligner_could_not_time_takes_the_time_before_it() -> None:
    document = {
        "language": "en",
        "audio_seconds": 3.0,
        "cues": [
            {
                "start": 0.5,
                "end": 2.0,
                "text": "ask not\nwhat",
                "words": [
                    {"word": " ask", "start": None, "end": None},
                    {"word": "not", "start": 0.9, "end": 1.2},
                    {"word": "what", "start": 1.4},
                ],
            }
        ],
    }
    shown = verbose(document, "ask not what", "transcribe", None, {"word"})

    assert shown.segments is None and shown.words is not None
    assert [(w.word, w.start, w.end) for w in shown.words] == [
        ("ask", 0.5, 0.5),
        ("not", 0.9, 1.2),
        ("what", 1.4, 1.4),
    ]
    both = verbose(document, "ask not what", "transcribe", 0.2, {"word", "segment"})
    assert both.segments is not None and both.segments[0].text == "ask not what"
    assert both.segments[0].temperature == 0.2
    assert both.language == "english"
    assert (one_line("ask not\nwhat"), one_line("我们\n今天"), one_line("好。\nOK")) == (
        "ask not what",
        "我们今天",
        "好。OK",
    )
    # A translation's language is its output's, as OpenAI's: English, whatever was spoken.
    chinese = {**document, "language": "zh"}
    assert verbose(chinese, "", "transcribe", None, set()).language == "chinese"
    assert verbose(chinese, "", "translate", None, set()).language == "english"
