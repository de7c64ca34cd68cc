"""The structure kept by tools, not by review: every third-party import declared (deptry), each
image's imports satisfied by its own requirements.txt (deptry per image), and the import
contracts of pyproject's [tool.importlinter] (import-linter): layers, independent functions, no
circles, TYPE_CHECKING imports included. `make lint` runs the same checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.support.imports import first_party_closure

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FUNCTIONS = ["ingest", "optimize", "whisperx", "belle2"]
FIRST_PARTY = ("events", "functions", "infra")

# Imports an image may leave unsatisfied, each for a reason.
IMAGE_EXCEPTIONS = {
    # events/settings.py's Settings.resolved_device imports it under `except ImportError` (no
    # CTranslate2: the CPU); only whisperx asks it for a device, and whisperx declares it.
    "ctranslate2": "an optional import in events/settings.py, guarded by ImportError",
}


def _run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_every_import_is_declared_and_every_declaration_used() -> None:
    """deptry with pyproject's [tool.deptry]: no missing (DEP001), unused (DEP002), transitive
    (DEP003) or dev-only (DEP004) dependency in events/, functions/ or infra/."""
    result = _run([str(BIN / "deptry"), "--no-ansi", *FIRST_PARTY])
    assert result.returncode == 0, result.stdout + result.stderr


def test_tests_import_only_declared_packages() -> None:
    """The tests' own imports are declared too (the dev extra, or the project's): a test helper
    importing a package some other package happens to pull in breaks on the next upgrade."""
    result = _run(
        [
            str(BIN / "deptry"),
            "--no-ansi",
            "tests",
            "--exclude",
            r"\.venv",
            *(f"--known-first-party={name}" for name in (*FIRST_PARTY, "tests")),
            # Unused is the project check's job; tests may import the dev extra.
            "--ignore",
            "DEP002,DEP004",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- each image against its own requirements ---------------------------------------------------


def image_modules(function: str) -> set[Path]:
    """The Python files an image runs: its own package and events/, and every file of events/ or
    functions/ they import, directly or not (the shared model code in functions/transcriber/)."""
    starts = [*(ROOT / "functions" / function).rglob("*.py"), *(ROOT / "events").rglob("*.py")]
    return first_party_closure([*starts, ROOT / "functions" / "__init__.py"], ("events", "functions"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_imports_are_satisfied_by_its_requirements(function: str, tmp_path: Path) -> None:
    """deptry on the files the image runs, against functions/<name>/requirements.txt alone: an
    import no pin provides is an image that fails on start (standardwebhooks in ingest, once).
    Unused pins are not checked here: every image pins the whole shared runtime."""
    for path in image_modules(function):
        target = tmp_path / "src" / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    # No [project] table: deptry reads the dependencies from the requirements file instead.
    exceptions = ", ".join(f'"{name}"' for name in IMAGE_EXCEPTIONS)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.deptry]\n"
        'known_first_party = ["events", "functions", "infra"]\n'
        "[tool.deptry.per_rule_ignores]\n"
        f"DEP001 = [{exceptions}]\n"
        f"DEP003 = [{exceptions}]\n"
    )
    result = _run(
        [
            str(BIN / "deptry"),
            "--no-ansi",
            "--config",
            str(tmp_path / "pyproject.toml"),
            "--requirements-files",
            str(ROOT / "functions" / function / "requirements.txt"),
            "--ignore",
            "DEP002",
            "src",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{function}'s image:\n{result.stdout}{result.stderr}"


# -- import contracts ----------------------------------------------------------------------------


def test_import_contracts_are_kept() -> None:
    """pyproject's [tool.importlinter] contracts: infra > functions > events, no function imports
    another, the shared model code only in the model functions, ingest's parts never import the
    function object, no import cycle between the children of any package."""
    result = _run([str(BIN / "lint-imports"), "--no-cache"])
    assert result.returncode == 0, result.stdout[result.stdout.find("Contracts") :] + result.stderr


def test_no_module_is_part_of_an_import_cycle() -> None:
    """Module by module, TYPE_CHECKING and function-level imports included: no import cycle
    (the acyclic_siblings contract sees packages; this names the modules of each cycle)."""
    graph = grimp.build_graph(*FIRST_PARTY, exclude_type_checking_imports=False, cache_dir=None)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(imported, module) if imported != module else None
            if chain:
                # One line per cycle, whichever module it was found from.
                ring = [module, *chain[:-1]]
                start = ring.index(min(ring))
                cycles.add(" -> ".join([*ring[start:], *ring[:start], min(ring)]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
