"""Prove one function image's Python environment without Docker: `image_env.py NAME`.

Does what `functions/NAME/Dockerfile`'s build stage does, on this machine:

1. the build context its `Dockerfile.dockerignore` lets through (`*`, then `!pattern` exceptions),
   copied to a temporary `src/` (a module the ignore file leaves out is an image that cannot start);
2. a fresh virtualenv (`python -m venv`);
3. `pip install -r functions/NAME/requirements.txt`, and nothing else;
4. `pip install --no-deps src/` (the project, every dependency already pinned by step 3);

then runs `klipnote serve NAME` from that virtualenv, in a clean environment, against NATS and S3,
and waits until `GET /health/readiness` answers 200; then stops it (SIGTERM) and reports.

NATS and S3 are the embedded stack's servers (`infra.embedded.stack`, run by the dev venv that
runs this script), started here on free ports, or, with `--servers-from-env`, the ones the
settings in the environment name (a test's session stack). The model images get the bundled
whisper-base (ct2 for whisperx, the transformers checkpoint derived from it for belle2).

Unlike the Dockerfile, the wheels are kept: step 3 installs offline from a wheelhouse
(`~/.cache/klipnote/wheelhouse/NAME-INDEX/`, or `$KLIPNOTE_WHEELHOUSE`) that `pip wheel` fills from
the index with the same requirements file when a wheel is missing, so only the first run downloads
(`--no-wheelhouse`: from the index every time).

For a `+cuXXX` local version pinned with an extra index (belle2: `torch==2.5.1+cu118` from
PyTorch's CUDA 11.8 index, ADR-004), `--index package` installs the same release from the package
index instead (PyPI's build of torch 2.5.1, CUDA 12 libraries, which runs on the CPU): PyTorch's
own index is not reachable from every machine, and what is proven here is that the image's
dependency set resolves and starts, below torch 2.6 as ADR-004 requires. `--index as-pinned`
keeps the file as it is.

Exit status: 0 when the function reached readiness; 1 when a step failed (its output says which).
Prints one `timing` line per step and the virtualenv's size at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# pip's own HTTP cache keeps only what the index marks cacheable (a mirror that sends no
# Cache-Control leaves it empty): the wheels an image resolves are kept here instead.
WHEELHOUSE = Path(os.environ.get("KLIPNOTE_WHEELHOUSE", Path.home() / ".cache" / "klipnote" / "wheelhouse"))
FUNCTIONS = ("ingest", "optimize", "whisperx", "belle2")
MODEL_FUNCTIONS = ("whisperx", "belle2")


class ImageEnvError(RuntimeError):
    """A step of the proof failed; the message says which and ends with its output."""


def sent_to_the_build(function: str, relative: str) -> bool:
    """Whether `functions/<function>/Dockerfile.dockerignore` sends `relative` (a POSIX path
    from the repository root) to the build: the last matching pattern wins, `!` keeps."""
    patterns = (ROOT / "functions" / function / "Dockerfile.dockerignore").read_text().splitlines()
    sent = False
    for pattern in (line.strip() for line in patterns):
        if not pattern or pattern.startswith("#"):
            continue
        if fnmatch.fnmatch(relative, pattern.lstrip("!").replace("**", "*")):
            sent = pattern.startswith("!")
    return sent


def build_context(function: str, dest: Path) -> Path:
    """Copy what the image's build stage copies (pyproject.toml, README.md, events/, functions/,
    infra/), as far as its .dockerignore sends it, into `dest`; returns `dest`."""
    copied = ["pyproject.toml", "README.md"]
    for top in ("events", "functions", "infra"):
        copied += [path.relative_to(ROOT).as_posix() for path in (ROOT / top).rglob("*") if path.is_file()]
    for relative in copied:
        if "__pycache__" in relative or not sent_to_the_build(function, relative):
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    return dest


def requirements_for(function: str, index: str, dest: Path) -> Path:
    """The image's requirements file; with `index="package"`, its `+cuXXX` local versions and
    extra indexes dropped (the same releases from the package index). Returns the file to use."""
    source = ROOT / "functions" / function / "requirements.txt"
    if index == "as-pinned":
        return source
    lines = []
    for line in source.read_text().splitlines():
        if line.strip().startswith("--extra-index-url"):
            continue
        lines.append(re.sub(r"^(\s*[A-Za-z0-9_.\-]+==[^+\s#]+)\+cu\d+", r"\1", line))
    dest.write_text("\n".join(lines) + "\n")
    return dest


def _run(step: str, command: list[str], cwd: Path | None = None) -> float:
    """Run one step, streaming its output; its wall time in seconds. Raises ImageEnvError."""
    print(f"$ {' '.join(command)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, check=False)
    took = time.monotonic() - started
    print(f"timing {step}: {took:.1f} s", flush=True)
    if result.returncode != 0:
        raise ImageEnvError(f"{step} failed with exit status {result.returncode}")
    return took


def make_env(
    function: str,
    venv: Path,
    work: Path,
    index: str = "package",
    wheelhouse: Path | None = None,
    python: str | None = None,
) -> None:
    """Steps 1-4: a fresh virtualenv at `venv` holding only the image's requirements and the
    project. With `wheelhouse`, pip installs from `<wheelhouse>/<function>-<index>/` offline and
    fills it from the index (`pip wheel`, same requirements file) only when something is missing
    there. Raises ImageEnvError when a step fails."""
    if venv.exists():
        shutil.rmtree(venv)
    context = build_context(function, work / "src")
    requirements = requirements_for(function, index, work / "requirements.txt")
    python_in_venv = str(venv / "bin" / "python")
    pip = [python_in_venv, "-m", "pip", "install", "--disable-pip-version-check"]
    _run("venv", [python or _base_python(), "-m", "venv", str(venv)])
    if wheelhouse is None:
        _run("requirements", [*pip, "-r", str(requirements)])
        _run("project", [*pip, "--no-deps", str(context)], cwd=work)
        return
    house = wheelhouse / f"{function}-{index}"
    offline = [*pip, "--no-index", "--find-links", str(house)]
    try:
        _run("requirements (wheelhouse)", [*offline, "-r", str(requirements)])
    except ImageEnvError:
        # The wheels the index resolves for this file (sdists built), and the build backend the
        # project's own install needs.
        wheel = [python_in_venv, "-m", "pip", "wheel", "--disable-pip-version-check", "-w", str(house)]
        _run("wheelhouse fill (index)", [*wheel, "--find-links", str(house), "-r", str(requirements)])
        _run("wheelhouse fill (build backend)", [*wheel, "setuptools>=69", "wheel"])
        _run("requirements (wheelhouse)", [*offline, "-r", str(requirements)])
    _run("project", [*offline, "--no-deps", str(context)], cwd=work)


def _base_python() -> str:
    """The interpreter the dev venv was made from (a venv of a venv would inherit nothing, but
    its base is what `python -m venv` in the image is: a plain CPython 3.11)."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_until_ready(
    function: str, venv: Path, settings_env: dict[str, str], log_path: Path, timeout: float
) -> float:
    """Run `klipnote serve <function>` from `venv` with only `settings_env` (plus PATH and HOME)
    as its environment; seconds until its readiness probe answered 200. Stops it before
    returning. Raises ImageEnvError when it exits or is not ready within `timeout` seconds."""
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        **settings_env,
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(port),
        # ingest serves its health endpoints on the API's port.
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}/health/readiness"
    command = [str(venv / "bin" / "klipnote"), "serve", function]
    print(f"$ {' '.join(command)}  (readiness: {url}, log: {log_path})", flush=True)
    started = time.monotonic()
    with open(log_path, "wb") as log, tempfile.TemporaryDirectory() as cwd:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            answer = "no answer"
            while True:
                if process.poll() is not None:
                    raise ImageEnvError(
                        f"klipnote serve {function} exited with {process.returncode}; its log ends:\n"
                        + _tail(log_path)
                    )
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except urllib.error.HTTPError as error:  # 503 and why
                    answer = error.read().decode(errors="replace")
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() - started > timeout:
                    raise ImageEnvError(
                        f"{function} not ready within {timeout:.0f} s ({answer}); its log ends:\n"
                        + _tail(log_path)
                    )
                time.sleep(0.2)
            took = time.monotonic() - started
            print(f"timing ready: {took:.1f} s", flush=True)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return took


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def disk_size(path: Path) -> int:
    """Bytes under `path` (files only, links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@contextlib.contextmanager
def servers(function: str, data_dir: Path, from_env: bool) -> Iterator[dict[str, str]]:
    """The settings environment of NATS and S3 to serve against: the environment's own
    (`from_env`) or an embedded stack of servers only, with the bundled model for model images."""
    from events.settings import Settings

    if from_env:
        yield Settings().to_env()
        return
    from infra.embedded.stack import EmbeddedStack, Ports
    from infra.models import assemble_whisper_base, derive_whisper_base_hf

    settings = Settings()
    if function in MODEL_FUNCTIONS:
        ct2 = assemble_whisper_base(settings.model_cache_dir)
        if function == "belle2":
            derive_whisper_base_hf(ct2, settings.belle2_model_path())
        settings = settings.model_copy(update={"enabled_models": [function]})
    with EmbeddedStack(data_dir, ports=Ports.free(), settings=settings, functions=[]) as stack:
        yield stack.env()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("function", choices=FUNCTIONS)
    parser.add_argument("--venv", type=Path, help="where to make the virtualenv (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir (build context, log)")
    parser.add_argument(
        "--index",
        choices=["package", "as-pinned"],
        default="package",
        help="package: +cuXXX local pins from the package index (default); as-pinned: the file as is",
    )
    parser.add_argument(
        "--no-wheelhouse",
        action="store_true",
        help=f"install from the index each time, as the Dockerfile does (default: via {WHEELHOUSE})",
    )
    parser.add_argument("--servers-from-env", action="store_true", help="serve against the env's settings")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix=f"klipnote-image-{args.function}-"))
    venv = args.venv or work / "venv"
    started = time.monotonic()
    try:
        make_env(args.function, venv, work, args.index, None if args.no_wheelhouse else WHEELHOUSE)
        print(f"venv size: {disk_size(venv) / 2**20:.0f} MiB ({venv})", flush=True)
        with servers(args.function, work / "stack", args.servers_from_env) as settings_env:
            serve_until_ready(args.function, venv, settings_env, work / "serve.log", args.timeout)
    except ImageEnvError as error:
        print(f"FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        print(f"timing total: {time.monotonic() - started:.1f} s", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"OK: {args.function}'s image environment starts and reaches readiness", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
