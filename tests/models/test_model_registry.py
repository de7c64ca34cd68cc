"""The model registry (events/registry.py MODELS) and the model folders agree: every registered
model is a folder with its adapter, image and README whose function is named as registered, and
every folder holding a model function is registered. Adding a model is its folder plus one entry."""

from __future__ import annotations

import pytest

from events.registry import MODELS
from events.runtime.serve import load_function
from events.settings import Settings
from functions.transcriber import TranscriptionFunction
from tests.support.paths import ROOT

FUNCTIONS = ROOT / "functions"
FOLDER = ("function.py", "model.py", "Dockerfile", "Dockerfile.dockerignore", "requirements.txt", "README.md")


@pytest.mark.parametrize("model", MODELS)
def test_every_registered_model_is_a_folder_with_its_image(model: str) -> None:
    missing = [name for name in FOLDER if not (FUNCTIONS / model / name).is_file()]
    assert not missing, f"functions/{model}/ lacks {missing}"


@pytest.mark.parametrize("model", MODELS)
def test_every_registered_model_is_served_under_its_name(model: str) -> None:
    """`klipnote serve <model>` builds the skeleton around the adapter of that name (nothing loads)."""
    function = load_function(model, Settings())
    assert isinstance(function, TranscriptionFunction)
    assert function.name == function.adapter.name == model


def test_every_model_function_is_registered() -> None:
    folders = {path.parent.name for path in FUNCTIONS.glob("*/model.py")}
    assert folders == set(MODELS), "register each model in events/routing.py MODELS"
