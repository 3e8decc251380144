"""``model.init_from`` / ``stages.N.init_from`` and the frozen-random-U rule."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from f1kit.model import F1, F1Config
from f1kit.model.importers import part_of, write_model_dir
from f1kit.recipe import load_recipe, recipe_from_dict
from f1kit.recipe.init_checks import init_problems
from tests.f1kit.recipe.helpers import problems, toy, train_stage

MICRO = Path(__file__).with_name("micro.yaml")


def _frozen_u(**fields) -> dict:
    """toy() whose post stage freezes U without saying a random U is intended."""
    recipe = toy()
    recipe["stages"][1] = train_stage(allow_random_understanding=False, **fields)
    return recipe


def test_a_stage_aligning_against_a_random_frozen_u_is_refused() -> None:
    found = problems(_frozen_u())
    assert "stages.1.train" in found
    assert "allow_random_understanding" in found["stages.1.train"]


def test_weights_for_u_or_an_earlier_stage_training_it_lift_the_refusal() -> None:
    with_init = _frozen_u()
    with_init["model"]["init_from"] = {"path": "weights/pi0", "random": ["generation"]}
    recipe_from_dict(with_init)
    recipe_from_dict(_frozen_u(init_from="weights/f1"))  # the stage's own start
    trained_first = _frozen_u()
    trained_first["stages"].insert(
        1,
        train_stage(
            name="all",
            train=["understanding", "generation", "action"],
            lr={"understanding": 1e-4, "generation": 1e-4, "action": 1e-4},
        ),
    )
    recipe_from_dict(trained_first)
    still_random = _frozen_u(init_from={"path": "weights/g", "random": ["understanding"]})
    assert "stages.1.train" in problems(still_random)


def _model_dir(tmp_path: Path, config: F1Config, parts: set[str]) -> Path:
    torch.manual_seed(7)
    state = {k: v for k, v in F1(config).state_dict().items() if part_of(k) in parts}
    return write_model_dir(tmp_path / "start", config, state.items())


def test_init_problems_are_found_before_any_work(tmp_path: Path) -> None:
    data = toy()
    config = F1Config.model_validate(data["model"])
    directory = _model_dir(tmp_path, config, {"understanding", "action"})
    data["model"]["init_from"] = str(directory)
    data["stages"][1]["init_from"] = str(tmp_path / "missing")
    found = dict(init_problems(recipe_from_dict(copy.deepcopy(data))))
    assert "random: ['generation', 'tokenizer']" in found["model.init_from"]
    assert "not found" in found["stages.1.init_from.path"]
    data["model"]["init_from"] = {"path": str(directory), "random": ["generation", "tokenizer"]}
    del data["stages"][1]["init_from"]
    assert init_problems(recipe_from_dict(data)) == []


@pytest.mark.sim
def test_a_run_starts_from_the_directory(tmp_path: Path) -> None:
    """A micro run from a model directory holding every part: one post-train step at a tiny lr
    leaves the policy's weights at the directory's (a run that ignored init_from would leave
    fresh random ones)."""
    recipe = load_recipe(MICRO)
    config = recipe.model.f1_config()
    directory = _model_dir(tmp_path, config, {"understanding", "generation", "action", "tokenizer"})
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "f1kit.cli", "recipe", "run", str(MICRO), "--output", str(out)]
    stages = (
        "stages=[{kind: train, name: post, train: [understanding, generation, action], "
        "losses: {action: 1.0, generation: 0.1}, steps: 1, batch_size: 4, "
        "lr: {understanding: 1.0e-12, generation: 1.0e-12, action: 1.0e-12}}]"
    )
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run(
        [*cmd, "--set", f"model.init_from={directory}", "--set", stages],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    start = load_file(directory / "model.safetensors")
    policy = load_file(out / "policy" / "model.safetensors")
    assert start.keys() == policy.keys()
    for key, value in start.items():
        assert torch.allclose(policy[key].float(), value.float(), atol=1e-6), key


def test_a_part_named_random_keeps_what_an_earlier_stage_trained() -> None:
    recipe = _frozen_u(init_from={"path": "weights/g", "random": ["understanding"]})
    recipe["stages"].insert(
        1,
        train_stage(
            name="all",
            train=["understanding", "generation", "action"],
            lr={"understanding": 1e-4, "generation": 1e-4, "action": 1e-4},
        ),
    )
    recipe_from_dict(recipe)


def test_shapes_are_checked_before_any_work_and_a_stage_may_hold_the_run_tokenizer(
    tmp_path: Path,
) -> None:
    data = toy()
    config = F1Config.model_validate(data["model"])
    whole = _model_dir(tmp_path, config, {"understanding", "generation", "action", "tokenizer"})
    # A stage may start from a whole policy-like directory although a tokenizer stage made the
    # run's tokenizer (the directory's must then equal it, checked on load).
    data["stages"][1]["init_from"] = str(whole)
    assert init_problems(recipe_from_dict(copy.deepcopy(data))) == []
    wider = F1Config.model_validate(
        {**data["model"], "action": {**data["model"]["action"], "action_dim": 7}}
    )
    (tmp_path / "wide").mkdir()
    other = _model_dir(tmp_path / "wide", wider, {"understanding", "action"})
    data["stages"][1]["init_from"] = {"path": str(other), "random": ["generation"]}
    found = dict(init_problems(recipe_from_dict(data)))
    assert (
        "action_head.action_in.weight: file (64, 7) vs model (64, 4)" in found["stages.1.init_from"]
    )


def test_a_stateless_pi05_head_is_refused_by_name_in_a_recipe() -> None:
    data = toy(generation=False)
    data["model"]["action"]["state_dim"] = None
    found = problems(data)
    assert "not trainable from a recipe yet" in found["model.action.state_dim"]
