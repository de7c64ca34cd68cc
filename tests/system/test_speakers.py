"""Speakers through the running stack (issue 18): a three-speaker mix of real speech
(tests/support/mixes.py, exact turns) asked with `diarize=true` comes back naming three
speakers, every turn longer than 2 s attributed to the right one in every format, read back
with independent parsers (pysubs2 for SRT and VTT, webvtt-py for VTT's voice spans). And the
model function's refusals: a model that cannot name speakers, a diarization model that cannot
load."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pysubs2
import pytest
import webvtt
from nats.js import JetStreamContext
from openai.types.audio import TranscriptionDiarized

from events import catalogue
from events.models import Diarization
from events.settings import Settings
from functions.ingest.api import openai_shapes
from functions.transcriber import JobFailed, Segment, SpeakerAttribution, TranscriptionFunction, decode
from functions.transcriber.cancel import JobCanceled
from functions.whisperx.model import WhisperX
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, job_events
from tests.support.mixes import Mix, three_speakers
from tests.support.paths import API_KEY, AUDIO

LABEL = re.compile(r"^SPEAKER_\d\d$")


@pytest.fixture(scope="module")
async def diarized(
    stack: EmbeddedStack, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The three-speaker mix transcribed with speakers: (the mix, the job, its results by format)."""
    mix = three_speakers()
    path = mix.write_wav(tmp_path_factory.mktemp("speakers") / "meeting.wav")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=headers) as api:
        with open(path, "rb") as body:
            response = await api.post(
                "/v1/jobs", files={"file": ("meeting.wav", body)}, data={"language": "en", "diarize": "true"}
            )
        assert response.status_code == 202, response.text
        job = await finished_job(api, js, response.json()["id"], timeout=300)
        assert job["state"] == "completed", job
        results = {
            fmt: (await api.get(f"/v1/jobs/{job['id']}/transcript.{fmt}")).text
            for fmt in ("json", "srt", "vtt", "txt")
        }
    return mix, job, results


def mapping(mix: Mix, cues: list[tuple[float, float, str]]) -> dict[str, str]:
    """Each reference speaker's label: the label speaking most of that speaker's time, by overlap
    of cues with reference turns."""
    overlap: dict[str, Counter[str]] = defaultdict(Counter)
    for start, end, speaker in mix.reference:
        for cue_start, cue_end, label in cues:
            overlap[speaker][label] += max(0.0, min(end, cue_end) - max(start, cue_start))
    return {speaker: counted.most_common(1)[0][0] for speaker, counted in overlap.items()}


def misattributed(mix: Mix, cues: list[tuple[float, float, str]]) -> list[str]:
    """Every turn over 2 s (its part no other turn overlaps) whose cues are not all its speaker's
    label: a cue counts for a turn when its middle lies in it."""
    labels = mapping(mix, cues)
    assert len(set(labels.values())) == len(labels), f"two speakers share a label: {labels}"
    wrong = []
    for start, end, speaker in mix.reference:
        if end - start <= 2.0:
            continue
        others = [(s, e) for s, e, who in mix.reference if who != speaker and s < end and e > start]
        for cue_start, cue_end, label in cues:
            middle = (cue_start + cue_end) / 2
            if (
                start <= middle <= end
                and not any(s <= middle <= e for s, e in others)
                and label != labels[speaker]
            ):
                wrong.append(
                    f"{speaker} {start:.1f}-{end:.1f}: cue {cue_start:.1f}-{cue_end:.1f} says {label}"
                )
    return wrong


async def test_a_three_speaker_mix_names_three_speakers_and_every_long_turn_right(diarized: Any) -> None:
    mix, job, results = diarized
    document = json.loads(results["json"])
    cues = [(cue["start"], cue["end"], cue["speaker"]) for cue in document["cues"]]
    assert len(mix.speakers) == 3
    assert len(document["speakers"]) == 3 and all(LABEL.match(label) for label in document["speakers"])
    assert {label for _, _, label in cues} == set(document["speakers"])
    assert document["speakers"] == sorted(document["speakers"])  # numbered by first appearance
    assert cues[0][2] == "SPEAKER_00"
    assert misattributed(mix, cues) == []
    # Each word carries its cue's speaker (a cue never holds two).
    for cue in document["cues"]:
        assert {word.get("speaker", cue["speaker"]) for word in cue.get("words", [])} <= {cue["speaker"]}
    assert job["diarization"] == {"min_speakers": None, "max_speakers": None}


async def test_every_format_carries_the_same_speakers(diarized: Any) -> None:
    _, _, results = diarized
    document = json.loads(results["json"])
    expected = [cue["speaker"] for cue in document["cues"]]

    # VTT: a voice span on each cue, read by webvtt-py (which takes the span off the text).
    captions = webvtt.from_buffer(io.StringIO(results["vtt"]))
    assert [caption.voice for caption in captions] == expected
    assert all("<v " not in caption.text for caption in captions)
    # SRT: the label as a prefix on each cue, read by pysubs2; VTT through pysubs2 too.
    subtitles = pysubs2.SSAFile.from_string(results["srt"], format_="srt").events
    prefixes = [re.match(r"^\[(SPEAKER_\d\d)\]: \S", event.plaintext) for event in subtitles]
    assert [found.group(1) if found else None for found in prefixes] == expected
    assert len(pysubs2.SSAFile.from_string(results["vtt"], format_="vtt").events) == len(expected)
    # TXT: paragraphs, each one speaker's, starting with the label, in the order they speak.
    paragraphs = [line for line in results["txt"].splitlines() if line.strip()]
    starts = [re.match(r"^\[(SPEAKER_\d\d)\]: \S", line) for line in paragraphs]
    assert all(starts), paragraphs
    turns = [label for index, label in enumerate(expected) if index == 0 or expected[index - 1] != label]
    said = [found.group(1) for found in starts if found]
    assert [label for index, label in enumerate(said) if index == 0 or said[index - 1] != label] == turns


async def test_the_job_reports_a_diarizing_stage_and_its_segments_carry_speakers(
    diarized: Any, js: JetStreamContext
) -> None:
    _, job, _ = diarized
    events = await job_events(js, job["id"], {catalogue.COMPLETED.type}, timeout=30)
    stages = [e.get_data()["stage"] for e in events if e.get_type() == catalogue.PROGRESS.type]
    assert "diarizing" in stages and stages.index("diarizing") < stages.index("transcribing")


# -- the model function's refusals ---------------------------------------------------------------


class StandInAdapter:
    """Stands in for a model adapter without a diarization stage (belle2's shape)."""

    name = "belle2"
    default_language = "zh"


async def test_a_diarized_job_reaching_a_model_that_cannot_name_speakers_fails_clearly(
    tmp_path: Path,
) -> None:
    """Routing never sends one (events/registry.py DIARIZES); a dispatch published straight onto
    `transcribe.belle2` by another system might."""
    function = TranscriptionFunction(StandInAdapter(), Settings())  # type: ignore[arg-type]
    audio = decode(AUDIO / "jfk.flac", tmp_path / "audio.s16le")
    with pytest.raises(JobFailed) as refused:
        await function._diarize(audio, Diarization())
    assert refused.value.code == "diarization_unsupported"


async def test_a_diarization_model_that_cannot_load_fails_the_job_with_the_fix(tmp_path: Path) -> None:
    """DIARIZATION_MODEL_DIR naming no pipeline: at load (readiness) and, should it go later, at
    the job (`diarization_unavailable`), with the setting named in the message."""
    settings = Settings(diarization_model_dir=tmp_path / "no-pipeline")
    function = TranscriptionFunction(WhisperX(settings), settings)
    audio = decode(AUDIO / "jfk.flac", tmp_path / "audio.s16le")
    with pytest.raises(JobFailed) as refused:
        await function._diarize(audio, Diarization())
    assert refused.value.code == "diarization_unavailable"
    assert "DIARIZATION_MODEL_DIR" in refused.value.message
    assert np.isfinite(audio.seconds)


class StandInDiarizingAdapter:
    """Stands in for a model adapter that diarizes (a GPU-less stand-in for a pyannote pipeline
    that hangs or fails): `diarize` blocks until `release` is set, then raises `error` if any."""

    name = "whisperx"
    default_language = None

    def __init__(self, error: Exception | None = None) -> None:
        self.release = threading.Event()
        self.error = error

    def diarize(self, audio: np.ndarray, diarization: Diarization) -> SpeakerAttribution:
        self.release.wait(timeout=60)
        if self.error is not None:
            raise self.error
        return lambda segment: [segment]


class StandInCancellations:
    """Stands in for the JOBS stream's cancel marks: `wait` ends once `cancel` is set."""

    def __init__(self) -> None:
        self.cancel = asyncio.Event()

    async def wait(self, job_id: str) -> JobCanceled:
        await self.cancel.wait()
        return JobCanceled(job_id)


def diarizing_function(adapter: StandInDiarizingAdapter, **settings: Any) -> TranscriptionFunction:
    function = TranscriptionFunction(adapter, Settings(**settings))  # type: ignore[arg-type]
    function.cancels = StandInCancellations()  # type: ignore[assignment]
    return function


async def test_a_diarization_that_outlasts_the_stall_limit_fails_and_holds_the_worker(tmp_path: Path) -> None:
    """Before, the stage had no bound: a hung diarizer held the job (and its redeliveries) for ever."""
    adapter = StandInDiarizingAdapter()
    function = diarizing_function(adapter, stall_timeout_s=0.5)
    audio = decode(AUDIO / "jfk.flac", tmp_path / "audio.s16le")
    try:
        with pytest.raises(JobFailed) as stalled:
            await function._diarize(audio, Diarization(), job_id="j1")
        assert stalled.value.code == "diarization_stalled" and "STALL_TIMEOUT_S" in stalled.value.message
        assert not function.health().ready  # no new job while the thread is still busy
    finally:
        adapter.release.set()


async def test_a_cancel_ends_a_job_while_it_is_diarized(tmp_path: Path) -> None:
    adapter = StandInDiarizingAdapter()
    function = diarizing_function(adapter)
    audio = decode(AUDIO / "jfk.flac", tmp_path / "audio.s16le")
    diarizing = asyncio.create_task(function._diarize(audio, Diarization(), job_id="j1"))
    function.cancels.cancel.set()  # type: ignore[attr-defined]
    try:
        with pytest.raises(JobCanceled):
            await diarizing
        assert not function.health().ready
    finally:
        adapter.release.set()


async def test_a_diarizer_that_fails_fails_the_job_with_a_code_not_a_retry(tmp_path: Path) -> None:
    """Before, its error went back to the bus as a retry: fetched, decoded and diarized again,
    five times, then dead-lettered."""
    adapter = StandInDiarizingAdapter(ValueError("Input contains NaN"))
    adapter.release.set()
    function = diarizing_function(adapter)
    audio = decode(AUDIO / "jfk.flac", tmp_path / "audio.s16le")
    with pytest.raises(JobFailed) as failed:
        await function._diarize(audio, Diarization(), job_id="j1")
    assert failed.value.code == "diarization_error" and "Input contains NaN" in failed.value.message

    def broken(segment: Segment) -> list[Segment]:
        raise KeyError("speaker")

    with pytest.raises(JobFailed) as attributing:
        function._attributed(Segment(start=0.0, end=1.0, text="a"), broken)
    assert attributing.value.code == "diarization_error"
    assert function._attributed(Segment(start=0.0, end=1.0, text="a"), None) == [Segment(0.0, 1.0, "a")]


# -- the OpenAI-compatible route -----------------------------------------------------------------


async def test_the_openai_sdk_gets_a_diarized_answer_with_speakers_lettered(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    """OpenAI's own diarization call (`gpt-4o-transcribe-diarize`, `diarized_json`), unchanged,
    through the real SDK: the job names speakers, the answer letters them as OpenAI does."""
    path = three_speakers().write_wav(tmp_path / "meeting.wav")
    async with openai.AsyncOpenAI(
        base_url=f"{stack.api_url}/v1", api_key=API_KEY, max_retries=0, timeout=300
    ) as sdk:
        answer = await sdk.audio.transcriptions.create(
            file=path.open("rb"),
            model="gpt-4o-transcribe-diarize",
            response_format="diarized_json",
            chunking_strategy="auto",
            language="en",
        )
    assert isinstance(answer, TranscriptionDiarized)
    speakers = [segment.speaker for segment in answer.segments]
    assert set(speakers) == {"A", "B", "C"} and speakers[0] == "A"
    assert answer.text and all(segment.type == "transcript.text.segment" for segment in answer.segments)
    with pytest.raises(openai.BadRequestError) as refused:
        await openai.AsyncOpenAI(
            base_url=f"{stack.api_url}/v1", api_key=API_KEY, max_retries=0
        ).audio.translations.create(
            file=path.open("rb"),
            model="whisper-1",
            response_format="diarized_json",  # type: ignore[arg-type]
        )
    assert refused.value.code == "response_format_unsupported"


def test_speaker_labels_become_openais_letters_in_order() -> None:
    cues = [
        {"start": 0.0, "end": 1.0, "text": "a", "speaker": f"SPEAKER_{n:02d}"} for n in (0, 1, 25, 26, 27)
    ]
    cues.append({"start": 1.0, "end": 2.0, "text": "b"})
    shown = openai_shapes.diarized({"cues": cues, "audio_seconds": 2.0}, "[SPEAKER_00]: a\n[SPEAKER_26]: b\n")
    assert [segment.speaker for segment in shown.segments] == ["A", "B", "Z", "AA", "AB", "unknown"]
    assert shown.text == "a\nb\n"  # OpenAI's text is the words alone
