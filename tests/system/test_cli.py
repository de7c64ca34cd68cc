"""The `klipnote` client commands, run as a person runs them (a subprocess, output to a pipe)
against the session stack: submit --wait, jobs, watch, results, and the ways they can go wrong."""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import srt

from infra.embedded.stack import EmbeddedStack
from tests.support.cli import klipnote
from tests.support.paths import AUDIO

UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
ANSI_OR_REDRAW = re.compile(r"\x1b\[|\r")


class Submitted:
    def __init__(self, job_id: str, media: Path, cache: Path, run: subprocess.CompletedProcess[str]) -> None:
        self.job_id, self.media, self.cache, self.run = job_id, media, cache, run


@pytest.fixture(scope="module")
def submitted(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Submitted:
    """jfk.flac, copied to a folder of its own, submitted and followed to its end."""
    folder = tmp_path_factory.mktemp("talks")
    media = folder / "jfk.flac"
    shutil.copy(AUDIO / "jfk.flac", media)
    cache = tmp_path_factory.mktemp("cache")
    run = klipnote(
        "submit", str(media), "--language", "en", "--wait", "--api", stack.api_url, cache=cache, timeout=180
    )
    return Submitted(run.stdout.strip().splitlines()[0] if run.stdout.strip() else "", media, cache, run)


def test_submit_wait_follows_the_progress_to_completion(submitted: Submitted) -> None:
    run = submitted.run
    assert run.returncode == 0, run.stderr
    assert UUID_HEX.match(submitted.job_id), run.stdout  # stdout is the id alone: $(klipnote submit ...)
    assert run.stdout.strip() == submitted.job_id
    lines = run.stderr.splitlines()
    assert lines[0] == "requested    jfk.flac"
    assert any(re.match(r"^transcribing +\d+%$", line) for line in lines), run.stderr
    assert any(line.startswith("completed ") for line in lines), run.stderr
    assert (
        lines[-1] == f"job {submitted.job_id} completed; its transcripts: klipnote results {submitted.job_id}"
    )
    assert not ANSI_OR_REDRAW.search(run.stderr)  # a pipe gets plain lines, not a redrawn bar


def test_jobs_lists_it(submitted: Submitted, stack: EmbeddedStack) -> None:
    run = klipnote(
        "jobs", "--state", "completed", "--limit", "500", "--api", stack.api_url, cache=submitted.cache
    )
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["id", "state", "model", "language", "progress", "created", "file"]
    row = next(row.split() for row in rows if row.startswith(submitted.job_id))
    assert row[1:5] == ["completed", "whisperx", "en", "100%"]
    assert row[-1] == "jfk.flac"
    assert not ANSI_OR_REDRAW.search(run.stdout)


def test_watch_on_a_finished_job_prints_its_end(submitted: Submitted, stack: EmbeddedStack) -> None:
    run = klipnote("watch", submitted.job_id, "--api", stack.api_url, cache=submitted.cache)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "requested    jfk.flac"
    assert lines[-1].startswith("completed ") and "srt" in lines[-1]


def test_results_are_written_next_to_the_input(
    submitted: Submitted, stack: EmbeddedStack, tmp_path: Path
) -> None:
    # Run from elsewhere: the local record says where the input is.
    run = klipnote("results", submitted.job_id, "--api", stack.api_url, cache=submitted.cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    folder = submitted.media.parent
    written = {Path(line) for line in run.stdout.splitlines()}
    assert written == {folder / f"jfk.{fmt}" for fmt in ("json", "srt", "vtt", "txt")}
    cues = list(srt.parse((folder / "jfk.srt").read_text(encoding="utf-8")))
    assert cues and "country" in " ".join(cue.content for cue in cues).lower()
    assert (folder / "jfk.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    assert list(tmp_path.iterdir()) == []


def test_results_of_a_job_from_elsewhere_go_to_the_current_directory(
    submitted: Submitted, stack: EmbeddedStack, tmp_path: Path
) -> None:
    run = klipnote(
        "results",
        submitted.job_id,
        "--formats",
        "srt",
        "--api",
        stack.api_url,
        cache=tmp_path / "another-machine",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "jfk.srt")
    assert list(srt.parse((tmp_path / "jfk.srt").read_text(encoding="utf-8")))


def test_a_failed_job_exits_non_zero_with_its_error(stack: EmbeddedStack, tmp_path: Path) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is no audio at all\n" * 64)
    run = klipnote("submit", str(bad), "--wait", "--api", stack.api_url, cache=tmp_path, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    job_id = run.stdout.strip()
    assert re.search(rf"^klipnote: job {job_id} failed: \w+: .+", run.stderr, re.M), run.stderr
    results = klipnote("results", "--api", stack.api_url, cache=tmp_path)  # the last one submitted
    assert results.returncode == 1
    assert f"job {job_id} failed" in results.stderr and "no results" in results.stderr


def test_an_unknown_job_is_named(stack: EmbeddedStack, tmp_path: Path) -> None:
    for command in ("watch", "results"):
        run = klipnote(command, "0" * 32, "--api", stack.api_url, cache=tmp_path)
        assert run.returncode == 5
        assert run.stderr.strip() == f"klipnote: no job {'0' * 32} at {stack.api_url} (404)"


def test_a_wrong_or_missing_api_key_is_explained(stack: EmbeddedStack, tmp_path: Path) -> None:
    wrong = klipnote("jobs", "--api", stack.api_url, "--api-key", "not-the-key", cache=tmp_path)
    assert wrong.returncode == 4
    assert "refused the API key (401 Unauthorized)" in wrong.stderr
    missing = klipnote("jobs", "--api", stack.api_url, cache=tmp_path, api_key=None)
    assert missing.returncode == 4
    assert "requires an API key (401 Unauthorized): pass --api-key or set API_KEY" in missing.stderr


def test_an_unreachable_api_is_explained(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    media = tmp_path / "jfk.flac"
    shutil.copy(AUDIO / "jfk.flac", media)
    for args in (("jobs",), ("submit", str(media), "--wait"), ("watch", "0" * 32)):
        run = klipnote(*args, "--api", url, cache=tmp_path)
        assert run.returncode == 3, run.stderr
        assert f"cannot reach the KlipNote API at {url}" in run.stderr
        assert "Traceback" not in run.stderr


def test_a_missing_file_is_refused_before_any_request(tmp_path: Path) -> None:
    run = klipnote("submit", str(tmp_path / "nothing.wav"), "--api", "http://127.0.0.1:9", cache=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == f"klipnote: no such file: {tmp_path / 'nothing.wav'}"


def test_transcribe_on_a_running_api_is_as_before(stack: EmbeddedStack, tmp_path: Path) -> None:
    """The README's first command, on the client code: progress, the results listed, the SRT shown."""
    output = tmp_path / "out"
    run = klipnote(
        "transcribe",
        str(AUDIO / "jfk.flac"),
        "--api",
        stack.api_url,
        "--output",
        str(output),
        cache=tmp_path,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    job_id = re.search(r"^job ([0-9a-f]{32}) submitted \(jfk\.flac\)$", run.stdout, re.M)
    assert job_id, run.stdout
    for fmt in ("json", "srt", "vtt", "txt"):
        path = output / job_id[1] / f"jfk.{fmt}"
        assert re.search(rf"^  {fmt} +{re.escape(str(path))}   \(s3://", run.stdout, re.M), run.stdout
        assert path.stat().st_size > 0
    cues = list(srt.parse((output / job_id[1] / "jfk.srt").read_text(encoding="utf-8")))
    assert cues[0].content in run.stdout


def test_serving_a_function_that_is_not_installed_names_those_that_are(tmp_path: Path) -> None:
    run = klipnote("serve", "nosuch", cache=tmp_path)
    assert run.returncode == 2
    assert "no function 'nosuch' here" in run.stderr and "whisperx" in run.stderr
    assert "Traceback" not in run.stderr


# -- what came from events is shown, never obeyed ------------------------------------------------------

HOSTILE_NAMES = ["[/x]", "[red]wide[/red]", "a\x1b]0;pwned\x07b", "\x1b[2Jcleared", "evil\u202eexe.mp3"]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_jobs_shows_hostile_file_names_escaped_not_as_markup_or_escapes(
    terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file name is whatever the uploader chose: rich markup (`[/x]` crashed `klipnote jobs`)
    and terminal escape sequences are printed as text, never interpreted."""
    from functions.ingest.schema import JobPage, JobView
    from infra.cli.display import job_table

    if terminal:  # rich draws its table (and would read markup) only on a terminal
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("COLUMNS", "300")
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    media = {"bucket": "uploads", "key": "k"}
    jobs = [
        JobView.model_validate({"id": f"{n:032x}", "state": "queued", "media": media, "filename": name})
        for n, name in enumerate(HOSTILE_NAMES)
    ]
    out = io.StringIO()
    job_table(out, JobPage(jobs=jobs, total=len(jobs), offset=0, limit=50))
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # rich's own styling (bold header)
    assert "[/x]" in text and "[red]wide[/red]" in text
    assert "\x1b]0;pwned" not in out.getvalue() and "\x1b[2J" not in out.getvalue()
    assert "\x07" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert "a\\x1b]0;pwned\\x07b" in text and "evil\\u202eexe.mp3" in text


def test_watch_lines_escape_what_events_carry() -> None:
    from infra.cli.display import Display

    out = io.StringIO()
    with Display(out) as display:
        display.line("failed       media_unreadable: [/x] \x1b[31mred\x1b[0m")
    assert out.getvalue() == "failed       media_unreadable: [/x] \\x1b[31mred\\x1b[0m\n"
