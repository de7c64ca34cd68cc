"""How the commands show jobs and their events: rich (a live progress bar, a table) on a
terminal; plain lines, one per change, anywhere else (CI logs, pipes, files), never redrawn."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from events import catalogue
from events.lifecycle import JobState
from events.models import (
    LanguageDetected,
    SegmentTranscribed,
    TranscriptionCanceled,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionProgress,
    TranscriptionQueued,
    TranscriptionRequested,
    TranscriptionTranscribed,
    WebhookAttempted,
)
from functions.ingest.schema import JobPage, JobView
from infra.client import JobEnd, JobEvent

if TYPE_CHECKING:
    from rich.console import Console

_JOB_COLUMNS = ("id", "state", "model", "language", "progress", "created", "file")
# Characters that reorder what a terminal shows (Unicode bidirectional controls, UAX #9): a file
# name could make `evil.exe` look like `exe.live`. Shown escaped, like control characters.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` (a file name, an error message: anything that came from an event) safe to print to
    a terminal: control characters (C0, DEL, C1: escape sequences that move the cursor, retitle
    the window or hide text) and bidirectional controls become visible `\\xNN`/`\\uNNNN` escapes.
    Rich markup is not interpreted anywhere this is printed (see `Display.line`, `job_table`)."""
    return "".join(
        (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS
        else ch
        for ch in text
    )


def console(stream: TextIO) -> Console:
    """A rich console on `stream`; `is_terminal` tells whether to draw or print plain lines."""
    from rich.console import Console

    return Console(file=stream, highlight=False)


class Display:
    """A job's events as people like to see them: a live progress bar (stage and percent) on a
    terminal; plain lines, one per change, anywhere else (CI logs, pipes, files). The text comes
    as the model makes it, a line per segment with its start time (`segment_line`), above the
    bar. A context manager: the bar runs between enter and exit."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.console = console(stream)
        self.live = bool(self.console.is_terminal)
        self._bar: Any = None
        self._task: Any = None
        self._shown: tuple[str, int] | None = None
        self._run: str | None = None  # the run whose text is shown

    def __enter__(self) -> Display:
        if self.live:
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<13}", markup=False),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task("submitted", total=100)
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def line(self, text: str) -> None:
        """Print one line; what came from events is made printable, never read as rich markup."""
        text = printable(text)
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, emoji=False)
        else:
            print(text, file=self.stream, flush=True)

    def event(self, event: JobEvent) -> None:
        """Show one event: progress moves the bar (plain: a line per stage, and per 10 points);
        the others are a line each."""
        data = event.data
        if isinstance(data, SegmentTranscribed):
            if self._run is not None and data.run_id != self._run:
                # Another run (a hand-over, a redelivery) transcribes the media from the start.
                self.line(f"{'restarted':<12} the text starts over (another run of the model)")
            self._run = data.run_id
            self.line(segment_line(data))
            return
        if isinstance(data, TranscriptionProgress):
            stage, percent = data.stage, round(100 * data.fraction)
            if self._bar is not None:
                self._bar.update(self._task, description=stage, completed=percent)
                self._shown = (stage, percent)
            elif (
                self._shown is None
                or self._shown[0] != stage
                or percent >= self._shown[1] + 10
                or (percent == 100 and self._shown[1] != 100)
            ):
                self.line(f"{stage:<12} {percent:3d}%")
                self._shown = (stage, percent)
            return
        text = describe(event)
        if text:
            self.line(text)
        # Events of different functions may arrive in any order: the bar only moves forward.
        if self._bar is not None and event.kind is catalogue.QUEUED and self._shown is None:
            self._bar.update(self._task, description="queued", completed=0)
        if self._bar is not None and event.kind in (catalogue.TRANSCRIBED, catalogue.COMPLETED):
            self._bar.update(self._task, description=str(text).split()[0], completed=100)

    def end(self, end: JobEnd) -> None:
        """Show a job's end known from its record (its events expired from the stream)."""
        self.line(ended(end))
        if self._bar is not None and end.state == JobState.COMPLETED:
            self._bar.update(self._task, description="completed", completed=100)


def segment_line(segment: SegmentTranscribed) -> str:
    """A segment as a line: its start time (`m:ss`, `h:mm:ss` from an hour) in the column of the
    lifecycle lines' names, then its text, after its speaker on a diarized job (`[SPEAKER_00]: `,
    as the SRT and TXT results write it). Long text is wrapped by a terminal, never cut."""
    speaker = f"[{segment.speaker}]: " if segment.speaker else ""
    return f"{clock(segment.start):<12} {speaker}{segment.text.strip()}"


def clock(seconds: float) -> str:
    """A time of the media, whole seconds: `m:ss`, or `h:mm:ss` from an hour on."""
    minutes, second = divmod(int(max(seconds, 0.0)), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


def describe(event: JobEvent) -> str | None:
    """One line for a lifecycle event (None for those not shown here: segments, which
    `segment_line` shows, and dispatches)."""
    data = event.data
    if isinstance(data, TranscriptionRequested):
        name = data.filename or f"s3://{data.media.bucket}/{data.media.key}"
        return f"requested    {name}"
    if isinstance(data, TranscriptionQueued):
        why: str | None = data.routing_reason
        if data.handed_over_from:
            why = f"handed over by {data.handed_over_from}: {why}"
        return f"queued       for {data.model}" + (f" ({why})" if why else "")
    if isinstance(data, LanguageDetected):
        return f"language     {data.language} (p={data.probability:.2f}, {data.speech_seconds:.1f} s heard)"
    if isinstance(data, TranscriptionTranscribed):
        count = data.segment_count
        return (
            f"transcribed  {count} segment{'' if count == 1 else 's'}, "
            f"{data.audio_seconds:.1f} s of audio, language {data.language or '?'}"
        )
    if isinstance(data, TranscriptionCompleted | TranscriptionFailed | TranscriptionCanceled):
        return ended(JobEnd.of_event(event))
    if isinstance(data, WebhookAttempted):
        status = f", HTTP {data.status_code}" if data.status_code else ""
        return f"webhook      {data.outcome} (attempt {data.attempt}{status})"
    return None


def ended(end: JobEnd) -> str:
    """The line of a job's end: its results, its failure's code and message, or its cancel."""
    if end.state == JobState.COMPLETED:
        return f"completed    {', '.join(end.results)}"
    if end.state == JobState.CANCELED:
        return "canceled     by request: no results"
    return f"failed       {end.code}: {end.message}"


def job_table(stream: TextIO, page: JobPage) -> None:
    """A page of jobs: a rich table on a terminal (ids never cut: the other commands take them),
    aligned plain columns with a header line anywhere else."""
    rows = [
        tuple(
            printable(cell)
            for cell in (
                job.id,
                job.state.value,
                job.model or job.requested_model or "-",
                job.language or job.detected_language or "-",
                progress_text(job),
                local_time(job.created_at),
                job.filename or "",
            )
        )
        for job in page.jobs
    ]
    out = console(stream)
    if out.is_terminal:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, header_style="bold")
        for name in _JOB_COLUMNS:
            table.add_column(name, no_wrap=name in ("id", "created"), min_width=32 if name == "id" else None)
        for row in rows:
            # Text cells: a file name such as `[/x]` or `[red]` is shown, not read as markup.
            table.add_row(*(Text(cell) for cell in row))
        out.print(table)
        if page.total > len(rows):
            out.print(f"{len(rows)} of {page.total} jobs (--limit for more)", style="dim")
        return
    widths = [max(len(str(row[i])) for row in [_JOB_COLUMNS, *rows]) for i in range(len(_JOB_COLUMNS))]
    for row in [_JOB_COLUMNS, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=stream,
        )


def progress_text(job: JobView) -> str:
    """100% when completed, the error code when failed, `-` when canceled, else the stage and
    its percent."""
    if job.state == JobState.COMPLETED:
        return "100%"
    if job.state == JobState.CANCELED:
        return "-"
    if job.state == JobState.FAILED:
        return (job.error.code if job.error else None) or "-"
    percent = f"{job.progress:.0%}"
    return f"{job.stage} {percent}" if job.stage else percent


def local_time(stamp: datetime | None) -> str:
    """A UTC time in the local zone, to the second."""
    if stamp is None:
        return "-"
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")
