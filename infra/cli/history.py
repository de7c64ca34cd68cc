"""The local record of the files submitted from this machine (`$XDG_CACHE_HOME/klipnote/
submitted.jsonl`): `klipnote results` writes a job's results next to the file it came from, and
`klipnote watch` without a job follows the last one submitted."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_HISTORY_LIMIT = 1000  # entries kept in the local record of submitted files


def history_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "klipnote" / "submitted.jsonl"


def remember(job_id: str, source: Path, api: str) -> None:
    """Note where a submitted local file is, so its results can be written next to it."""
    path = history_path()
    entry = {
        "id": job_id,
        "path": str(source.resolve()),
        "api": api,
        "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # a read-only home only costs the convenience
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as record:
            record.write(json.dumps(entry) + "\n")
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > _HISTORY_LIMIT:
            trimmed = path.with_name(f"{path.name}.{os.getpid()}")
            trimmed.write_text("\n".join(lines[-_HISTORY_LIMIT:]) + "\n", encoding="utf-8")
            trimmed.replace(path)


def _history() -> list[dict[str, Any]]:
    """The jobs submitted from this machine, oldest first (unreadable lines skipped)."""
    try:
        lines = history_path().read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("id"):
            entries.append(entry)
    return entries


def recall(job_id: str) -> Path | None:
    """The local file a job was submitted from on this machine, if known."""
    for entry in reversed(_history()):
        if entry["id"] == job_id and entry.get("path"):
            return Path(entry["path"])
    return None


def last_submitted() -> str | None:
    """The id of the job last submitted from this machine."""
    history = _history()
    return str(history[-1]["id"]) if history else None
