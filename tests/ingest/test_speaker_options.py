"""The `diarize` option (events.models.Diarization) on every way in, and routing by which models
can name speakers (events/registry.py DIARIZES): the routing policy, the router, the bucket
drop's metadata, the API's form fields and refusals, the CloudEvents way in, and the CLI.
The diarization itself: tests/models/test_diarization.py; speakers through the running stack
into every format: tests/system/test_speakers.py."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from events import binding, catalogue, routing
from events.lifecycle import JobState
from events.models import (
    Diarization,
    LanguageDetected,
    SegmentTranscribed,
    TranscriptionRequested,
    Word,
)
from events.registry import DIARIZES, MODELS
from functions.belle2.model import Belle2
from functions.ingest.schema import JobRecord
from functions.ingest.uploads.options import request_for
from functions.transcriber import Diarizes, TranscriptionFunction
from functions.whisperx.model import WhisperX
from infra.embedded.stack import EmbeddedStack
from tests.support.cli import klipnote
from tests.support.paths import AUDIO
from tests.support.records import BOTH, MEDIA, requested, routed

MANDARIN_CLIP = AUDIO / "dev" / "zh_aishell3_SSB00050112.wav"
ENGLISH_CLIP = AUDIO / "dev" / "en_arctic_aew_a0001.wav"


# -- the registry and the routing policy --------------------------------------------------------


def test_the_registry_says_which_models_name_speakers_and_their_adapters_agree() -> None:
    """DIARIZES is what routing trusts: each model in it has an adapter that diarizes, and no
    other does (a model added with a diarize method but left out would never get such a job)."""
    assert DIARIZES <= set(MODELS)
    adapters = {"whisperx": WhisperX, "belle2": Belle2}
    assert set(adapters) == set(MODELS)
    assert {name for name, adapter in adapters.items() if hasattr(adapter, "diarize")} == DIARIZES
    assert issubclass(WhisperX, Diarizes) and not issubclass(Belle2, Diarizes)


def test_a_job_with_speakers_goes_to_a_model_that_can_name_them() -> None:
    assert routing.choose_model(None, "zh", BOTH) == routing.Route("belle2", "language rule")
    # The Mandarin rule names belle2, which cannot: passed over, as for a task it cannot do.
    assert routing.choose_model(None, "zh", BOTH, diarize=True) == routing.Route("whisperx", "default")
    assert routing.choose_model(None, "zh", BOTH, detected=True, diarize=True).model == "whisperx"
    belle2_first = BOTH.model_copy(update={"default_transcription_model": "belle2"})
    assert routing.choose_model(None, None, belle2_first, diarize=True).model == "whisperx"


def test_a_model_that_cannot_name_speakers_is_refused_when_named_or_alone() -> None:
    with pytest.raises(routing.RoutingError) as named:
        routing.choose_model("belle2", "zh", BOTH, diarize=True)
    assert named.value.code == "diarization_unsupported"
    assert "whisperx" in named.value.message  # who can
    only_belle2 = BOTH.model_copy(
        update={"enabled_models": ["belle2"], "default_transcription_model": "belle2"}
    )
    with pytest.raises(routing.RoutingError) as alone:
        routing.choose_model(None, "zh", only_belle2, diarize=True)
    assert alone.value.code == "diarization_unsupported"
    # A task no model can do is still named as such first.
    with pytest.raises(routing.RoutingError) as task:
        routing.choose_model(None, "zh", only_belle2, task="translate", diarize=True)
    assert task.value.code == "task_unsupported"


class StandInAdapter:
    """Stands in for a model adapter: only its name and language matter to `_leaves`."""

    name = "whisperx"
    default_language = None


def test_the_model_function_keeps_a_diarized_job_whatever_language_it_hears() -> None:
    function = TranscriptionFunction(StandInAdapter(), BOTH)  # type: ignore[arg-type]
    assert function._leaves("zh")  # a Mandarin job goes to belle2 ...
    assert not function._leaves("zh", diarize=True)  # ... unless it asks for speakers


# -- the router -------------------------------------------------------------------------------------


async def test_the_router_dispatches_the_diarization_to_a_model_that_can_name_speakers() -> None:
    dispatched, _ = await routed(requested(language="zh", diarization={"min_speakers": 2, "max_speakers": 3}))
    assert dispatched.get_data()["model"] == "whisperx"
    assert dispatched.get_data()["diarization"] == {"min_speakers": 2, "max_speakers": 3}
    (failed,) = await routed(requested(model="belle2", diarization={}))
    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "diarization_unsupported"


async def test_a_hand_over_keeps_the_diarization() -> None:
    record = JobRecord(id="job1", state=JobState.QUEUED, media=MEDIA, diarization=Diarization(max_speakers=2))
    detected = LanguageDetected(
        job_id="job1", run_id="r1", model="whisperx", language="zh", probability=0.97,
        speech_seconds=4.0, windows=1, handover=True,
    )  # fmt: skip
    event = binding.new_event(catalogue.LANGUAGE_DETECTED, detected, function="test")
    dispatched, _ = await routed(event, record)
    # The rules name belle2 for Mandarin, which cannot name speakers: the job stays on whisperx.
    assert dispatched.get_data()["model"] == "whisperx"
    assert dispatched.get_data()["diarization"] == {"min_speakers": None, "max_speakers": 2}


def test_a_request_without_speakers_carries_none() -> None:
    assert TranscriptionRequested(media=MEDIA).diarization is None
    with pytest.raises(ValueError, match="min_speakers is more than max_speakers"):
        Diarization(min_speakers=3, max_speakers=2)


# -- a bucket drop's metadata ---------------------------------------------------------------------


def drop(metadata: dict[str, str]) -> TranscriptionRequested:
    return request_for("j", "uploads", "talk.wav", "e1", size=1, content_type=None, metadata=metadata)


def test_a_drop_asks_for_speakers_in_its_metadata(caplog: pytest.LogCaptureFixture) -> None:
    asked = drop(
        {"X-Amz-Meta-Diarize": "True", "X-Amz-Meta-Min-Speakers": "2", "X-Amz-Meta-Max-Speakers": "4"}
    )
    assert asked.diarization == Diarization(min_speakers=2, max_speakers=4)
    assert drop({"X-Amz-Meta-Diarize": "false", "X-Amz-Meta-Max-Speakers": "2"}).diarization is None
    assert drop({}).diarization is None
    with caplog.at_level(logging.WARNING, logger="functions.ingest.uploads"):
        # A bad count leaves diarization on, estimating the count; a bad switch leaves it off.
        assert (
            drop({"X-Amz-Meta-Diarize": "yes", "X-Amz-Meta-Max-Speakers": "many"}).diarization
            == Diarization()
        )
        assert drop({"X-Amz-Meta-Diarize": "perhaps"}).diarization is None
    assert "ignoring X-Amz-Meta-Min/Max-Speakers" in caplog.text
    assert "ignoring X-Amz-Meta-Diarize 'perhaps'" in caplog.text


# -- the API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {"diarize": "true", "min_speakers": "3", "max_speakers": "2"},
        {"diarize": "true", "max_speakers": "0"},
        {"diarize": "true", "max_speakers": "21"},
        {"min_speakers": "2"},  # a count without diarize would be ignored
    ],
)
async def test_bad_speaker_counts_are_refused_with_their_code(
    api: httpx.AsyncClient, form: dict[str, str]
) -> None:
    with open(ENGLISH_CLIP, "rb") as body:
        response = await api.post("/v1/jobs", files={"file": ("a.wav", body)}, data=form)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "speakers_invalid"
    assert "speakers" in detail["message"]


async def test_speakers_from_a_model_that_cannot_name_them_are_refused_before_anything_is_stored(
    routing_api: httpx.AsyncClient,
) -> None:
    with open(MANDARIN_CLIP, "rb") as body:
        response = await routing_api.post(
            "/v1/jobs", files={"file": ("zh.wav", body)}, data={"model": "belle2", "diarize": "true"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] == "diarization_unsupported"
    assert "whisperx" in response.json()["detail"]["message"]


async def test_the_job_shows_its_diarization_and_the_idempotency_key_covers_it(
    api: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "speaker-options-1"}
    form = {"diarize": "true", "max_speakers": "2", "delete_after": "60"}
    first = await api.post(
        "/v1/jobs", files={"file": ("a.wav", ENGLISH_CLIP.read_bytes())}, data=form, headers=key
    )
    assert first.status_code == 202, first.text
    assert first.json()["diarization"] == {"min_speakers": None, "max_speakers": 2}
    other = await api.post(
        "/v1/jobs", files={"file": ("a.wav", ENGLISH_CLIP.read_bytes())}, data={**form, "max_speakers": "3"},
        headers=key,
    )  # fmt: skip
    assert other.status_code == 422 and other.json()["detail"]["code"] == "idempotency_key_reused"
    plain = await api.post(
        "/v1/jobs", files={"file": ("a.wav", ENGLISH_CLIP.read_bytes())}, data={"delete_after": "60"}
    )
    assert plain.status_code == 202 and plain.json()["diarization"] is None


async def test_a_cloudevent_asks_for_speakers_and_a_belle2_one_is_refused(
    routing_api: httpx.AsyncClient,
) -> None:
    """On the stack with both models: belle2 is enabled there, and refused for what it cannot do."""
    media = {"bucket": "uploads", "key": f"nowhere/{uuid.uuid4().hex}.wav"}
    for data, status in (({"media": media, "diarization": {"max_speakers": 2}}, 202),
                         ({"media": media, "model": "belle2", "diarization": {}}, 422)):  # fmt: skip
        request = TranscriptionRequested.model_validate(data)
        event = binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=uuid.uuid4().hex)
        headers, body = binding.encode(event, "structured")
        response = await routing_api.post("/v1/events", content=body, headers=headers)
        assert response.status_code == status, response.text
        if status == 202:
            assert response.json()["diarization"] == {"min_speakers": None, "max_speakers": 2}
        else:
            assert response.json()["detail"]["code"] == "diarization_unsupported"


def test_the_events_of_a_job_without_speakers_are_as_before() -> None:
    """No `diarization`, no `speaker` keys at all when unset: a function not yet upgraded (its
    event models refuse unknown fields) still reads them during a rolling deploy."""
    request = TranscriptionRequested(media=MEDIA)
    segment = SegmentTranscribed(
        job_id="j", run_id="r", sequence=0, start=0.0, end=1.0, text="a", words=[Word(word="a")]
    )
    for event in (binding.new_event(catalogue.REQUESTED, request, function="test"),
                  binding.new_event(catalogue.SEGMENT, segment, function="test")):  # fmt: skip
        _, body = binding.encode(event, "structured")
        assert b"diarization" not in body and b"speaker" not in body
    asked = request.model_copy(update={"diarization": Diarization(max_speakers=2)})
    _, body = binding.encode(binding.new_event(catalogue.REQUESTED, asked, function="test"), "structured")
    assert b'"diarization": {"min_speakers": null, "max_speakers": 2}' in body


async def test_klipnote_submit_sends_the_speaker_options(
    stack: EmbeddedStack, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    submitted = await asyncio.to_thread(
        klipnote,
        "submit", str(ENGLISH_CLIP), "--api", stack.api_url, "--diarize", "--min-speakers", "1",
        "--max-speakers", "2", "--delete-after", "60",
        cache=tmp_path,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = (await api.get(f"/v1/jobs/{submitted.stdout.strip()}")).json()
    assert job["diarization"] == {"min_speakers": 1, "max_speakers": 2}
