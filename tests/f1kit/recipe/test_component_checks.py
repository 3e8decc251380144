"""Component arguments (vision encoder, text tokenizer, ODE solver, time sampler, tokenizer
overrides) are held against their builder's parameters and types when a recipe is validated, each
problem naming the argument's full key path; the files a model reads must exist."""

import copy

import pytest
import yaml
from typer.testing import CliRunner

from f1kit.cli import INVALID_RECIPE, app
from f1kit.recipe import RecipeError, check_datasets, recipe_from_dict
from tests.f1kit.recipe.helpers import TINY, problems, toy, train_stage

EVALUATE = {"kind": "evaluate", "name": "eval", "episodes": 2}


def with_model(path: str, value: object, generation: bool = True) -> dict:
    """The toy recipe with the model key at dotted ``path`` set to ``value``."""
    data = toy(generation)
    node = data["model"]
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)
    return data


# (model key path, value, reported key path, words in its message)
CASES = {
    "a word for an int": (
        "text.args.max_length",
        "eight",
        "model.text.args.max_length",
        ["expected int, got 'eight'"],
    ),
    "a string of digits for an int": (
        "action.solver.args.steps",
        "3",
        "model.action.solver.args.steps",
        ["expected int, got '3'"],
    ),
    "a bool for an int": (
        "action.solver.args.steps",
        True,
        "model.action.solver.args.steps",
        ["expected int, got True"],
    ),
    "a fraction for an int": (
        "vision.args.depth",
        2.5,
        "model.vision.args.depth",
        ["expected int, got 2.5"],
    ),
    "a string for a float": (
        "action.time_sampler.args",
        {"alpha": "x"},
        "model.action.time_sampler.args.alpha",
        ["expected float, got 'x'"],
    ),
    "a value outside a Literal": (
        "action.solver.args.backend",
        "scipy",
        "model.action.solver.args.backend",
        ["expected one of 'native', 'torchdiffeq'", "'scipy'"],
    ),
    "an unknown solver argument": (
        "action.solver.args.stpes",
        3,
        "model.action.solver.args",
        ["unknown euler args ['stpes']", "steps"],
    ),
    "an unknown solver method": (
        "action.solver.name",
        "eulr",
        "model.action.solver.name",
        ["'eulr'", "euler", "midpoint"],
    ),
    "a solver's own value rule": (
        "action.solver.args.steps",
        0,
        "model.action.solver.args",
        ["ODESolver.steps: expected >= 1, got 0"],
    ),
    "an unregistered time sampler": (
        "action.time_sampler.name",
        "gauss",
        "model.action.time_sampler.name",
        ["'gauss' is not a registered time sampler", "'beta'"],
    ),
    "a tokenizer override of the wrong type": (
        "generation.tokenizer.overrides",
        {"vocab_size": "32"},
        "model.generation.tokenizer.overrides.vocab_size",
        ["expected int, got '32'"],
    ),
    "a list of the wrong items": (
        "generation.tokenizer.overrides",
        {"channel_mult": [1, "2"]},
        "model.generation.tokenizer.overrides.channel_mult.1",
        ["expected int, got '2'"],
    ),
    "a required hf argument left out": (
        "text",
        {"name": "hf", "args": {"max_length": 8}},
        "model.text.args",
        ["missing hf args ['path']"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_component_args_are_held_against_their_builders_types(case):
    key, value, where, words = CASES[case]
    found = problems(with_model(key, value))
    assert where in found, found
    for word in words:
        assert word in found[where], found[where]
    # the block config's own exception (which names only `model:`) is not shown beside it
    assert "model" not in found, found


def test_well_typed_args_pass():
    # each case above is one value away from a valid recipe (an int is a float to the check,
    # but beartype, which tests install, refuses it in make_time_sampler's **params: float)
    recipe_from_dict(with_model("action.time_sampler.args", {"alpha": 2.0, "beta": 1.5}))
    recipe_from_dict(with_model("action.solver.args", {"steps": 3, "backend": "torchdiffeq"}))
    recipe_from_dict(
        with_model("generation.tokenizer.overrides", {"channel_mult": [1, 2, 2, 2, 4]})
    )


def test_component_problems_come_with_every_other_problem():
    data = with_model("text.args.max_length", "eight")
    data["stages"][0]["batch_size"] = 0
    found = problems(data)
    assert {"model.text.args.max_length", "stages.0.batch_size"} <= set(found), found


def test_a_problem_elsewhere_in_the_model_is_kept():
    # a trunk error comes from the same F1Config check that builds the solver: both are shown
    data = with_model("action.solver.args.steps", "3")
    data["model"]["trunk"]["kv_heads"] = 3
    found = problems(data)
    assert "model.action.solver.args.steps" in found and "model" in found, found


# ---- files that must exist ------------------------------------------------------------------


def test_a_missing_tokenizer_path_is_named_when_local_files_are_checked(tmp_path):
    data = with_model("generation.tokenizer.path", str(tmp_path / "tok.safetensors"))
    data["stages"] = [train_stage(), EVALUATE]
    recipe = recipe_from_dict(data)  # the schema alone holds (show / list need no weights)
    with pytest.raises(RecipeError) as info:
        check_datasets(recipe, "r.yaml")
    found = dict(info.value.problems)
    assert "no such file or directory" in found["model.generation.tokenizer.path"], found
    (tmp_path / "tok.safetensors").write_bytes(b"")
    check_datasets(recipe, "r.yaml")  # there now


def test_validate_names_a_missing_hf_tokenizer_directory(tmp_path):
    data = with_model("text", {"name": "hf", "args": {"path": str(tmp_path / "gemma")}})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(app, ["recipe", "validate", str(path)])
    assert result.exit_code == INVALID_RECIPE, result.output
    assert f"{path}: model.text.args.path: " in result.output
    assert "no such file or directory" in result.output


def test_the_tiny_model_needs_no_file():
    assert TINY["generation"]["tokenizer"]["path"] is None
    check_datasets(recipe_from_dict(toy()), "r.yaml")
