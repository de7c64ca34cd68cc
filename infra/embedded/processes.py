"""The child processes of an embedded stack: spawned with their output in a log file each, tied
to the stack's life (PR_SET_PDEATHSIG), waited on until they answer, and reaped on stop; and
`SECRETS`, the one table of which child may hold which secret setting in its environment."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1

# The secret settings (as environment variables) and the functions that need each; None: every
# function. A child gets no other: a model function parses hostile media, so it never holds the
# API key nor the webhook signing secret; the servers (nats-server, SeaweedFS) read their own
# configuration files and hold none. The Knative manifests and the compose file give each
# function the same secrets (infra/knative, infra/compose).
SECRETS: dict[str, frozenset[str] | None] = {
    "API_KEY": frozenset({"ingest"}),
    "WEBHOOK_SECRET": frozenset({"ingest"}),
    "S3_SECRET_KEY": None,  # every function reads or writes the store
    "RECEIVER_TOKEN": None,  # every function's CloudEvents receiver checks it (HTTP transport)
}

# The children that are neither a server nor a function, and the only secrets each may hold: the
# stand-in for MinIO's notifier (infra.embedded.notifier_standin) HEADs each object it announces.
NOTIFIER_STANDIN = "notifier-standin"
HELPER_SECRETS: dict[str, frozenset[str]] = {NOTIFIER_STANDIN: frozenset({"S3_SECRET_KEY"})}


def function_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """`env` without the secrets function (or helper, `HELPER_SECRETS`) `name` does not need
    (`SECRETS`)."""
    return {key: value for key, value in env.items() if _needs(name, key)}


def _needs(function: str | None, variable: str) -> bool:
    name = variable.upper()  # Settings read the environment case-insensitively: `api_key` is API_KEY
    if name not in SECRETS:
        return True
    if function in HELPER_SECRETS:
        return name in HELPER_SECRETS[function]
    needed = SECRETS[name]
    return function is not None and (needed is None or function in needed)


class StackError(RuntimeError):
    """The stack could not start: a port taken, a child that exited (its log tail is in the
    message), or one not ready before the deadline."""


def die_with_parent() -> None:
    # Runs in the child between fork and exec: if the stack is killed, so are its servers.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One process of the stack: a server ("nats-server", "seaweedfs") or a function (its name)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of its log ("" when unreadable)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Processes:
    """The running children, each logging to `<log_dir>/<name>.log` (appended across restarts)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
        """Start `command` in a session of its own, stdin closed, stdout and stderr to its log;
        with `env`, or else ours without any of the `SECRETS` (a server's)."""
        if env is None:
            env = {key: value for key, value in os.environ.items() if _needs(None, key)}
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def child(self, name: str) -> Child:
        """The running child called `name`; StopIteration when there is none."""
        return next(child for child in self.children if child.name == name)

    def exited(self) -> list[Child]:
        """The children that have exited (none should while the stack runs)."""
        return [child for child in self.children if child.process.poll() is not None]

    def check_alive(self) -> None:
        """Raise StackError naming the first child that exited, with the end of its log."""
        for child in self.exited():
            raise StackError(
                f"{child.name} exited with {child.process.returncode}; its log "
                f"({child.log_path}) ends:\n{child.log_tail()}"
            )

    def end(self, child: Child, *, kill: bool = False, timeout: float = 40.0) -> None:
        """SIGTERM (or SIGKILL with `kill`) one child, reap it and forget it."""
        if kill:
            child.process.kill()
        else:
            child.process.send_signal(signal.SIGTERM)
        reap(child, timeout)
        self.children.remove(child)

    def stop(self, groups: list[list[Child]], timeout: float = 40.0) -> None:
        """SIGTERM the children group by group (each group reaped before the next is signalled)
        and forget them all; one outstaying `timeout` seconds is SIGKILLed."""
        for group in groups:
            for child in group:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            for child in group:
                reap(child, timeout)
        self.children.clear()

    def wait_any(self) -> Child:
        """Block until a child exits (it should not): returns it, for the caller to report."""
        while True:
            for child in self.children:
                if child.process.poll() is not None:
                    return child
            time.sleep(0.5)

    def wait_http(self, name: str, url: str, deadline: float) -> None:
        """Until `url` answers 200; StackError when a child exits first or at `deadline`
        (`time.monotonic()` seconds), with the last answer (a readiness probe's 503 says why)."""
        answer = "no answer"
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:  # 503 and why, from a readiness probe
                # Its body can time out too on a loaded machine: that is "not ready yet" as well.
                with contextlib.suppress(OSError):
                    answer = error.read().decode(errors="replace")
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{name} was not ready in time ({url}): {answer}")
            time.sleep(0.1)


def reap(child: Child, timeout: float) -> None:
    """Wait for a signalled child; SIGKILL it when it outstays `timeout` seconds."""
    try:
        child.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
