"""Per-job decoding options (events.models.Decoding: task, prompt, hotwords, temperature) reach
each model and change what it writes, on the real whisper-base model (whisperx: CTranslate2;
belle2: the transformers checkpoint derived from it) and real speech from ../shared/audio/dev.

The cases were measured first (the report of issue 16): whisper-base hears "Author of the danger
trail, Philip Steels, etc." (en_arctic_aew_a0001) as "... fill up steels, etc." unless a prompt or
the hotwords name Philip Steels; it translates zh_paddlespeech_zh to "I think running is the most
important thing for me to bring health to health" (faster-whisper alone; the adapter's batched
pass leaves 健康 untranslated). whisper-base translates Mandarin poorly, and a translation its
fallback rules refuse is sampled again at higher temperatures, so differently each run (two runs
of zh_aishell1_BAC009S0764W0122 gave two translations); zh_aishell3_SSB00050112 is accepted at
temperature 0, the same each run: "Even if it's a bit high-end, it doesn't look like it's a
low-end." (five beams; greedy also gave English twice). Each model is loaded once for the module."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from events.models import Decoding
from events.settings import Settings
from functions.belle2.model import TEMPERATURES, Belle2
from functions.transcriber import JobFailed, Segment, Transcript, TranscriptionFunction, decode
from functions.transcriber.prompt import MAX_PROMPT_TOKENS, fit_prompt
from functions.whisperx.model import WhisperX
from infra.models import assemble_whisper_base, derive_whisper_base_hf
from tests.support.audio import decode_audio
from tests.support.paths import AUDIO

DEV = AUDIO / "dev"
NAME_CLIP = DEV / "en_arctic_aew_a0001.wav"  # "Author of the danger trail, Philip Steels, etc."
MANDARIN_CLIP = DEV / "zh_aishell3_SSB00050112.wav"  # 即便是一些高价低廉的别墅项目
CJK = re.compile(r"[\u3400-\u9fff]")
# A prompt within Decoding's 2000 characters and far over Whisper's 223 tokens (about 400),
# whose last words are the name: kept, as openai-whisper keeps a prompt's last tokens.
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 40 + "Philip Steels"


@pytest.fixture(scope="module")
def whisperx(model_cache: Path) -> TranscriptionFunction:
    settings = Settings(model_cache_dir=model_cache)
    function = TranscriptionFunction(WhisperX(settings), settings)
    function.adapter.load()
    return function


@pytest.fixture(scope="module")
def belle2(model_cache: Path) -> Belle2:
    settings = Settings(model_cache_dir=model_cache, model_device="cpu")
    derive_whisper_base_hf(assemble_whisper_base(model_cache), settings.belle2_model_path())
    adapter = Belle2(settings)
    adapter.load()
    return adapter


def through_whisperx(
    function: TranscriptionFunction, media: Path, scratch: Path, language: str, decoding: Decoding | None
) -> tuple[Transcript, list[Segment]]:
    """The file as the worker runs it: decoded, then window by window through the skeleton,
    which hands `decoding` to the adapter."""
    audio = decode(media, scratch / f"{media.stem}.s16le")
    segments: list[Segment] = []
    transcript = function.transcribe_audio(
        audio, language, lambda item: segments.append(item) if isinstance(item, Segment) else None, decoding
    )
    return transcript, segments


def through_belle2(adapter: Belle2, media: Path, language: str, decoding: Decoding | None) -> str:
    streamed: list[Segment] = []
    adapter.transcribe(decode_audio(media), language, streamed.append, lambda _: None, decoding=decoding)
    return " ".join(segment.text for segment in streamed)


def text_of(segments: list[Segment]) -> str:
    return " ".join(segment.text for segment in segments)


# -- whisperx ---------------------------------------------------------------------------------------


def test_whisperx_translates_mandarin_to_english(whisperx: TranscriptionFunction, tmp_path: Path) -> None:
    _, heard = through_whisperx(whisperx, MANDARIN_CLIP, tmp_path, "zh", None)
    transcript, translated = through_whisperx(
        whisperx, MANDARIN_CLIP, tmp_path, "zh", Decoding(task="translate")
    )

    assert CJK.search(text_of(heard)), text_of(heard)  # transcribed, it is Chinese
    english = text_of(translated)
    assert translated and english.isascii() and not CJK.search(english), english
    assert len(re.findall(r"[A-Za-z]+", english)) >= 5, english
    # The text is English for the subtitle rules; the file still speaks Mandarin.
    assert {segment.language for segment in translated} == {"en"}
    assert transcript.language == "zh"


@pytest.mark.parametrize("option", ["prompt", "hotwords"])
def test_whisperx_spells_a_name_the_way_the_prompt_or_hotwords_do(
    whisperx: TranscriptionFunction, tmp_path: Path, option: str
) -> None:
    _, plain = through_whisperx(whisperx, NAME_CLIP, tmp_path, "en", None)
    _, prompted = through_whisperx(
        whisperx, NAME_CLIP, tmp_path, "en", Decoding.model_validate({option: "Philip Steels"})
    )

    assert "Philip" not in text_of(plain), text_of(plain)  # whisper-base alone: "fill up steels"
    assert "Philip Steels" in text_of(prompted), text_of(prompted)


def test_whisperx_keeps_a_long_prompts_last_tokens(whisperx: TranscriptionFunction, tmp_path: Path) -> None:
    """A prompt over Whisper's 223 tokens is cut, not refused: its last tokens (the name) still
    steer the model, and what the decoder reads fits the budget with the hotwords."""
    adapter = whisperx.adapter
    assert isinstance(adapter, WhisperX)
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(adapter.pipeline.model.hf_tokenizer, True, task="transcribe", language="en")
    decoding = Decoding(prompt=LONG_PROMPT, hotwords="danger trail " * 10)
    options = adapter._options(decoding, tokenizer, with_words=True)
    read = tokenizer.encode(options.initial_prompt) + tokenizer.encode(" " + options.hotwords)
    assert len(read) <= MAX_PROMPT_TOKENS + 1  # one token of slack: text cut at a token re-encodes
    assert options.initial_prompt.endswith("Philip Steels")

    _, prompted = through_whisperx(whisperx, NAME_CLIP, tmp_path, "en", Decoding(prompt=LONG_PROMPT))
    assert "Philip Steels" in text_of(prompted), text_of(prompted)


def test_whisperx_temperature_reaches_faster_whisper_as_the_first_of_the_schedule(
    whisperx: TranscriptionFunction, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temperature above 0 samples: the batched pass cannot (CTranslate2 decodes greedily
    without `sampling_topk`), so every chunk goes through faster-whisper's sequential decoding
    with the schedule from the temperature asked for."""
    model = whisperx.adapter.pipeline.model  # type: ignore[attr-defined]
    seen: list[dict[str, object]] = []
    transcribe = model.transcribe

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return transcribe(*args, **kwargs)

    monkeypatch.setattr(model, "transcribe", spy)
    _, segments = through_whisperx(
        whisperx, NAME_CLIP, tmp_path, "en", Decoding(temperature=0.4, prompt="Philip Steels")
    )

    assert seen and all(call["temperature"] == [0.4, 0.6, 0.8, 1.0] for call in seen)
    assert all(call["initial_prompt"] and call["task"] == "transcribe" for call in seen)
    assert segments and text_of(segments).isascii()


# -- belle2 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["prompt", "hotwords"])
def test_belle2_spells_a_name_the_way_the_prompt_or_hotwords_do(belle2: Belle2, option: str) -> None:
    plain = through_belle2(belle2, NAME_CLIP, "en", None)
    prompted = through_belle2(belle2, NAME_CLIP, "en", Decoding.model_validate({option: "Philip Steels"}))

    assert "Philip" not in plain, plain
    assert "Philip Steels" in prompted, prompted


def test_belle2_prompt_ids_keep_the_hotwords_and_the_prompts_last_tokens(belle2: Belle2) -> None:
    tokenizer = belle2.processor.tokenizer
    ids = belle2.prompt_ids(Decoding(prompt=LONG_PROMPT, hotwords="Danger Trail"))

    assert ids[0] == tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert len(ids) == 1 + MAX_PROMPT_TOKENS
    text = tokenizer.decode(ids[1:])
    assert text.startswith(" Danger Trail") and text.endswith("Philip Steels")
    assert belle2.prompt_ids(Decoding()) == []  # no prompt: nothing before <|startoftranscript|>
    # what transformers itself makes of a prompt: the same tokens
    assert belle2.prompt_ids(Decoding(prompt="Philip Steels")) == list(
        belle2.processor.get_prompt_ids("Philip Steels")
    )


def test_belle2_long_prompt_is_cut_not_refused(belle2: Belle2) -> None:
    assert "Philip Steels" in through_belle2(belle2, NAME_CLIP, "en", Decoding(prompt=LONG_PROMPT))


def test_belle2_temperature_starts_its_fallback_schedule(
    belle2: Belle2, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every result refused (no log-probability reaches 0): the region is decoded at each step.
    monkeypatch.setattr(belle2, "logprob_threshold", 0.0)
    monkeypatch.setattr(belle2, "no_speech_threshold", 1.0)
    passes: list[tuple[float, tuple[int, ...]]] = []
    generate: Callable[..., list[object]] = belle2._generate

    def spy(encoded: object, language: str, temperature: float, prompt: tuple[int, ...] = ()) -> list[object]:
        passes.append((temperature, tuple(prompt)))
        return generate(encoded, language, temperature, prompt)

    monkeypatch.setattr(belle2, "_generate", spy)
    through_belle2(belle2, NAME_CLIP, "en", Decoding(temperature=0.6, prompt="Philip Steels"))

    assert [t for t, _ in passes] == [t for t in TEMPERATURES if t >= 0.6]
    assert all(prompt == tuple(belle2.prompt_ids(Decoding(prompt="Philip Steels"))) for _, prompt in passes)


def test_belle2_refuses_to_translate(belle2: Belle2) -> None:
    with pytest.raises(JobFailed) as refused:
        belle2.transcribe(
            np.zeros(16_000, np.float32),
            "zh",
            lambda _: None,
            lambda _: None,
            decoding=Decoding(task="translate"),
        )
    assert refused.value.code == "task_unsupported"


def test_the_prompt_budget_keeps_hotwords_first_then_the_prompts_last_tokens() -> None:
    assert fit_prompt([1, 2], [3, 4, 5], limit=4) == ([1, 2], [4, 5])
    assert fit_prompt(list(range(10)), [99], limit=4) == ([0, 1, 2, 3], [])
    assert fit_prompt([], list(range(300))) == ([], list(range(300 - MAX_PROMPT_TOKENS, 300)))
