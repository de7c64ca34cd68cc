"""The repository's own modules a file imports, followed through the code (ast), for the checks
that an image ships (its .dockerignore) and declares (its requirements.txt) what it runs."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from tests.support.paths import ROOT


def imported(path: Path) -> set[str]:
    """Dotted names `path` imports (function-level imports included: a model image imports its
    model lazily), relative imports resolved against its package."""
    package = list(path.relative_to(ROOT).parts[:-1])  # a module's package, or an __init__'s own
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            names.add(".".join(module))
            names.update(".".join([*module, alias.name]) for alias in node.names)
    return names


def first_party_closure(starts: Iterable[Path], packages: tuple[str, ...]) -> set[Path]:
    """`starts` and every file of the top-level `packages` they import, directly or not, with
    their packages' __init__ files."""
    todo = list(starts)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported(path):
            parts = name.split(".")
            if parts[0] not in packages:
                continue
            for depth in range(1, len(parts) + 1):
                base = ROOT.joinpath(*parts[:depth])
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        todo.append(candidate)
    return seen
