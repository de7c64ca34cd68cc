"""Per-job decoding options (events.models.Decoding) on every way in, and routing by what each
model can do (events/registry.py TASKS): the routing policy and the router in process, the
bucket drop's metadata, the API's form fields and refusals, and one job end to end through the
running stack with `prompt` and `task=translate`."""

from __future__ import annotations

import asyncio
import email.header
import logging
import re
from pathlib import Path

import httpx
import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext

from events import binding, catalogue, routing
from events.lifecycle import JobState
from events.models import Decoding, LanguageDetected, TranscriptionRequested
from events.registry import MODELS, TASKS
from events.settings import Settings
from functions.ingest.schema import JobRecord
from functions.ingest.uploads.options import request_for
from functions.transcriber import TranscriptionFunction
from infra.embedded.stack import EmbeddedStack
from tests.support.cli import klipnote
from tests.support.jobs import finished_job, submit
from tests.support.paths import AUDIO
from tests.support.records import BOTH, MEDIA, requested, routed

MANDARIN_CLIP = AUDIO / "dev" / "zh_aishell3_SSB00050112.wav"
ENGLISH_CLIP = AUDIO / "dev" / "en_arctic_aew_a0001.wav"


# -- the routing policy ---------------------------------------------------------------------------


def test_every_registered_model_says_which_tasks_it_can_do() -> None:
    assert set(TASKS) == set(MODELS)
    assert routing.can_do("whisperx", "translate") and not routing.can_do("belle2", "translate")
    assert all(routing.can_do(model, "transcribe") for model in MODELS)


def test_mandarin_to_translate_goes_to_a_model_that_can_translate() -> None:
    assert routing.choose_model(None, "zh", BOTH) == routing.Route("belle2", "language rule")
    # The rule names belle2, which cannot translate: passed over, as a disabled model is.
    assert routing.choose_model(None, "zh", BOTH, task="translate") == routing.Route("whisperx", "default")
    assert routing.choose_model(None, "zh-CN", BOTH, task="translate", detected=True) == routing.Route(
        "whisperx", "detected language"
    )


def test_a_model_that_cannot_do_the_task_is_refused_when_named() -> None:
    with pytest.raises(routing.RoutingError) as refused:
        routing.choose_model("belle2", "zh", BOTH, task="translate")
    assert refused.value.code == "task_unsupported"
    assert "belle2" in refused.value.message and "whisperx" in refused.value.message
    assert routing.choose_model("whisperx", "zh", BOTH, task="translate").model == "whisperx"


def test_a_default_that_cannot_translate_gives_way_to_one_that_can_or_refuses_clearly() -> None:
    belle2_first = Settings(enabled_models=["belle2", "whisperx"], default_transcription_model="belle2")
    assert routing.choose_model(None, None, belle2_first, task="translate").model == "whisperx"
    assert routing.choose_model(None, None, belle2_first).model == "belle2"
    only_belle2 = Settings(enabled_models=["belle2"], default_transcription_model="belle2")
    with pytest.raises(routing.RoutingError) as refused:
        routing.choose_model(None, "zh", only_belle2, task="translate")
    assert refused.value.code == "task_unsupported"
    assert "no enabled model can translate" in refused.value.message


class StandInAdapter:
    """Only the adapter's name and language: `_leaves` asks the routing policy, not the model."""

    name = "whisperx"
    default_language = None


def test_the_model_function_hands_over_by_detected_language_only_where_the_task_can_go() -> None:
    function = TranscriptionFunction(StandInAdapter(), BOTH)  # type: ignore[arg-type]
    assert function._leaves("zh")  # a Mandarin transcription goes to belle2
    assert not function._leaves("zh", "translate")  # ... a Mandarin translation stays
    assert not function._leaves("en", "translate")


# -- the router ------------------------------------------------------------------------------------


async def test_the_router_dispatches_the_requests_decoding_to_a_model_that_can_do_it() -> None:
    decoding = {"task": "translate", "prompt": "Running.", "hotwords": "health", "temperature": 0.2}
    dispatched, _ = await routed(requested(language="zh", decoding=decoding))

    assert dispatched.get_data()["model"] == "whisperx"
    assert dispatched.get_data()["decoding"] == decoding


async def test_the_router_fails_a_request_for_a_model_that_cannot_do_its_task() -> None:
    (failed,) = await routed(requested(model="belle2", decoding={"task": "translate"}))
    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "task_unsupported"


async def test_a_hand_over_keeps_the_records_decoding_and_task() -> None:
    def handed_over() -> CloudEvent:
        detected = LanguageDetected(
            job_id="job1", run_id="r1", model="whisperx", language="zh", probability=0.97,
            speech_seconds=4.0, windows=1, handover=True,
        )  # fmt: skip
        return binding.new_event(catalogue.LANGUAGE_DETECTED, detected, function="whisperx")

    prompted = Decoding(prompt="以下是普通话的句子。")
    record = JobRecord(
        id="job1", state=JobState.TRANSCRIBING, media=MEDIA, model="whisperx", decoding=prompted
    )
    dispatched, _ = await routed(handed_over(), record)
    assert dispatched.get_data()["model"] == "belle2"
    assert dispatched.get_data()["decoding"] == prompted.model_dump(mode="json")

    translating = record.model_copy(update={"decoding": Decoding(task="translate")})
    dispatched, _ = await routed(handed_over(), translating)
    assert dispatched.get_data()["model"] == "whisperx"  # never to belle2, which cannot translate
    assert dispatched.get_data()["decoding"]["task"] == "translate"


# -- bucket drops ----------------------------------------------------------------------------------


def dropped(metadata: dict[str, str]) -> TranscriptionRequested:
    return request_for("job1", "uploads", "talk.wav", "e1", size=10, content_type=None, metadata=metadata)


def test_a_dropped_objects_metadata_carries_the_decoding_options_and_delete_after() -> None:
    chinese = email.header.Header("以下是普通话的句子。", "utf-8").encode()  # S3 metadata is ASCII
    request = dropped(
        {
            "X-Amz-Meta-Task": "translate",
            "X-Amz-Meta-Prompt": chinese,
            "X-Amz-Meta-Hotwords": "Philip Steels",
            "X-Amz-Meta-Temperature": "0.4",
            "X-Amz-Meta-Delete-After": "3600",
        }
    )
    assert request.decoding == Decoding(
        task="translate", prompt="以下是普通话的句子。", hotwords="Philip Steels", temperature=0.4
    )
    assert request.delete_after == 3600
    assert dropped({}).decoding == Decoding() and dropped({}).delete_after is None


def test_a_dropped_objects_bad_decoding_values_are_logged_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="functions.ingest.uploads"):
        request = dropped(
            {
                "X-Amz-Meta-Task": "summarize",
                "X-Amz-Meta-Temperature": "7",
                "X-Amz-Meta-Prompt": "x" * 2001,
                "X-Amz-Meta-Hotwords": "Philip Steels",
                "X-Amz-Meta-Delete-After": "soon",
            }
        )
    assert request.decoding == Decoding(hotwords="Philip Steels")  # the good one kept
    assert request.delete_after is None
    logged = caplog.text
    for name in ("Task", "Temperature", "Prompt", "Delete-After"):
        assert f"ignoring X-Amz-Meta-{name}" in logged, name


# -- the API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"task": "summarize"}, "task_invalid"),
        ({"temperature": "1.5"}, "temperature_invalid"),
        ({"temperature": "-0.1"}, "temperature_invalid"),
        ({"prompt": "p" * 2001}, "prompt_invalid"),
        ({"hotwords": "h" * 1001}, "hotwords_invalid"),
    ],
)
async def test_bad_decoding_options_are_refused_with_their_code(
    api: httpx.AsyncClient, form: dict[str, str], code: str
) -> None:
    with open(ENGLISH_CLIP, "rb") as body:
        response = await api.post("/v1/jobs", files={"file": ("a.wav", body)}, data=form)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code
    assert next(iter(form)) in detail["message"]  # the field is named


async def test_a_task_the_named_model_cannot_do_is_refused_before_anything_is_stored(
    routing_api: httpx.AsyncClient,
) -> None:
    with open(MANDARIN_CLIP, "rb") as body:
        response = await routing_api.post(
            "/v1/jobs", files={"file": ("zh.wav", body)}, data={"model": "belle2", "task": "translate"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] == "task_unsupported"
    assert "whisperx" in response.json()["detail"]["message"]  # who can


async def test_the_idempotency_key_covers_the_decoding_options(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "decoding-options-1"}
    first = await api.post(
        "/v1/jobs", files={"file": ("a.wav", ENGLISH_CLIP.read_bytes())}, data={"prompt": "A"}, headers=key
    )
    assert first.status_code == 202, first.text
    assert first.json()["decoding"]["prompt"] == "A"
    same = await api.post(
        "/v1/jobs", files={"file": ("a.wav", ENGLISH_CLIP.read_bytes())}, data={"prompt": "A"}, headers=key
    )
    assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
    other = await api.post(
        "/v1/jobs", files={"file": ("a.wav", ENGLISH_CLIP.read_bytes())}, data={"prompt": "B"}, headers=key
    )
    assert other.status_code == 422 and other.json()["detail"]["code"] == "idempotency_key_reused"


async def test_klipnote_submit_sends_the_decoding_options(
    stack: EmbeddedStack, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    submitted = await asyncio.to_thread(
        klipnote,
        "submit", str(ENGLISH_CLIP), "--api", stack.api_url, "--task", "translate",
        "--prompt", "Philip Steels", "--hotwords", "danger trail", "--temperature", "0.2",
        "--delete-after", "3600",
        cache=tmp_path,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = (await api.get(f"/v1/jobs/{submitted.stdout.strip()}")).json()
    assert job["decoding"] == {
        "task": "translate",
        "prompt": "Philip Steels",
        "hotwords": "danger trail",
        "temperature": 0.2,
    }
    assert job["delete_after"] == 3600


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
async def test_a_job_to_translate_and_a_prompted_job_are_recorded_and_applied(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    """Through the running stack: a Mandarin job to translate (Mandarin's rule names belle2,
    which cannot translate: it goes to whisperx) whose result is English; an English job whose
    prompt names Philip Steels has the name spelled so (whisper-base alone hears "fill up
    steels"). Each record keeps the options as asked.

    On the session stack (five beams): on the routing stack's greedy decoding whisper-base's
    translation of this clip was refused by Whisper's rules, sampled again, and scored so low
    (mean log-probability under -1, word probabilities under 0.5) that optimize dropped it as a
    doubtful segment, leaving an empty transcript. An English prompt on the Mandarin job made
    greedy whisper-base write Chinese in a measurement: the two options get a job each."""
    translated = await submit(api, MANDARIN_CLIP, language="zh", task="translate", delete_after="86400")
    prompted = await submit(api, ENGLISH_CLIP, language="en", task="transcribe", prompt="Philip Steels")
    job = await finished_job(api, js, translated, 480)

    assert job["state"] == "completed", job
    assert job["model"] == "whisperx"
    assert job["decoding"] == {"task": "translate", "prompt": None, "hotwords": None, "temperature": None}
    assert job["delete_after"] == 86400
    text = (await api.get(f"/v1/jobs/{translated}/transcript.txt")).text
    assert len(re.findall(r"[A-Za-z]+", text)) >= 5, text
    assert text.isascii(), text  # English, not Chinese

    job = await finished_job(api, js, prompted, 480)
    assert job["state"] == "completed", job
    assert job["decoding"] == {
        "task": "transcribe",
        "prompt": "Philip Steels",
        "hotwords": None,
        "temperature": None,
    }
    text = (await api.get(f"/v1/jobs/{prompted}/transcript.txt")).text
    assert "Philip Steels" in text, text
