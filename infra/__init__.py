"""Running KlipNote: the embedded stack, setup, the `klipnote` command, and (under infra/)
the production deployment files."""
