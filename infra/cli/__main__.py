"""`python -m infra.cli`: the `klipnote` command (what the embedded stack spawns its functions with)."""

import sys

from infra.cli import main

sys.exit(main())
