"""Loading recipes: files, YAML problems, --set overrides, and the resolved YAML round trip."""

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from f1kit.recipe import (
    Recipe,
    RecipeError,
    apply_overrides,
    load_recipe,
    parse_yaml,
    recipe_from_dict,
    resolved_yaml,
)
from f1kit.recipe.evaluation_config import StageEvaluation
from f1kit.recipe.schema import DataConfig, EvalStage, TokenizerStage, TrainStage
from f1kit.sim import MT50
from tests.f1kit.recipe.helpers import problems, toy

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, data: dict | str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(call, *args) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        call(*args)
    return info.value


# ---- files ----------------------------------------------------------------------------------


def test_a_file_loads_into_the_same_recipe_as_its_dict(tmp_path):
    assert load_recipe(write(tmp_path, toy())) == recipe_from_dict(toy())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: a\nstages: [\n", ["not valid YAML", "line"]),
        ("name: a\nseed: 1\nseed: 2\n", ["duplicate key 'seed' (lines 2 and 3)"]),
        ("- name: a\n", ["expected a YAML mapping", "got list"]),
        ("", ["an empty document"]),
        ("just text", ["expected a YAML mapping", "got str 'just text'"]),
    ],
)
def test_bad_documents_are_recipe_errors_naming_the_file(tmp_path, text, words):
    path = write(tmp_path, text)
    message = str(error_of(load_recipe, path))
    assert message.startswith(f"{path}: ")
    for word in words:
        assert word in message


def test_a_missing_file_or_a_folder_is_a_recipe_error(tmp_path):
    assert str(error_of(load_recipe, tmp_path / "nope.yaml")).endswith("no such recipe file")
    assert "got a directory" in str(error_of(load_recipe, tmp_path))


def test_problem_lines_read_file_path_message(tmp_path):
    data = toy()
    data["stages"][1]["stpes"] = 3
    path = write(tmp_path, data)
    lines = str(error_of(load_recipe, path)).splitlines()
    assert lines == [
        f"{path}: stages.1.stpes: unknown key (did you mean 'steps'?); allowed keys here: "
        + ", ".join(TrainStage.model_fields)
    ]


# ---- overrides ------------------------------------------------------------------------------


def test_overrides_parse_values_as_yaml(tmp_path):
    path = write(tmp_path, toy())
    recipe = load_recipe(
        path,
        [
            "seed=5",
            "stages.1.lr.action=1e-3",  # YAML 1.1 reads 1e-3 as a string; the schema parses it
            "stages.1.lr.generation=0.5",
            "data.tasks=[push-v3, reach-v3]",
            "data.cameras=[corner, topview]",
            "stages.1.grad_clip=null",
            "stages.1.scales=",  # empty = null
            "model.generation.history_in_prefix=false",
            "description=two words = fine",  # only the first '=' splits
            "stages.2.decode_foresight=true",
        ],
    )
    assert recipe.seed == 5
    assert recipe.stages[1].lr == {"generation": 0.5, "action": 1e-3}
    assert recipe.data.tasks == ["push-v3", "reach-v3"]
    assert recipe.data.cameras == ["corner", "topview"]
    assert recipe.stages[1].grad_clip is None and recipe.stages[1].scales is None
    assert recipe.model.generation.history_in_prefix is False
    assert recipe.description == "two words = fine"
    assert recipe.stages[2].decode_foresight is True


def test_override_list_entries_by_index_or_by_stage_name():
    base = toy(data={"history": [-9, -6, -3, 0]})
    by_index = apply_overrides(base, ["stages.1.steps=7", "data.history.0=-12"])
    by_name = apply_overrides(base, ["stages.post.steps=7", "data.history=[-12, -6, -3, 0]"])
    assert recipe_from_dict(by_index) == recipe_from_dict(by_name)
    assert recipe_from_dict(by_index).stages[1].steps == 7
    assert base["stages"][1]["steps"] == 20  # the input is not modified
    # a list the file leaves to its default cannot be indexed: the key makes a mapping
    found = problems(apply_overrides(toy(), ["data.history.0=-12"]))
    assert found == {"data.history": "expected a valid list, got a mapping"}


def test_overrides_apply_in_order_and_create_missing_sections():
    data = toy()
    assert "data" not in data
    out = apply_overrides(data, ["data.seed=3", "data.seed=4", "stages.2.tasks=MT10"])
    assert out["data"] == {"seed": 4}
    recipe = recipe_from_dict(out)
    assert recipe.data.seed == 4 and recipe.stages[2].tasks == "MT10"


def test_an_override_of_an_unknown_key_is_a_schema_error_naming_the_path():
    found = problems(apply_overrides(toy(), ["stages.1.optimizer.beta=[0.9, 0.9]"]))
    assert list(found) == ["stages.1.optimizer.beta"]
    assert "did you mean 'betas'" in found["stages.1.optimizer.beta"]
    found = problems(apply_overrides(toy(), ["model.generation.tokenizer.overrides.zz=1"]))
    assert "unknown VQVAEConfig fields ['zz']" in found["model.generation.tokenizer.overrides"]


@pytest.mark.parametrize(
    ("override", "where", "words"),
    [
        ("seed", "--set 'seed'", ["expected KEY.PATH=VALUE"]),
        ("stages..steps=1", "--set 'stages..steps=1'", ["expected KEY.PATH=VALUE"]),
        ("=3", "--set '=3'", ["expected KEY.PATH=VALUE"]),
        ("stages.9.steps=1", "stages.9.steps", ["stages has 3 entries (indices 0..2)"]),
        ("stages.final.steps=1", "stages.final.steps", ["['tok', 'post', 'eval']", "'final'"]),
        ("name.first=a", "name.first", ["name is 'toy', not a mapping or list"]),
        ("stages.1.steps=[1", "stages.1.steps", ["not valid YAML"]),
    ],
)
def test_malformed_overrides_are_recipe_errors_naming_them(override, where, words):
    err = error_of(apply_overrides, toy(), [override], "r.yaml")
    assert len(err.problems) == 1 and err.problems[0][0] == where, err.problems
    for word in words:
        assert word in err.problems[0][1]
    assert str(err).startswith(f"r.yaml: {where}: ")


@given(
    steps=st.integers(1, 10**6),
    lr=st.floats(1e-8, 1.0),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 2),
)
def test_a_scalar_override_lands_at_its_path(steps, lr, seed, index):
    key = ["tok", "post", "eval"][index]
    field = "episodes" if key == "eval" else "steps"
    recipe = recipe_from_dict(
        apply_overrides(
            toy(),
            [
                f"stages.{index}.{field}={steps}",
                f"stages.post.lr.action={lr!r}",
                f"seed={seed}",
            ],
        )
    )
    assert getattr(recipe.stages[index], field) == steps
    assert recipe.stages[1].lr["action"] == lr and recipe.seed == seed


# ---- resolved YAML --------------------------------------------------------------------------


@st.composite
def recipes(draw) -> dict:
    """Valid recipe dicts over the axes that change the resolved document's shape."""
    generation = draw(st.booleans())
    data = toy(generation)
    history = draw(st.lists(st.integers(-20, -1), min_size=0, max_size=5, unique=True))
    offsets = [*sorted(history), 0]
    data["data"] = {
        "tasks": draw(st.one_of(st.just("MT10"), st.lists(st.sampled_from(MT50), min_size=1,
                                                          max_size=3, unique=True))),
        "history": offsets,
        "seed": draw(st.integers(0, 9_999)),
        "cameras": draw(st.sampled_from([["corner"], ["corner", "topview"]])),
        "normalization": draw(st.sampled_from(["mean_std", "min_max", "quantile"])),
    }  # fmt: skip
    if generation:
        data["model"]["generation"]["history"] = len(offsets)
        # an acting stage trains on the inference scale count (null = that count)
        data["stages"][1]["scales"] = draw(st.sampled_from([None, 4]))
    stage = data["stages"][-2]
    stage["lr"] = {e: draw(st.floats(1e-7, 1e-1)) for e in stage["train"]}
    stage["optimizer"] = {"betas": [draw(st.floats(0, 0.99)), draw(st.floats(0, 0.999))]}
    stage["precision"] = draw(st.sampled_from(["fp32", "bf16"]))
    data["seed"] = draw(st.integers(0, 2**40))
    data["description"] = draw(st.text(max_size=30))
    return data


@given(recipes())
def test_show_round_trips(data):
    recipe = recipe_from_dict(data)
    text = resolved_yaml(recipe)
    again = recipe_from_dict(parse_yaml(text))
    assert again == recipe
    assert resolved_yaml(again) == text  # stable: a fixed point


def test_resolved_yaml_lists_every_key_in_schema_order():
    doc = yaml.safe_load(resolved_yaml(recipe_from_dict(toy())))
    assert list(doc) == list(Recipe.model_fields)
    assert list(doc["data"]) == list(DataConfig.model_fields)
    assert [list(s) for s in doc["stages"]] == [
        list(TokenizerStage.model_fields),
        list(TrainStage.model_fields),
        list(EvalStage.model_fields),
    ]
    assert doc["stages"][1]["optimizer"] == {"betas": [0.9, 0.95], "weight_decay": 0.0}


def test_resolved_yaml_writes_short_lists_inline():
    text = resolved_yaml(recipe_from_dict(toy()))
    assert "  history: [-9, -6, -3, 0]\n" in text
    assert "  train: [generation, action]\n" in text


# ---- the documentation and the shipped recipes ------------------------------------------------


def _doc() -> str:
    return (ROOT / "docs" / "recipes.md").read_text()


def test_the_documented_example_is_a_valid_recipe():
    blocks = re.findall(r"```yaml\n(.*?)```", _doc(), re.S)
    assert blocks, "docs/recipes.md has no yaml example"
    recipe = recipe_from_dict(parse_yaml(blocks[0]), "docs/recipes.md")
    assert [s.kind for s in recipe.stages] == ["tokenizer", "train", "evaluate"]


DOC_SECTIONS = {
    Recipe: "### Top level",
    DataConfig: "### data",
    TokenizerStage: "### Stage `kind: tokenizer`",
    TrainStage: "### Stage `kind: train`",
    StageEvaluation: "### A train stage's `evaluate`",
    EvalStage: "### Stage `kind: evaluate`",
}


@pytest.mark.parametrize("section", list(DOC_SECTIONS), ids=lambda s: s.__name__)
def test_the_reference_table_of_each_section_lists_exactly_its_keys(section):
    text = _doc().split(DOC_SECTIONS[section] + "\n", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", text, re.M)
    assert rows == list(section.model_fields), f"docs/recipes.md {DOC_SECTIONS[section]}"


SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name and recipe.description, f"{path.name}: give it a name and a description"
