# ruff: noqa: RUF001 (Chinese punctuation in these strings is what is under test)
"""Speakers in the subtitle writer (issue 18): diarized segments through the real optimizer, the
files read back with parsers that did not write them (pysubs2 for SubRip and WebVTT, webvtt-py's
voice spans), and a job without diarization written byte for byte as before."""

from __future__ import annotations

import io
import itertools
import json
import re
from collections import Counter

import pysubs2
import webvtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import SegmentTranscribed, Word
from functions.optimize import outputs
from functions.optimize.cues import Cue, Optimized
from functions.optimize.rules import speaker_label
from tests.support.optimize_samples import RULES, assert_well_formed, optimizer, segment, visible

A, B, C = "SPEAKER_00", "SPEAKER_01", "SPEAKER_02"
_LABEL = re.compile(r"^\[(SPEAKER_\d+)\]: ")
_VOICE = re.compile(r"^<v ([^>]+)>")


def meeting(speakers: bool = True) -> list[SegmentTranscribed]:
    """Three speakers: a short answer between two turns of one speaker, an interjection inside a
    long turn, and a question that starts before that turn ends. Without `speakers`, the same
    segments as a job without diarization has them."""

    def said(
        sequence: int, start: float, end: float, text: str, speaker: str, words: list[Word] | None = None
    ) -> SegmentTranscribed:
        return segment(sequence, start, end, text, words, speaker=speaker if speakers else None)

    return [
        said(
            0,
            0.0,
            3.2,
            "Good morning, everyone. Thanks for coming.",
            A,
            words=[
                Word(word="Good", start=0.0, end=0.3, score=0.9, speaker=A if speakers else None),
                Word(word="morning,", start=0.3, end=0.8, score=0.8, speaker=A if speakers else None),
            ],
        ),
        said(1, 3.0, 3.4, "Yes.", B),
        said(2, 3.5, 3.9, "Right.", A),
        said(
            3, 5.0, 9.0, "AT&T's <3 budget --> is the first item on today's agenda, and it is a long one.", A
        ),
        said(4, 8.0, 8.6, "Mm-hmm.", C),
        said(5, 8.8, 11.0, "Can I say something about that?", B),
        said(6, 12.0, 15.0, "我们开始吧，今天的议程很长。", A),
    ]


def by_speaker(pairs: list[tuple[str | None, str]]) -> dict[str | None, Counter[str]]:
    """The visible characters each speaker has among (speaker, text) pairs."""
    found: dict[str | None, Counter[str]] = {}
    for speaker, text in pairs:
        found.setdefault(speaker, Counter()).update(visible(text))
    return found


def assert_each_speaker_keeps_every_word(segments: list[SegmentTranscribed], result: Optimized) -> None:
    said = by_speaker([(s.speaker, s.text) for s in segments])
    shown = by_speaker([(cue.speaker, cue.text) for cue in result.cues])
    assert result.stats["removed"]["characters"] == 0
    assert shown == said


def srt_read_back(cues: list[Cue]) -> list[tuple[int, int, str | None, str]]:
    """(start ms, end ms, speaker, text) of each cue of the SubRip file, as pysubs2 reads it."""
    found = []
    for event in pysubs2.SSAFile.from_string(outputs.render("srt", cues, {}).decode(), format_="srt"):
        label = _LABEL.match(event.plaintext)
        text = event.plaintext[label.end() :] if label else event.plaintext
        found.append((event.start, event.end, label.group(1) if label else None, text))
    return found


def vtt_read_back_pysubs2(cues: list[Cue]) -> list[tuple[int, int, str | None, str]]:
    """The same from the WebVTT file, as pysubs2 reads it with its tags kept (it drops voice
    spans otherwise); cue text is markup, unescaped here."""
    found = []
    vtt = outputs.render("vtt", cues, {}).decode()
    for event in pysubs2.SSAFile.from_string(vtt, format_="vtt", keep_html_tags=True):
        text = event.plaintext
        voice = _VOICE.match(text)
        text = text[voice.end() :] if voice else text
        found.append((event.start, event.end, voice.group(1) if voice else None, _unescape(text)))
    return found


def vtt_read_back_webvtt(cues: list[Cue]) -> list[tuple[int, int, str | None, str]]:
    """The same as webvtt-py reads it: its Caption's `voice` is the voice span's annotation."""
    vtt = webvtt.from_buffer(io.StringIO(outputs.render("vtt", cues, {}).decode()))
    return [
        (
            caption.start_time.in_milliseconds(),
            caption.end_time.in_milliseconds(),
            caption.voice,
            _unescape(caption.text),
        )
        for caption in vtt
    ]


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def expected(cues: list[Cue]) -> list[tuple[int, int, str | None, str]]:
    return [(round(cue.start * 1000), round(cue.end * 1000), cue.speaker, cue.text) for cue in cues]


# -- diarized segments through the optimizer -----------------------------------------------------


def test_every_cue_has_one_speaker_and_every_speaker_keeps_every_word() -> None:
    segments = meeting()
    result = optimizer().run(segments, 16.0)

    assert_well_formed(result.cues, 16.0)
    assert_each_speaker_keeps_every_word(segments, result)
    assert {cue.speaker for cue in result.cues} == {A, B, C}
    for cue in result.cues:
        # a cue's words are its speaker's only
        assert all(word.speaker == cue.speaker for word in cue.words or []), cue
    srt_cues = [
        (start, end, speaker, outputs.srt_text(text)) for start, end, speaker, text in expected(result.cues)
    ]
    assert srt_read_back(result.cues) == srt_cues
    assert vtt_read_back_pysubs2(result.cues) == expected(result.cues)
    assert vtt_read_back_webvtt(result.cues) == expected(result.cues)


def test_a_short_answer_between_two_turns_is_not_merged_into_them() -> None:
    # Without speakers, "Yes." is too short to read and joins the cue before it.
    plain = optimizer().run(meeting(speakers=False), 16.0)
    assert any("Yes." in cue.text and "coming." in cue.text for cue in plain.cues)

    result = optimizer().run(meeting(), 16.0)
    texts = [(cue.speaker, cue.text) for cue in result.cues]
    assert (B, "Yes.") in texts
    assert (A, "Right.") in texts
    answer = texts.index((B, "Yes."))
    assert texts[answer - 1][0] == A and texts[answer + 1] == (A, "Right.")


def test_two_short_segments_of_two_speakers_stay_two_cues() -> None:
    segments = [segment(0, 1.0, 1.3, "Yes?", speaker=A), segment(1, 1.3, 1.6, "No.", speaker=B)]
    without = [s.model_copy(update={"speaker": None}) for s in segments]
    assert [cue.text for cue in optimizer().run(without, 5.0).cues] == ["Yes? No."]

    result = optimizer().run(segments, 5.0)
    assert [(cue.speaker, cue.text) for cue in result.cues] == [(A, "Yes?"), (B, "No.")]
    assert_well_formed(result.cues, 5.0)
    assert vtt_read_back_webvtt(result.cues) == expected(result.cues)


def test_an_interjection_inside_a_long_turn_is_shown_where_it_was_said() -> None:
    long_turn = "First we look at the numbers, then at the plan, and then at what the plan costs us."
    segments = [
        segment(0, 0.0, 8.0, long_turn, speaker=A),
        segment(1, 4.0, 4.5, "Mm-hmm.", speaker=B),
    ]
    result = optimizer().run(segments, 10.0)

    assert_well_formed(result.cues, 10.0)
    assert_each_speaker_keeps_every_word(segments, result)
    speakers = [cue.speaker for cue in result.cues]
    # the turn up to the interjection, the interjection, the rest of the turn
    assert [speaker for speaker, _ in itertools.groupby(speakers)] == [A, B, A]
    interjection = speakers.index(B)
    assert result.cues[interjection].start < 5.0
    shown = " ".join(cue.text.replace("\n", " ") for cue in result.cues if cue.speaker == A)
    assert shown == long_turn


def test_overlapping_speech_cuts_the_earlier_turn_short_and_keeps_both() -> None:
    segments = [
        segment(0, 0.0, 4.0, "I think we should wait until spring.", speaker=A),
        segment(1, 3.0, 6.0, "No, we cannot wait that long.", speaker=B),
    ]
    result = optimizer().run(segments, 8.0)

    assert_well_formed(result.cues, 8.0)
    assert_each_speaker_keeps_every_word(segments, result)
    assert [(cue.speaker, cue.text.replace("\n", " ")) for cue in result.cues] == [
        (A, "I think we should wait until spring."),
        (B, "No, we cannot wait that long."),
    ]
    # the second speaker appears when they start; the first gives way
    assert result.cues[0].end == result.cues[1].start == 3.0
    assert srt_read_back(result.cues)[1][2] == B


def test_a_turn_wholly_overlapped_at_the_end_of_the_audio_still_gets_its_own_cue() -> None:
    segments = [
        segment(0, 0.0, 5.0, "We are nearly done here.", speaker=A),
        segment(1, 5.0, 5.0, "Good.", speaker=B),
    ]
    result = optimizer().run(segments, 5.0)

    assert_well_formed(result.cues, 5.0)
    assert [(cue.speaker, cue.text) for cue in result.cues] == [(A, "We are nearly done here."), (B, "Good.")]


def test_a_repeated_answer_of_two_speakers_is_dialogue_not_a_loop() -> None:
    texts = ["Yes.", "Yes.", "Yes.", "Yes."]
    plain = [segment(index, index * 2.0, index * 2.0 + 1.0, text) for index, text in enumerate(texts)]
    assert optimizer().run(plain, 9.0).stats["removed"]["sentence_loops"] == 1

    segments = [s.model_copy(update={"speaker": (A, B)[s.sequence % 2]}) for s in plain]
    result = optimizer().run(segments, 9.0)
    assert [(cue.speaker, cue.text) for cue in result.cues] == [
        (A, "Yes."),
        (B, "Yes."),
        (A, "Yes."),
        (B, "Yes."),
    ]


def test_one_speaker_looping_is_still_cut() -> None:
    segments = [segment(index, index * 2.0, index * 2.0 + 1.0, "Thank you.", speaker=A) for index in range(5)]
    segments.append(segment(5, 11.0, 12.0, "Okay.", speaker=B))
    result = optimizer().run(segments, 13.0)
    assert result.stats["removed"]["sentence_loops"] == 1
    assert [cue.speaker for cue in result.cues][-1] == B


# -- the formats -----------------------------------------------------------------------------------


def test_json_names_the_speakers_in_the_order_they_first_speak() -> None:
    result = optimizer().run(meeting(), 16.0)
    document = json.loads(outputs.render("json", result.cues, {"job_id": "job"}))

    assert document["speakers"] == [A, B, C]
    assert list(document) == ["job_id", "speakers", "cues"]
    assert [cue["speaker"] for cue in document["cues"]] == [cue.speaker for cue in result.cues]
    assert [word["speaker"] for word in document["cues"][0]["words"]] == [A, A]


def test_txt_has_a_paragraph_per_turn_each_starting_with_its_speaker() -> None:
    result = optimizer().run(meeting(), 16.0)
    paragraphs = outputs.render("txt", result.cues, {}).decode().splitlines()

    labels = [_LABEL.match(paragraph) for paragraph in paragraphs]
    assert all(labels), paragraphs
    turns = [label.group(1) for label in labels if label]
    assert turns == [A, B, A, C, A, B, A]
    assert all(before != after for before, after in itertools.pairwise(turns))
    assert paragraphs[1] == "[SPEAKER_01]: Yes."
    assert paragraphs[-1] == "[SPEAKER_00]: 我们开始吧，今天的议程很长。"
    said = by_speaker([(s.speaker, s.text) for s in meeting()])
    assert (
        by_speaker(
            [(label.group(1), p[label.end() :]) for p, label in zip(paragraphs, labels, strict=True) if label]
        )
        == said
    )


def test_the_subrip_label_counts_against_the_first_line() -> None:
    # 40 characters: one line without a label, two with one (14 + 40 > 42).
    text = "We will meet again on the first Monday."
    plain = optimizer().run([segment(0, 0.0, 4.0, text)], 5.0)
    assert [cue.text for cue in plain.cues] == [text]

    result = optimizer().run([segment(0, 0.0, 4.0, text, speaker=A)], 5.0)
    (cue,) = result.cues
    assert "\n" in cue.text
    first, *_ = outputs.render("srt", result.cues, {}).decode().split("\n")[2:]
    assert first.startswith(speaker_label(A)) and RULES.line_fits(first)
    assert result.stats["rules"]["length"] == 1.0


def test_a_label_that_would_break_the_voice_tag_is_escaped() -> None:
    cues = [Cue(start=0.0, end=1.0, text="Hi.", speaker="Ann <&> Bo")]
    assert outputs.render("vtt", cues, {}).decode().endswith("<v Ann &lt;&amp;&gt; Bo>Hi.\n")


# -- a job without diarization -------------------------------------------------------------------

# What the optimizer wrote for `meeting(speakers=False)` before speakers existed.
BEFORE_SRT = (
    "1\n00:00:00,000 --> 00:00:03,400\nGood morning, everyone.\nThanks for coming. Yes.\n\n"
    "2\n00:00:03,500 --> 00:00:04,500\nRight.\n\n"
    "3\n00:00:05,000 --> 00:00:09,000\nAT&T's <3 budget -> is the first item\n"
    "on today's agenda, and it is a long one.\n\n"
    "4\n00:00:09,000 --> 00:00:11,000\nMm-hmm. Can I say something about that?\n\n"
    "5\n00:00:12,000 --> 00:00:15,000\n我们开始吧，今天的议程很长。\n\n"
)
BEFORE_VTT = (
    "WEBVTT\n\n00:00:00.000 --> 00:00:03.400\nGood morning, everyone.\nThanks for coming. Yes.\n\n"
    "00:00:03.500 --> 00:00:04.500\nRight.\n\n"
    "00:00:05.000 --> 00:00:09.000\nAT&amp;T's &lt;3 budget --&gt; is the first item\n"
    "on today's agenda, and it is a long one.\n\n"
    "00:00:09.000 --> 00:00:11.000\nMm-hmm. Can I say something about that?\n\n"
    "00:00:12.000 --> 00:00:15.000\n我们开始吧，今天的议程很长。\n"
)
BEFORE_TXT = (
    "Good morning, everyone. Thanks for coming. Yes. Right. AT&T's <3 budget --> is the first item "
    "on today's agenda, and it is a long one. Mm-hmm. Can I say something about that?"
    "我们开始吧，今天的议程很长。\n"
)
BEFORE_JSON_CUES = [
    {
        "start": 0.0,
        "end": 3.4,
        "text": "Good morning, everyone.\nThanks for coming. Yes.",
        "words": [
            {"word": "Good", "start": 0.0, "end": 0.3, "score": 0.9},
            {"word": "morning,", "start": 0.3, "end": 0.8, "score": 0.8},
        ],
    },
    {"start": 3.5, "end": 4.5, "text": "Right."},
    {
        "start": 5.0,
        "end": 9.0,
        "text": "AT&T's <3 budget --> is the first item\non today's agenda, and it is a long one.",
    },
    {"start": 9.0, "end": 11.0, "text": "Mm-hmm. Can I say something about that?"},
    {"start": 12.0, "end": 15.0, "text": "我们开始吧，今天的议程很长。"},
]


def test_a_job_without_speakers_is_written_exactly_as_before() -> None:
    result = optimizer().run(meeting(speakers=False), 16.0)

    assert outputs.render("srt", result.cues, {}).decode() == BEFORE_SRT
    assert outputs.render("vtt", result.cues, {}).decode() == BEFORE_VTT
    assert outputs.render("txt", result.cues, {}).decode() == BEFORE_TXT
    before_json = json.dumps({"job_id": "job", "cues": BEFORE_JSON_CUES}, ensure_ascii=False, indent=2)
    assert outputs.render("json", result.cues, {"job_id": "job"}).decode() == before_json
    assert all(cue.speaker is None for cue in result.cues)


# -- whatever the diarized segments ----------------------------------------------------------------

WORDS = ["hello", "world,", "yes.", "no", "AT&T", "-->", "谢", "你好，", "。", "Really?", "ok!", "well—"]


@st.composite
def diarized_segments(draw: st.DrawFn) -> list[SegmentTranscribed]:
    """Segments of two or three speakers at any times, overlapping or not, any order."""
    count = draw(st.integers(min_value=0, max_value=10))
    segments = []
    for index in range(count):
        start = draw(st.floats(min_value=0, max_value=60))
        duration = draw(st.floats(min_value=0, max_value=15))
        text = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=30)))
        speaker = draw(st.sampled_from([A, B, C]))
        segments.append(segment(index, start, start + duration, text, speaker=speaker))
    return draw(st.permutations(segments))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=diarized_segments())
def test_whatever_the_overlaps_no_cue_mixes_speakers_and_no_word_is_lost_uncounted(
    segments: list[SegmentTranscribed],
) -> None:
    audio_seconds = 80.0
    result = optimizer(simplify=False).run(segments, audio_seconds)

    assert_well_formed(result.cues, audio_seconds)
    said = by_speaker([(s.speaker, s.text) for s in segments])
    shown = by_speaker([(cue.speaker, cue.text) for cue in result.cues])
    for speaker, characters in shown.items():
        assert not characters - said.get(speaker, Counter()), f"{speaker} shows another speaker's words"
    lost = sum((said[speaker] - shown.get(speaker, Counter())).total() for speaker in said)
    assert lost == result.stats["removed"]["characters"]
    assert vtt_read_back_webvtt(result.cues) == expected(result.cues)
