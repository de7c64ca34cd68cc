"""The commands that talk HTTP to a running API (`infra.client`), never to NATS or storage:
`submit`, `jobs`, `watch`, `results`, `cancel`, `delete`, and the submit-and-follow of
`transcribe`.

Every failure a person can meet is a `ClientError`: its message goes to stderr and its exit code
is the command's (`infra.client` lists them). Ctrl-C while following a job exits 130 and says
how to follow it again; the job goes on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from events.lifecycle import FINISHED_STATES, JobState
from events.settings import Settings
from infra.cli.display import Display, job_table, printable, progress_text
from infra.cli.history import last_submitted, recall, remember
from infra.client import (
    EXIT_FAILED,
    EXIT_NOT_COMPLETED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    ClientError,
    JobEnd,
    KlipNote,
)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `submit`, `jobs`, `watch` or `results` against `--api` (else $KLIPNOTE_API, else the
    settings' API address); the exit code."""
    api = args.api or os.environ.get("KLIPNOTE_API") or default_api(settings)
    job_id = getattr(args, "job", None)
    try:
        with KlipNote(api, args.api_key or settings.api_key) as client:
            if args.command == "submit":
                return submit(args, client)
            if args.command == "jobs":
                return jobs(args, client)
            if args.command == "delete":
                return delete(client, args.job)
            if args.command == "cancel":
                return cancel(client, args.job)
            job_id = job_id or _last_job()
            if args.command == "watch":
                return watch(client, job_id)
            return results(args, client, job_id)
    except ClientError as error:
        print(f"klipnote: {printable(error.message)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        job_id = getattr(args, "job", None) or job_id
        if job_id:
            print(f"\nstopped following; the job goes on: klipnote watch {job_id}", file=sys.stderr)
        return 130


def default_api(settings: Settings) -> str:
    """`http://API_HOST:API_PORT` of the settings, a wildcard bind reached on loopback."""
    host = settings.api_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def _last_job() -> str:
    job_id = last_submitted()
    if job_id is None:
        raise ClientError(
            "name a job (no job was submitted from here yet; `klipnote jobs` lists them)", EXIT_USAGE
        )
    return job_id


def submit(args: argparse.Namespace, client: KlipNote) -> int:
    """Print the new job's id on stdout (alone: `$(klipnote submit ...)`); with `--wait`, follow
    it on stderr to its end."""
    args.job = None
    local: Path | None = None
    if not args.source.startswith("s3://"):
        local = Path(args.source).expanduser()
        if not local.is_file():
            print(f"klipnote: no such file: {local}", file=sys.stderr)
            return EXIT_USAGE
    job = client.submit(
        local or args.source,
        model=args.model,
        language=args.language,
        formats=args.formats,
        audio_track=args.audio_track,
        task=args.task,
        prompt=args.prompt,
        hotwords=args.hotwords,
        temperature=args.temperature,
        delete_after=args.delete_after,
        diarize=args.diarize,
        min_speakers=args.min_speakers,
        max_speakers=args.max_speakers,
    )
    if local is not None:
        remember(job.id, local, client.api)
    print(job.id, flush=True)
    if not args.wait:
        return 0
    args.job = job.id
    with Display(sys.stderr) as display:
        end = follow(client, job.id, display)
    return _outcome(client, job.id, end)


def cancel(client: KlipNote, job_id: str) -> int:
    """Cancel a job that has not ended; 0 when it is canceled, also when it was canceled before
    (a repeat changes nothing). A job that ended otherwise (completed, failed) exits 1."""
    client.cancel(job_id)
    print(f"job {job_id} canceled: it will not be transcribed (or stops at its next window)", file=sys.stderr)
    return 0


def delete(client: KlipNote, job_id: str) -> int:
    """Delete a job (canceled first if it is running); 0 when it is gone, also when it was
    deleted before (a delete is idempotent)."""
    client.delete(job_id)
    print(f"job {job_id} deleted: its upload, results and record are gone", file=sys.stderr)
    return 0


def watch(client: KlipNote, job_id: str) -> int:
    """Follow a job's events, and the text of its segments as it comes, on stdout until it ends;
    0 when it completed."""
    client.job(job_id)  # an unknown job is named before anything is shown
    with Display(sys.stdout) as display:
        end = follow(client, job_id, display)
    return _outcome(client, job_id, end)


def follow(client: KlipNote, job_id: str, display: Display) -> JobEnd:
    """Show the job's events, the text of its segments among them, until its end; how it
    ended. A job that ended longer ago than its events are kept ends with what its record says."""
    for event in client.events(job_id):
        if event is None:
            continue
        display.event(event)
        if event.ends_job:
            return JobEnd.of_event(event)
    job = client.job(job_id)  # the API no longer keeps the events of this job (`expired`)
    if job.state not in FINISHED_STATES:
        raise ClientError(f"the event stream of job {job_id} ended before the job did")
    end = JobEnd.of_record(job)
    display.end(end)
    return end


def _outcome(client: KlipNote, job_id: str, end: JobEnd) -> int:
    if end.state == JobState.CANCELED:
        print(f"klipnote: job {job_id} was canceled; it has no results", file=sys.stderr)
        return EXIT_FAILED
    if end.state != JobState.COMPLETED:
        print(
            f"klipnote: job {job_id} failed: {printable(end.code or '')}: {printable(end.message or '')}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    client.wait_finished(job_id)  # the record follows the event: `results` can run right after
    print(f"job {job_id} completed; its transcripts: klipnote results {job_id}", file=sys.stderr)
    return 0


def jobs(args: argparse.Namespace, client: KlipNote) -> int:
    """List jobs, newest first (a table on a terminal, aligned plain columns elsewhere)."""
    state = JobState(args.state) if args.state else None
    page = client.jobs(state, max(1, min(args.limit, 500)))
    if not page.jobs:
        print("no jobs" + (f" in state {args.state}" if args.state else ""), file=sys.stderr)
        return 0
    job_table(sys.stdout, page)
    return 0


def results(args: argparse.Namespace, client: KlipNote, job_id: str) -> int:
    """Download a completed job's transcripts: into `--to`, else next to the submitted file when
    this machine submitted it, else into the current directory; one path per line on stdout."""
    job = client.job(job_id)
    if job.state == JobState.FAILED:
        code, message = (job.error.code, job.error.message) if job.error else (None, None)
        raise ClientError(f"job {job_id} failed ({code}: {message}); it has no results", EXIT_FAILED)
    if job.state != JobState.COMPLETED:
        raise ClientError(
            f"job {job_id} has not completed yet ({progress_text(job)} {job.state.value}); "
            f"follow it with `klipnote watch {job_id}`",
            EXIT_NOT_COMPLETED,
        )
    produced: list[str] = list(job.results)
    wanted: list[str] = args.formats or produced
    missing = [fmt for fmt in wanted if fmt not in produced]
    if missing:
        raise ClientError(
            f"job {job_id} made no {','.join(missing)} (it made {','.join(produced)})", EXIT_NOT_FOUND
        )
    source = recall(job_id)
    # A name from the job's record is whatever its requester sent: no control characters in ours.
    stem = source.stem if source else printable(Path(job.filename or job_id).stem) or job_id
    if args.to is not None:
        directory = args.to
        directory.mkdir(parents=True, exist_ok=True)
    elif source is not None and source.parent.is_dir():
        directory = source.parent
    else:
        directory = Path.cwd()
    for fmt in wanted:
        target = directory / f"{stem}.{fmt}"
        if source is not None and target.resolve() == source.resolve():
            target = directory / f"{stem}.transcript.{fmt}"  # never over the input itself
        print(client.download(job_id, fmt, target), flush=True)
    return 0


def submit_and_follow(api: str, media: Path, args: argparse.Namespace, settings: Settings) -> int:
    """`transcribe`'s way: submit, follow on stdout, download every result into
    `<--output>/<job>/` and show the SRT."""
    try:
        with KlipNote(api, settings.api_key) as client:
            job_id = client.submit(
                media,
                model=args.model,
                language=args.language,
                audio_track=args.audio_track,
                diarize=args.diarize,
                min_speakers=args.min_speakers,
                max_speakers=args.max_speakers,
            ).id
            print(f"job {job_id} submitted ({media.name})", flush=True)
            with Display(sys.stdout) as display:
                end = follow(client, job_id, display)
            if end.state == JobState.CANCELED:
                print("job canceled: it has no results", file=sys.stderr)
                return 1
            if end.state != JobState.COMPLETED:
                print(
                    f"job failed: {printable(end.code or '')}: {printable(end.message or '')}",
                    file=sys.stderr,
                )
                return 1
            job = client.wait_finished(job_id)
            output = args.output / job_id
            output.mkdir(parents=True, exist_ok=True)
            for fmt, ref in job.results.items():
                target = client.download(job_id, fmt, output / f"{media.stem}.{fmt}")
                print(f"  {fmt:4} {target}   (s3://{ref.bucket}/{ref.key})")
    except ClientError as error:
        print(f"klipnote: {printable(error.message)}", file=sys.stderr)
        return error.exit_code
    srt = output / f"{media.stem}.srt"
    if srt.exists():
        print("\n" + srt.read_text(encoding="utf-8"))
    return 0
