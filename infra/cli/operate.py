"""The commands images and operators run: `serve` (one function), `provision` (streams,
consumers, KV and buckets) and `schemas` (the JSON Schemas of event data)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from events.settings import Settings


def run(args: argparse.Namespace) -> int:
    """Run `serve`, `provision` or `schemas`; the exit code (2 for another command)."""
    if args.command == "serve":
        from events.runtime.serve import ReceiverUnguarded, UnknownFunction
        from events.runtime.serve import main as serve_main

        try:
            serve_main(args.name, args.transport)
        except (UnknownFunction, ReceiverUnguarded) as error:
            print(f"klipnote serve: {error.message}", file=sys.stderr)
            return 2
        return 0
    if args.command == "provision":
        return provision(Settings())
    if args.command == "schemas":
        return schemas(args.directory)
    return 2


def provision(settings: Settings) -> int:
    """`events.provision.run` for the settings' `ENABLED_MODELS` (the provisioning Job names every
    model image, so a disabled model keeps its queue)."""
    from events import provision as provisioning

    provisioning.run(settings)
    print("streams, consumers, KV and buckets provisioned")
    return 0


def schemas(directory: Path) -> int:
    """Write `<type>.schema.json` per event type of the catalogue into `directory`."""
    from events.catalogue import KINDS

    directory.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        path = directory / f"{kind.type}.schema.json"
        path.write_text(json.dumps(kind.data.model_json_schema(), indent=2) + "\n")
        print(path)
    return 0
