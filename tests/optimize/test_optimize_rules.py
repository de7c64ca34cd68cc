# ruff: noqa: RUF001 (Chinese punctuation in these strings is what is under test)
"""The segment rules, loop and hallucination removal and Chinese conversion, on the pure
optimizer (no servers): every bad input the issue names, and the behaviour each rule promises."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from events.models import Word
from events.settings import Settings
from functions.optimize import outputs
from functions.optimize.cues import Optimizer
from functions.optimize.hallucinations import Hallucinations
from functions.optimize.script import visible_length
from tests.support.optimize_samples import (
    LOOPS,
    RULES,
    assert_nothing_lost_but_counted,
    assert_well_formed,
    optimizer,
    parse_back,
    segment,
)

JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def assert_meets_rules(result_cues: list, allow_short_last: bool = False) -> None:
    for cue in result_cues:
        assert RULES.text_fits(cue.text), cue
        assert RULES.duration_fits(cue.start, cue.end), cue


# -- bad input ---------------------------------------------------------------------------------


def test_empty_transcript_gives_valid_empty_outputs() -> None:
    result = optimizer().run([], 0.0)
    assert result.cues == []
    assert result.stats["rules"]["duration_and_length"] is None
    parse_back([])
    assert outputs.render("txt", [], {}) == b""
    assert json.loads(outputs.render("json", [], {"job_id": "j"}))["cues"] == []


def test_segments_of_only_spaces_give_no_cues() -> None:
    result = optimizer().run([segment(0, 0, 2, "   "), segment(1, 2, 3, "")], 3.0)
    assert result.cues == []


def test_a_forty_second_segment_without_punctuation_is_cut_between_words() -> None:
    words = [f"word{index}" for index in range(90)]
    segments = [segment(0, 0.0, 40.0, " ".join(words))]
    result = optimizer().run(segments, 40.0)

    assert len(result.cues) >= 6
    assert_meets_rules(result.cues)
    assert_well_formed(result.cues, 40.0)
    # never inside a word: every cue is made of whole words, in order
    assert " ".join(cue.text.replace("\n", " ") for cue in result.cues).split() == words
    assert result.stats["rules"]["duration_and_length"] == 1.0


def test_unsorted_and_overlapping_segments_come_out_ordered_without_overlap() -> None:
    segments = [
        segment(2, 6.0, 9.0, "third part here."),
        segment(0, 0.0, 4.0, "first part here."),
        segment(1, 3.0, 7.5, "second part overlaps."),
    ]
    result = optimizer().run(segments, 10.0)
    assert_well_formed(result.cues, 10.0)
    text = " ".join(cue.text.replace("\n", " ") for cue in result.cues)
    assert text.index("first") < text.index("second") < text.index("third")
    assert_nothing_lost_but_counted(segments, result)


@pytest.mark.parametrize(
    ("start", "end"),
    [(math.nan, 2.0), (1.0, math.nan), (-5.0, -1.0), (-1.0, 3.0), (math.inf, math.inf), (4.0, 1.0)],
)
def test_impossible_times_are_made_possible(start: float, end: float) -> None:
    segments = [
        segment(0, 0.0, 2.0, "before it."),
        segment(1, start, end, "the odd one."),
        segment(2, 5, 6, "after."),
    ]
    result = optimizer().run(segments, 8.0)
    assert_well_formed(result.cues, 8.0)
    assert_nothing_lost_but_counted(segments, result)
    parse_back(result.cues)


def test_times_past_the_end_of_the_audio_stay_inside_it() -> None:
    segments = [segment(0, 0.0, 3.0, "inside."), segment(1, 9.0, 14.0, "after the end.")]
    result = optimizer().run(segments, 5.0)
    assert_well_formed(result.cues, 5.0)
    assert result.cues[-1].end <= 5.0
    assert_nothing_lost_but_counted(segments, result)


@pytest.mark.parametrize(
    "text",
    [
        " ".join(["lorem", "ipsum", "dolor", "sit", "amet."] * 400),  # 10,000+ characters
        "这是一个很长的句子，" * 1000,  # 10,000 Chinese characters
        "x" * 10_000,  # no word boundary at all
    ],
    ids=["latin", "chinese", "one-word"],
)
def test_a_segment_of_ten_thousand_characters(text: str) -> None:
    segments = [segment(0, 0.0, 1200.0, text)]
    result = optimizer().run(segments, 1200.0)
    assert_well_formed(result.cues, 1200.0)
    for cue in result.cues:
        assert RULES.text_fits(cue.text), cue
    assert_nothing_lost_but_counted(segments, result)
    parse_back(result.cues)


def test_mixed_scripts_share_one_line_budget() -> None:
    text = "我们今天用 Python 和 JavaScript 写了一个 speech-to-text 平台，效果很好。Next week we ship it."
    segments = [segment(0, 0.0, 12.0, text, language="zh")]
    result = optimizer().run(segments, 12.0)
    assert_well_formed(result.cues, 12.0)
    for cue in result.cues:
        assert RULES.text_fits(cue.text), cue
    # words of spaced scripts are never cut, Chinese may break between any two characters
    shown = " ".join(cue.text.replace("\n", " ") for cue in result.cues)
    for word in ("Python", "JavaScript", "speech-to-text"):
        assert word in shown
    assert_nothing_lost_but_counted(segments, result)


# -- cutting -----------------------------------------------------------------------------------


def test_cuts_fall_at_clause_punctuation_before_word_boundaries() -> None:
    result = optimizer().run([segment(0, 0.0, 11.0, JFK)], 11.0)
    assert [cue.text.replace("\n", " ") for cue in result.cues] == [
        "And so my fellow Americans,",
        "ask not what your country can do for you,",
        "ask what you can do for your country.",
    ]


def test_sentence_ends_are_preferred_to_clauses() -> None:
    text = "We choose to go to the moon, in this decade. We do these things not because they are easy."
    result = optimizer().run([segment(0, 0.0, 9.0, text)], 9.0)
    assert result.cues[0].text.replace("\n", " ").endswith("in this decade.")


def test_a_last_line_of_digits_alone_is_avoided_when_another_break_fits() -> None:
    # "in <37 letters>" / "2020" is the better balanced break, but a reader takes a last line of
    # digits alone for the next cue's number: the other break that fits wins.
    word = "pneumonoultramicroscopicsilicovolcano"
    result = optimizer().run([segment(0, 0.0, 6.0, f"in {word} 2020")], 10.0)
    assert [cue.text for cue in result.cues] == [f"in\n{word} 2020"]
    # with no other break that fits, the digits stand alone
    result = optimizer().run([segment(0, 0.0, 6.0, f"in {word}c 2020")], 10.0)
    assert [cue.text for cue in result.cues] == [f"in {word}c\n2020"]


def test_with_three_lines_allowed_each_line_is_filled_in_turn() -> None:
    rules = dataclasses.replace(RULES, max_lines=3, max_line_chars=32)
    text = "The quick brown fox jumps over the lazy dog while the cat watches from a tree."
    result = Optimizer(rules, LOOPS, Hallucinations(()), True).run([segment(0, 0.0, 6.0, text)], 10.0)
    assert [cue.text for cue in result.cues] == [
        "The quick brown fox jumps over\nthe lazy dog while the cat\nwatches from a tree."
    ]


def test_chinese_punctuation_is_punctuation_and_lines_hold_sixteen_characters() -> None:
    text = "广州市房地产中介协会分析，今年的成交量比去年增加了很多。专家认为，这是因为政策放宽了。"
    result = optimizer().run([segment(0, 0.0, 9.0, text, language="zh")], 9.0)
    assert_well_formed(result.cues, 9.0)
    for cue in result.cues:
        assert all(len(line) <= 16 for line in cue.text.split("\n")), cue
        # punctuation ends a line, never starts one
        assert not any(line[0] in "，。" for line in cue.text.split("\n")), cue
    assert result.cues[0].text.replace("\n", "").endswith("。")


def test_word_timestamps_time_the_cuts() -> None:
    words = [
        Word(word=w, start=s, end=e)
        for w, s, e in [
            ("And", 0.3, 0.5),
            ("so", 0.6, 0.8),
            ("my", 0.9, 1.0),
            ("fellow", 1.1, 1.4),
            ("Americans,", 1.5, 2.4),
            ("ask", 3.4, 3.6),
            ("not", 3.7, 4.0),
            ("what", 4.1, 4.3),
            ("your", 4.4, 4.6),
            ("country", 4.7, 5.2),
            ("can", 5.3, 5.5),
            ("do", 5.6, 5.7),
            ("for", 5.8, 5.9),
            ("you,", 6.0, 6.6),
            ("ask", 7.4, 7.6),
            ("what", 7.7, 7.9),
            ("you", 8.0, 8.1),
            ("can", 8.2, 8.3),
            ("do", 8.4, 8.5),
            ("for", 8.6, 8.7),
            ("your", 8.8, 9.0),
            ("country.", 9.1, 10.2),
        ]
    ]
    result = optimizer().run([segment(0, 0.0, 11.0, JFK, words=words)], 11.0)
    # cues start at their first word and cut at the pause after "you,"
    assert [cue.start for cue in result.cues] == [0.3, 7.4]
    assert result.cues[0].text.endswith("you,")
    assert result.cues[-1].end >= 10.2
    assert next(w.word for w in result.cues[1].words or []) == "ask"
    assert sum(len(cue.words or []) for cue in result.cues) == len(words)


def test_short_cues_are_merged_with_a_neighbour() -> None:
    segments = [
        segment(index, index * 0.4, index * 0.4 + 0.4, word)
        for index, word in enumerate(["yes", "no", "maybe", "so."])
    ]
    result = optimizer().run(segments, 1.6)
    assert [cue.text for cue in result.cues] == ["yes no maybe so."]


def test_cues_are_given_time_to_be_read_when_there_is_a_gap() -> None:
    text = "A rather long sentence spoken very fast indeed."
    result = optimizer().run([segment(0, 0.0, 0.8, text), segment(1, 6.0, 7.5, "Then more.")], 8.0)
    first = result.cues[0]
    assert first.end - first.start >= RULES.reading_seconds(first.text)
    assert first.end <= result.cues[1].start


def test_a_few_words_over_a_long_segment_are_not_shown_longer_than_the_limit() -> None:
    result = optimizer().run([segment(0, 0.0, 30.0, "Hello.")], 30.0)
    assert result.cues[0].end - result.cues[0].start <= RULES.max_cue_s


# -- loops and hallucinations ----------------------------------------------------------------


def test_a_character_loop_collapses_to_a_doubled_character() -> None:
    segments = [segment(0, 0.0, 5.0, "谢谢" * 20, language="zh")]
    result = optimizer().run(segments, 5.0)
    assert [cue.text for cue in result.cues] == ["谢谢"]
    assert result.stats["removed"]["ngram_loops"] == 1
    assert result.stats["removed"]["characters"] == 38


def test_a_phrase_loop_collapses_to_one_copy() -> None:
    text = "I think that " + "we should go " * 8 + "home."
    segments = [segment(0, 0.0, 8.0, text)]
    result = optimizer().run(segments, 8.0)
    shown = " ".join(cue.text.replace("\n", " ") for cue in result.cues)
    assert shown == "I think that we should go home."
    assert result.stats["removed"]["ngram_loops"] == 1
    assert_nothing_lost_but_counted(segments, result)


def test_a_phrase_loop_is_found_past_a_shorter_repetition_inside_it() -> None:
    # "go go" is two copies (speech); "go go home" four times over is a loop.
    segments = [segment(0, 0.0, 6.0, "go go home " * 4 + "now.")]
    result = optimizer().run(segments, 6.0)
    assert [cue.text for cue in result.cues] == ["go go home now."]
    assert result.stats["removed"]["ngram_loops"] == 1
    assert result.stats["removed"]["characters"] == 24
    assert_nothing_lost_but_counted(segments, result)


def test_a_sentence_repeated_over_segments_collapses_to_one() -> None:
    segments = [
        segment(i, i * 2.0, i * 2.0 + 2.0, "The meeting starts at nine o'clock sharp.") for i in range(5)
    ]
    result = optimizer().run(segments, 10.0)
    assert [cue.text.replace("\n", " ") for cue in result.cues] == [
        "The meeting starts at nine o'clock sharp."
    ]
    assert result.stats["removed"]["sentence_loops"] == 1
    assert_nothing_lost_but_counted(segments, result)


def test_repetition_within_the_threshold_is_speech_and_stays() -> None:
    text = "No, no, no. Thank you. Thank you. 哈哈哈"
    segments = [segment(0, 0.0, 6.0, text)]
    result = optimizer().run(segments, 6.0)
    assert " ".join(cue.text.replace("\n", " ") for cue in result.cues) == text
    assert result.stats["removed"]["characters"] == 0


def test_a_standalone_silence_hallucination_is_dropped_but_kept_inside_speech() -> None:
    segments = [
        segment(0, 0.0, 3.0, "Thanks for watching my friends, said the host."),
        segment(1, 5.0, 9.0, " Thanks for watching!"),
    ]
    result = optimizer().run(segments, 10.0)
    assert [cue.text.replace("\n", " ") for cue in result.cues] == [
        "Thanks for watching my friends, said the host."
    ]
    assert result.stats["removed"]["hallucinations"] == 1
    assert_nothing_lost_but_counted(segments, result)


def test_a_looping_hallucination_is_collapsed_then_dropped() -> None:
    segments = [segment(i, i * 3.0, i * 3.0 + 3.0, "Thanks for watching.") for i in range(4)]
    result = optimizer().run(segments, 12.0)
    assert result.cues == []
    assert result.stats["removed"] == {
        "sentence_loops": 1,
        "ngram_loops": 0,
        "hallucinations": 1,
        "doubtful_segments": 0,
        "characters": 4 * len("Thanksforwatching."),
    }


def guessed(
    sequence: int, start: float, end: float, text: str, probability: float, avg_logprob: float
) -> Any:
    """A segment whose every word has `probability`, rated `avg_logprob` by the decoder."""
    step = (end - start) / len(text.split())
    words = [
        Word(word=word, start=start + i * step, end=start + (i + 1) * step, score=probability)
        for i, word in enumerate(text.split())
    ]
    return segment(sequence, start, end, text, words=words).model_copy(update={"avg_logprob": avg_logprob})


def test_a_segment_the_decoder_doubts_is_dropped_and_counted() -> None:
    # What whisper-base wrote for a single 0.45 s word ("country"): avg_logprob -1.04, word
    # probabilities 0.07-0.56 (case 13 of ../shared/cases).
    invented = guessed(0, 0.0, 0.45, "You all can't-", 0.2, -1.04)
    result = optimizer().run([invented], 0.45)
    assert result.cues == []
    assert result.stats["removed"]["doubtful_segments"] == 1
    assert_nothing_lost_but_counted([invented], result)


@pytest.mark.parametrize(
    ("probability", "avg_logprob"),
    [(0.2, -0.6), (0.8, -1.3)],  # confident decode of unsure words; sure words of a poor decode
)
def test_speech_the_decoder_is_only_partly_unsure_of_is_kept(probability: float, avg_logprob: float) -> None:
    mumbled = guessed(0, 0.0, 3.0, "it was the first great sorrow", probability, avg_logprob)
    result = optimizer().run([mumbled], 3.0)
    assert " ".join(cue.text.replace("\n", " ") for cue in result.cues) == "it was the first great sorrow"
    assert result.stats["removed"]["doubtful_segments"] == 0


def test_the_hallucination_list_is_configurable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMIZE_HALLUCINATIONS", "Like and subscribe,Bis zum nächsten Mal")
    settings = Settings()
    assert settings.optimize_hallucinations == ["Like and subscribe", "Bis zum nächsten Mal"]
    result = Optimizer.from_settings(settings).run([segment(0, 0, 2, "Like and subscribe!")], 2.0)
    assert result.cues == []
    defaults = Optimizer.from_settings(Settings(optimize_hallucinations=[]))
    assert defaults.run([segment(0, 0, 2, "Like and subscribe!")], 2.0).cues


def test_default_hallucinations_cover_several_languages() -> None:
    default = Optimizer.from_settings(Settings())
    for text in [
        "Thank you for watching.",
        "Untertitel der Amara.org-Community",
        "字幕由Amara.org社区提供",
        "ご視聴ありがとうございました",
    ]:
        assert default.run([segment(0, 0, 2, text)], 2.0).cues == [], text


# -- Traditional to Simplified ---------------------------------------------------------------


def test_traditional_mandarin_becomes_simplified() -> None:
    words = [Word(word="廣州", start=0.0, end=0.5), Word(word="協會", start=0.5, end=1.0)]
    result = optimizer().run(
        [segment(0, 0.0, 4.0, "廣州市房地產中介協會分析", words=words)], 4.0, language="zh"
    )
    assert result.cues[0].text.replace("\n", "") == "广州市房地产中介协会分析"
    assert [w.word for w in result.cues[0].words or []] == ["广州", "协会"]
    assert result.stats["simplified_characters"] == 4  # 廣 產 協 會


def test_conversion_is_only_for_mandarin_and_can_be_turned_off() -> None:
    japanese = optimizer().run([segment(0, 0.0, 2.0, "學校に行きます")], 2.0, language="ja")
    assert japanese.cues[0].text == "學校に行きます"
    off = optimizer(simplify=False).run([segment(0, 0.0, 2.0, "廣州")], 2.0, language="zh")
    assert off.cues[0].text == "廣州"
    # a segment's own language wins over the run's
    mixed = optimizer().run([segment(0, 0.0, 2.0, "廣州", language="zh")], 2.0, language="en")
    assert mixed.cues[0].text == "广州"


# -- outputs -----------------------------------------------------------------------------------


def test_outputs_parse_back_with_an_independent_parser() -> None:
    segments = [
        segment(0, 0.0, 4.0, JFK),
        segment(1, 11.0, 13.0, "AT&T <3 --> R&D"),
        segment(2, 13.0, 15.0, "「你好」，世界！"),
    ]
    result = optimizer().run(segments, 16.0)
    parse_back(result.cues)
    txt = outputs.render("txt", result.cues, {}).decode()
    assert "AT&T <3 --> R&D" in txt and "「你好」，世界！" in txt


def test_the_quality_figure_is_reported() -> None:
    result = optimizer().run([segment(0, 0.0, 11.0, JFK)], 11.0)
    rules = result.stats["rules"]
    assert rules == {
        "cues": 3,
        "duration_and_length": 1.0,
        "duration": 1.0,
        "length": 1.0,
        "reading_speed": 1.0,
    }
    assert all(visible_length(cue.text) <= 200 for cue in result.cues)


def test_plain_text_runs_cues_on_in_paragraphs_broken_at_long_pauses() -> None:
    segments = [
        segment(0, 0.0, 11.0, JFK),
        segment(1, 11.5, 13.0, "你好，世界。"),
        segment(2, 20.0, 22.0, "After a long pause."),
    ]
    txt = outputs.render("txt", optimizer().run(segments, 22.0).cues, {}).decode()
    assert txt == f"{JFK}你好，世界。\nAfter a long pause.\n"


def test_word_times_and_scores_that_are_not_numbers_give_strict_json() -> None:
    words = [
        Word(word="Odd", start=math.nan, end=0.5, score=math.nan),
        Word(word="words.", start=-2, end=math.inf),
    ]
    result = optimizer().run([segment(0, 0.0, 2.0, "Odd words.", words=words)], 2.0)

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    document = json.loads(outputs.render("json", result.cues, {"job_id": "j"}), parse_constant=refuse)
    assert [word["word"] for word in document["cues"][0]["words"]] == ["Odd", "words."]


def test_no_space_is_left_between_chinese_characters() -> None:
    # What the models write between Chinese words (whisperx with timestamps, belle2): spaces that
    # Chinese text has none of; between Latin words they stay.
    spaced = segment(0, 0.0, 3.3, "廣州市 佛地產 中間協會分析 with Python code", language="zh")
    result = optimizer().run([spaced], 4.0, "zh")
    assert outputs.to_txt(result.cues).strip() == "广州市佛地产中间协会分析 with Python code"
