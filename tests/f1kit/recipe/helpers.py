"""Recipe dicts for the recipe tests: a 3-stage toy on F1Config.tiny(), and its No-Gen twin."""

import copy
from typing import Any

import pytest

from f1kit.model import F1Config
from f1kit.recipe import RecipeError, recipe_from_dict

TINY = F1Config.tiny().model_dump(mode="json")
TINY_NO_GEN = F1Config.tiny(generation=False).model_dump(mode="json")


def train_stage(**fields: Any) -> dict:
    """A post-training stage (G and A, gen:act = 0.1:1); ``fields`` replace keys. The tiny
    model has no pretrained Understanding expert, so the frozen random U is allowed."""
    stage = {
        "kind": "train",
        "name": "post",
        "train": ["generation", "action"],
        "allow_random_understanding": True,
        "losses": {"generation": 0.1, "action": 1.0},
        "steps": 20,
        "batch_size": 8,
        "lr": {"generation": 1e-3, "action": 1e-3},
    }
    return {**stage, **fields}


def toy(generation: bool = True, **top: Any) -> dict:
    """tokenizer -> train -> evaluate on the tiny F1 (No-Gen: train (U, A) -> evaluate)."""
    if generation:
        stages = [
            {"kind": "tokenizer", "name": "tok", "steps": 10, "batch_size": 8},
            train_stage(),
            {"kind": "evaluate", "name": "eval", "episodes": 2},
        ]
    else:
        stages = [
            train_stage(
                train=["understanding", "action"],
                losses={"action": 1.0},
                lr={"understanding": 1e-4, "action": 1e-3},
            ),
            {"kind": "evaluate", "name": "eval", "episodes": 2},
        ]
    recipe = {
        "name": "toy",
        "model": copy.deepcopy(TINY if generation else TINY_NO_GEN),
        "stages": stages,
    }
    return {**recipe, **top}


def problems(data: dict) -> dict[str, str]:
    """The RecipeError's problems of ``data`` as {key path: message(s)}; fails if it is valid."""
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, "toy.yaml")
    found: dict[str, str] = {}
    for path, message in info.value.problems:
        found[path] = f"{found[path]} | {message}" if path in found else message
    return found
