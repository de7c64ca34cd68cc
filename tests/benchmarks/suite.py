"""The bench suite: every benchmark, one after another, each in a process of its own, with its
output written verbatim to docs/benchmarks.md (the README links to it). Every figure there is a
ratio or a percentile measured in that one run; nothing here passes or fails.

    .venv/bin/python -m tests.benchmarks.suite [--only e2e-60s,ingest] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# name, arguments after `python -m`, what it answers
BENCHMARKS: list[tuple[str, list[str], str]] = [
    ("e2e-60s", ["tests.benchmarks.e2e_bench", "--seconds", "60", "--jobs", "2"],
     "pipeline overhead: end to end through the stack / bare whisperx, a 60 s input"),
    ("e2e-10min", ["tests.benchmarks.e2e_bench", "--seconds", "600", "--jobs", "1"],
     "pipeline overhead: end to end through the stack / bare whisperx, a 10 min input"),
    ("whisperx", ["tests.benchmarks.whisperx_bench"],
     "the whisperx function vs bare whisperx; cold start (import + load); peak RSS"),
    ("belle2", ["tests.benchmarks.belle2_bench"],
     "the belle2 adapter vs the transformers pipeline; import + load; peak RSS"),
    ("optimize", ["tests.benchmarks.optimize_bench"], "optimizer segments/s and rule compliance"),
    ("ingest", ["tests.benchmarks.ingest_bench"], "ingest jobs/s accepted and routed; per-hop latency"),
    ("listing", ["tests.benchmarks.listing_bench"],
     "GET /v1/jobs?limit=20 at 100,000 jobs (any state, any offset; target p99 <= 50 ms); ingest's "
     "memory with them; a restarted ingest's index build"),
    ("cluster", ["tests.benchmarks.cluster_bench"],
     "jobs through three R3 nats-servers across a node kill and restart (target: 0 lost, 0 duplicate "
     "completions); how long the pipeline stalled"),
    ("drop", ["tests.benchmarks.drop_bench"],
     "a file dropped into the embedded stack's uploads bucket to its job's start, announced by the "
     "stand-in for MinIO's notifier with the reconcile off (target under 3 s)"),
    ("first-words", ["tests.benchmarks.first_words_bench"],
     "the first job after readiness vs a later one of the same file (target <= 1.1x); a 10-minute "
     "file's first segment after the worker starts it (target <= 3 s); with and without the warm-up "
     "and the short first window"),
    ("replicas", ["tests.benchmarks.replicas_bench"],
     "one vs two model replicas on one queue; warm per-job overhead"),
    ("intake", ["tests.benchmarks.intake_bench"],
     "media intake (probe, allow-lists, channel mix, timeline) vs the plain ffmpeg decode it replaced"),
    ("quality", ["tests.benchmarks.quality_bench", "--markdown"],
     "WER/CER per clip of ../shared/audio: the pipeline through the stack (no language named) vs bare "
     "faster-whisper and bare whisperx; the model chosen and the language detected"),
    ("routing", ["tests.benchmarks.routing_bench"],
     "what routing by the spoken language adds to a job (seconds); memory of the default stack"),
    ("diarization", ["tests.benchmarks.diarization_bench"],
     "DER (collar 0.25 s; target <= 0.15), speakers found vs true and RTF of the diarization stage on "
     "2-4 speaker mixes of ../shared/audio (English and Mandarin, overlaps, short turns)"),
]  # fmt: skip


def machine() -> str:
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 2**20:.0f} GiB"
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}, no GPU"


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma separated names: " + ", ".join(n for n, _, _ in BENCHMARKS))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {name for name, _, _ in BENCHMARKS}
    env = dict(os.environ)  # a benchmark that loads a model turns the hubs off itself (transcriber.hub)
    sections: dict[str, str] = {}
    if args.only and args.output.exists():  # a partial run keeps the other benchmarks' sections
        kept = args.output.read_text().split("\n## ")[1:]
        sections = {part.split("\n", 1)[0]: "## " + part.rstrip() + "\n" for part in kept}
    for name, command, question in BENCHMARKS:
        if name not in wanted:
            continue
        print(f"== {name}: {question}", flush=True)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True
        )
        took = time.perf_counter() - started
        output = result.stdout.strip() or "(no output)"
        if result.returncode != 0:
            output += f"\n(exited {result.returncode})\n" + result.stderr.strip()[-2000:]
        print(output, flush=True)
        shown = " ".join(command[1:])
        when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}"
        sections[name] = (
            f"## {name}\n\n{question}.\n\n`.venv/bin/python -m {command[0]}{' ' + shown if shown else ''}`"
            f" ({took:.0f} s; {when})\n\n```\n{output}\n```\n"
        )
    header = (
        "# Benchmarks\n\n"
        f"Measured on {machine()}, by `.venv/bin/python -m tests.benchmarks.suite`\n"
        "(each benchmark in a process of its own, one after another; each section says when). Every\n"
        "figure is a ratio or a percentile from one run: the machine is shared and noisy, so compare\n"
        "figures within a section, not across sections.\n\n"
    )
    order = [name for name, _, _ in BENCHMARKS]
    ordered = sorted(
        sections.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)
    )
    args.output.write_text(header + "\n".join(text for _, text in ordered))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
