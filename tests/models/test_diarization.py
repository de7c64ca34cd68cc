"""The diarization stage (functions/whisperx/diarization.py) on real speech: the embedded
Resemblyzer path on mixes of different people's recordings (tests/support/mixes.py), the
attribution of turns to words and segments, and the pyannote path's refusals.

The pyannote path itself cannot run here: no pyannote pipeline checkpoint is on this machine
and nothing may be downloaded, so only its refusal to load is pinned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from events.models import Diarization, Word
from events.settings import Settings
from functions.transcriber.schema import SAMPLE_RATE, ModelUnavailable, Segment
from functions.whisperx.diarization import Diarizer, Turn, attribute, load_diarizer
from tests.support.audio import decode_audio
from tests.support.mixes import AUDIO, Mix, three_speakers


@pytest.fixture(scope="module")
def diarizer() -> Diarizer:
    """The embedded diarizer, loaded once for the module."""
    return load_diarizer(Settings(model_device="cpu"))


@pytest.fixture(scope="module")
def mix() -> Mix:
    return three_speakers()


@pytest.fixture(scope="module")
def turns(diarizer: Diarizer, mix: Mix) -> list[Turn]:
    return diarizer.diarize(mix.audio, Diarization())


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def mapping(mix: Mix, turns: list[Turn]) -> dict[str, str]:
    """Hypothesis speaker -> reference speaker, the optimal one-to-one mapping (pyannote.metrics,
    Hungarian on co-occurrence)."""
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span
    from pyannote.metrics.diarization import DiarizationErrorRate

    found = Annotation(uri=mix.name)
    for index, turn in enumerate(turns):
        found[Span(turn.start, turn.end), index] = turn.speaker
    return {
        str(k): str(v) for k, v in DiarizationErrorRate().optimal_mapping(mix.annotation(), found).items()
    }


def speakers(turns: list[Turn]) -> set[str]:
    return {turn.speaker for turn in turns}


def test_three_speakers_are_found_and_their_long_turns_attributed(mix: Mix, turns: list[Turn]) -> None:
    assert speakers(turns) == {"SPEAKER_00", "SPEAKER_01", "SPEAKER_02"}
    assert turns == sorted(turns, key=lambda t: t.start)
    to_reference = mapping(mix, turns)
    long_turns = [(start, end, speaker) for start, end, speaker in mix.reference if end - start > 2.0]
    assert len(long_turns) >= 7
    for start, end, speaker in long_turns:
        cover: dict[str, float] = {}
        for turn in turns:
            cover[turn.speaker] = cover.get(turn.speaker, 0.0) + overlap((turn.start, turn.end), (start, end))
        covering = max(cover, key=lambda s: cover[s])
        assert to_reference.get(covering) == speaker, (start, end, speaker, cover)


def test_labels_are_numbered_by_first_appearance(turns: list[Turn]) -> None:
    first_seen = list(dict.fromkeys(turn.speaker for turn in turns))
    assert first_seen == [f"SPEAKER_{i:02d}" for i in range(len(first_seen))]


def test_max_speakers_caps_the_count(diarizer: Diarizer, mix: Mix) -> None:
    assert len(speakers(diarizer.diarize(mix.audio, Diarization(max_speakers=2)))) == 2


def test_min_and_max_speakers_fix_the_count(diarizer: Diarizer, mix: Mix) -> None:
    assert len(speakers(diarizer.diarize(mix.audio, Diarization(min_speakers=3, max_speakers=3)))) == 3
    assert len(speakers(diarizer.diarize(mix.audio, Diarization(min_speakers=4)))) >= 4


def test_one_voice_is_one_speaker(diarizer: Diarizer) -> None:
    turns = diarizer.diarize(decode_audio(AUDIO / "jfk.flac"), Diarization())
    assert turns
    assert speakers(turns) == {"SPEAKER_00"}


def test_silence_and_sounds_without_speech_give_no_turns(diarizer: Diarizer) -> None:
    assert diarizer.diarize(np.zeros(5 * SAMPLE_RATE, np.float32), Diarization()) == []
    assert diarizer.diarize(np.zeros(0, np.float32), Diarization()) == []
    # Steady noise at about -46 dBFS, a fixed seed: the VAD hears no speech in it.
    noise = np.random.default_rng(0).normal(0.0, 0.005, 5 * SAMPLE_RATE).astype(np.float32)
    assert diarizer.diarize(noise, Diarization()) == []


# -- attribution ------------------------------------------------------------------------------

TWO_TURNS = [Turn(0.0, 2.0, "SPEAKER_00"), Turn(2.2, 5.0, "SPEAKER_01")]


def word(text: str, start: float | None, end: float | None) -> Word:
    return Word(word=text, start=start, end=end, score=0.9)


def test_a_segment_spanning_two_turns_is_split_with_its_text_intact() -> None:
    words = [
        word(" Hello", 0.2, 0.6),
        word(" there.", 0.7, 1.5),
        word(" Hi", 2.4, 2.8),
        word(" you.", 2.9, 3.4),
    ]
    segment = Segment(0.2, 3.4, " Hello there. Hi you.", words=words, avg_logprob=-0.2, language="en")
    parts = attribute([segment], TWO_TURNS)
    assert [(p.speaker, p.text, p.start, p.end) for p in parts] == [
        ("SPEAKER_00", "Hello there.", 0.2, 1.5),
        ("SPEAKER_01", "Hi you.", 2.4, 3.4),
    ]
    assert " ".join(p.text for p in parts) == segment.text.strip()
    assert all(p.avg_logprob == -0.2 and p.language == "en" for p in parts)
    assert [w.speaker for p in parts for w in p.words or []] == ["SPEAKER_00"] * 2 + ["SPEAKER_01"] * 2


def test_a_word_without_times_takes_its_nearest_speaker() -> None:
    words = [word(" one", 2.3, 2.6), word(" 2025", None, None), word(" three", 2.8, 3.0)]
    parts = attribute([Segment(2.3, 3.0, " one 2025 three", words=words)], TWO_TURNS)
    assert len(parts) == 1
    assert parts[0].speaker == "SPEAKER_01"
    assert [w.speaker for w in parts[0].words or []] == ["SPEAKER_01"] * 3


def test_a_word_in_no_turn_takes_the_nearest_turn() -> None:
    parts = attribute([Segment(5.5, 6.0, " late", words=[word(" late", 5.5, 6.0)])], TWO_TURNS)
    assert parts[0].speaker == "SPEAKER_01"


def test_chinese_parts_join_without_spaces() -> None:
    words = [word("你好", 0.5, 1.0), word("世界", 1.0, 1.6), word("再见", 2.5, 3.0)]
    parts = attribute([Segment(0.5, 3.0, "你好世界再见", words=words, language="zh")], TWO_TURNS)
    assert [(p.speaker, p.text) for p in parts] == [("SPEAKER_00", "你好世界"), ("SPEAKER_01", "再见")]


def test_a_segment_without_words_takes_the_speaker_overlapping_it_most() -> None:
    parts = attribute([Segment(1.5, 4.0, " no words here")], TWO_TURNS)
    assert [(p.speaker, p.text) for p in parts] == [("SPEAKER_01", " no words here")]


def test_no_turns_leave_segments_unattributed() -> None:
    segment = Segment(0.0, 1.0, " hi", words=[word(" hi", 0.0, 1.0)])
    assert attribute([segment], []) == [segment]


# -- the pyannote path's refusals ---------------------------------------------------------------


def test_a_missing_pipeline_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_diarizer(Settings(diarization_model_dir=tmp_path / "nowhere"))


def test_a_directory_without_config_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"no config\.yaml"):
        load_diarizer(Settings(diarization_model_dir=tmp_path))


def test_an_unloadable_pipeline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n  params:\n"
        "    segmentation: /nowhere/segmentation.bin\n"
    )
    with pytest.raises(ModelUnavailable, match="cannot load the pyannote pipeline"):
        load_diarizer(Settings(diarization_model_dir=tmp_path))


def test_importing_the_stage_loads_no_model_library() -> None:
    """A job without diarization costs nothing: the libraries load with the first diarized job."""
    import subprocess
    import sys

    libraries = ("torch", "resemblyzer", "sklearn", "pandas", "whisperx", "pyannote.audio", "onnxruntime")
    code = (
        f"import sys, functions.whisperx.diarization; print([m for m in {libraries!r} if m in sys.modules])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
