"""The whisperx function's model side, in this process: the real whisperx on the bundled
whisper-base (CPU, int8), real speech from ../shared/audio, through the shared skeleton's decoding
and windowing. The worker as a process (redelivery, bad media, a warm model) is in
test_whisperx_function.py."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest

from events.settings import Settings
from functions.optimize.chinese import to_simplified
from functions.transcriber import (
    SAMPLE_RATE,
    DecodedAudio,
    JobFailed,
    Segment,
    Transcript,
    TranscriptionFunction,
    decode,
    windows,
)
from functions.whisperx.model import ModelUnavailable, WhisperX
from tests.support.media import long_english_clip
from tests.support.paths import AUDIO, ffmpeg, reference
from tests.support.quality import wer

CJK = range(0x4E00, 0xA000)


@pytest.fixture(scope="module")
def whisperx(model_cache: Path) -> TranscriptionFunction:
    """The function around a loaded adapter, as a worker holds it (loaded once for the module)."""
    settings = Settings(model_cache_dir=model_cache)
    function = TranscriptionFunction(WhisperX(settings), settings)
    function.adapter.load()
    return function


def transcribe(
    function: TranscriptionFunction, media: Path, scratch: Path, language: str | None = None
) -> tuple[Transcript, list[Segment], list[float]]:
    """Decode like the worker does, then run the model window by window, collecting what it streams."""
    audio = decode(media, scratch / f"{media.stem}.s16le")
    segments: list[Segment] = []
    progress: list[float] = []
    transcript = function.transcribe_audio(
        audio, language, lambda item: (segments if isinstance(item, Segment) else progress).append(item)
    )
    return transcript, segments, progress


def text_of(segments: list[Segment]) -> str:
    return " ".join(segment.text for segment in segments)


@pytest.mark.parametrize(
    ("clip", "language"),
    [("jfk.flac", None), ("librispeech-1995-1837-0001.wav", "en")],
    ids=["jfk-detected", "librispeech-asked"],
)
def test_english_clips_are_transcribed_with_low_wer(
    whisperx: TranscriptionFunction, tmp_path: Path, clip: str, language: str | None
) -> None:
    transcript, segments, progress = transcribe(whisperx, AUDIO / clip, tmp_path, language)

    assert wer(reference(Path(clip).stem), text_of(segments)) <= 0.10, text_of(segments)
    assert transcript.language == "en"
    assert progress and progress[-1] == pytest.approx(1.0)
    assert progress == sorted(progress)


def test_a_detected_language_comes_with_its_probability(
    whisperx: TranscriptionFunction, tmp_path: Path
) -> None:
    detected, _, _ = transcribe(whisperx, AUDIO / "jfk.flac", tmp_path)
    asked, _, _ = transcribe(whisperx, AUDIO / "jfk.flac", tmp_path, "en")

    assert detected.language == "en"
    assert detected.language_probability is not None and 0.5 < detected.language_probability <= 1.0
    assert asked.language == "en" and asked.language_probability is None  # asked for, not detected


def test_without_an_aligner_word_times_come_from_the_decoder(
    whisperx: TranscriptionFunction, tmp_path: Path
) -> None:
    transcript, segments, _ = transcribe(whisperx, AUDIO / "jfk.flac", tmp_path, "en")

    assert transcript.alignment is not None and transcript.alignment.startswith("skipped: no alignment model")
    for segment in segments:
        assert segment.words, segment
        assert " ".join(word.word for word in segment.words) == segment.text
        times = [(word.start, word.end) for word in segment.words]
        assert all(start is not None and end is not None for start, end in times)
        starts = [start for start, _ in times]
        assert starts == sorted(starts)
        assert segment.start - 0.01 <= starts[0] and times[-1][1] <= segment.end + 0.01  # type: ignore[operator]


def test_mandarin_clip_gives_chinese_text_timed_inside_the_audio(
    whisperx: TranscriptionFunction, tmp_path: Path
) -> None:
    """whisper-base is weak on Mandarin: this pins structure; the CER is printed for the record."""
    transcript, segments, _ = transcribe(whisperx, AUDIO / "aishell-BAC009S0724W0121.wav", tmp_path)

    text = "".join(segment.text for segment in segments)
    assert transcript.language == "zh"
    assert sum(ord(char) in CJK for char in text) >= 8, text
    assert all(0.0 <= s.start < s.end <= 4.3 for s in segments), segments
    cer = float(jiwer.cer(reference("aishell-BAC009S0724W0121"), to_simplified(text)))
    print(f"AISHELL BAC009S0724W0121 CER (whisper-base, simplified): {cer:.3f} ({text})")
    assert cer <= 0.5


def test_a_video_without_speech_gives_a_near_empty_transcript(
    whisperx: TranscriptionFunction, tmp_path: Path
) -> None:
    """Big Buck Bunny: H.264 video with 5.1 AAC music and effects, no speech."""
    _, segments, progress = transcribe(whisperx, AUDIO / "big_buck_bunny_small.mp4", tmp_path)

    assert len(text_of(segments).split()) <= 3
    assert progress[-1] == pytest.approx(1.0)


def test_silence_gives_an_empty_transcript(whisperx: TranscriptionFunction, tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "5", str(silence))
    transcript, segments, _ = transcribe(whisperx, silence, tmp_path)

    assert segments == []
    assert transcript.alignment == "skipped: no speech"


def test_an_unknown_language_fails_clearly(whisperx: TranscriptionFunction, tmp_path: Path) -> None:
    with pytest.raises(JobFailed) as failure:
        transcribe(whisperx, AUDIO / "jfk.flac", tmp_path, "xx")
    assert failure.value.code == "language_unsupported"


def test_long_media_is_transcribed_window_by_window(
    whisperx: TranscriptionFunction, model_cache: Path, tmp_path: Path
) -> None:
    """A minute in windows of ~20 s: the same skeleton path an hour takes in windows of 10 min."""
    clip = long_english_clip(tmp_path / "long.wav", 60.0)
    settings = Settings(model_cache_dir=model_cache, audio_window_s=20.0)
    windowed = TranscriptionFunction(whisperx.adapter, settings)

    transcript, segments, progress = transcribe(windowed, clip, tmp_path)

    audio = DecodedAudio(tmp_path / "long.s16le", (tmp_path / "long.s16le").stat().st_size // 2)
    assert len(windows(audio, 20.0)) >= 3
    assert transcript.language == "en"
    starts = [segment.start for segment in segments]
    assert starts == sorted(starts)
    assert all(0.0 <= s.start < s.end <= audio.seconds + 0.01 for s in segments)
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    rounds = round(audio.seconds / (11.0 + 8.73))
    expected = " ".join([reference("jfk"), reference("librispeech-1995-1837-0001")] * rounds)
    assert wer(expected, text_of(segments)) <= 0.10, text_of(segments)


def test_an_hour_of_media_is_decoded_to_disk_and_cut_into_bounded_windows(tmp_path: Path) -> None:
    """An hour of 48 kHz stereo audio is decoded to disk and planned, and a window read, while the
    process grows by less than the decoded hour itself (115 MB as int16): only a window (at most
    12.5 min) is ever read into memory, so the bound does not grow with the file."""
    hour = tmp_path / "hour.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3600", "-ac", "2", str(hour))
    probe = f"""
import json, re
from pathlib import Path
from functions.transcriber.audio import decode, windows
def peak():
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
imported = peak()
audio = decode(Path({str(hour)!r}), Path({str(tmp_path / "hour.s16le")!r}))
plan = windows(audio, 600.0)
window = audio.window(*plan[0])
growth = peak() - imported
print(json.dumps({{"seconds": audio.seconds, "plan": plan, "window": len(window), "growth": growth}}))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)

    assert report["seconds"] == pytest.approx(3600.0, abs=0.1)
    plan = report["plan"]
    assert plan[0][0] == 0 and plan[-1][1] == int(3600 * SAMPLE_RATE)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))  # contiguous, no gap
    assert all(end - start <= 1.25 * 600 * SAMPLE_RATE for start, end in plan)
    assert 5 <= len(plan) <= 7
    assert report["window"] == plan[0][1] - plan[0][0]
    decoded_hour = 3600 * SAMPLE_RATE * 2  # as int16; the model's float32 would be twice that
    assert report["growth"] < decoded_hour, f"memory grew by {report['growth'] / 2**20:.0f} MB"


# -- forced alignment -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised, tiny wav2vec2 CTC checkpoint with an English letter vocabulary. No
    alignment weights can be downloaded here: this exercises the code path (its times are
    meaningless, so tests check shape, not accuracy)."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    target = tmp_path_factory.mktemp("wav2vec2-tiny-en")
    letters = "abcdefghijklmnopqrstuvwxyz'"
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{char: index + 3 for index, char in enumerate(letters)}}
    (target / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(target / "vocab.json"), word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(target)
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(target, safe_serialization=True)
    return target


@pytest.fixture(scope="module")
def aligned(
    whisperx: TranscriptionFunction, model_cache: Path, tiny_wav2vec2: Path
) -> Iterator[TranscriptionFunction]:
    settings = Settings(model_cache_dir=model_cache, alignment_models={"en": tiny_wav2vec2})
    adapter = WhisperX(settings)
    adapter.pipeline = whisperx.adapter.pipeline  # type: ignore[attr-defined]  # the same loaded model
    adapter._aligner("en")  # what load() does for every configured language
    yield TranscriptionFunction(adapter, settings)


def test_a_configured_wav2vec2_model_aligns_every_word(
    aligned: TranscriptionFunction, tmp_path: Path
) -> None:
    transcript, segments, _ = transcribe(aligned, AUDIO / "jfk.flac", tmp_path, "en")

    assert transcript.alignment == "wav2vec2"
    assert wer(reference("jfk"), text_of(segments)) <= 0.10
    for segment in segments:
        assert segment.words and [w.word for w in segment.words] == segment.text.split()
        for word in segment.words:
            if word.start is not None and word.end is not None:
                assert 0.0 <= word.start <= word.end <= 11.01
        assert any(word.start is not None for word in segment.words)


def test_a_language_without_an_aligner_keeps_decoder_times(
    aligned: TranscriptionFunction, tmp_path: Path
) -> None:
    transcript, segments, _ = transcribe(aligned, AUDIO / "aishell-BAC009S0724W0121.wav", tmp_path, "zh")

    assert transcript.alignment == "skipped: no alignment model for 'zh'; word times from the decoder"
    assert segments and all(segment.words for segment in segments)


# -- the model directory ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", [None, "model.bin", "tokenizer.json"], ids=["no-dir", "no-weights", "no-tokenizer"]
)
def test_a_missing_or_incomplete_model_dir_is_refused_with_the_fix(
    model_cache: Path, tmp_path: Path, missing: str | None
) -> None:
    model_dir = tmp_path / "whisper"
    if missing is not None:
        model_dir.mkdir()
        for name in ("model.bin", "config.json", "tokenizer.json"):
            if name != missing:
                (model_dir / name).write_bytes(b"{}")
    adapter = WhisperX(Settings(model_cache_dir=model_cache, whisperx_model_dir=model_dir))

    with pytest.raises(ModelUnavailable, match="WHISPERX_MODEL_DIR") as refusal:
        adapter.load()
    assert str(model_dir) in str(refusal.value)


def test_a_broken_alignment_model_is_refused_at_load(model_cache: Path, tmp_path: Path) -> None:
    settings = Settings(model_cache_dir=model_cache, alignment_models={"en": tmp_path / "nowhere"})

    with pytest.raises(ModelUnavailable, match="ALIGNMENT_MODELS"):
        WhisperX(settings).load()


def test_windows_of_short_audio_are_the_whole_audio(tmp_path: Path) -> None:
    pcm = tmp_path / "a.s16le"
    np.zeros(SAMPLE_RATE * 30, np.int16).tofile(pcm)
    assert windows(DecodedAudio(pcm, SAMPLE_RATE * 30), 600.0) == [(0, SAMPLE_RATE * 30)]
