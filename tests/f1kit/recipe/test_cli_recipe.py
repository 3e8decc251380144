"""`f1kit recipe validate | show | run | list`: exit codes, output, and nothing written on error."""

import sys
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from f1kit.cli import INVALID_RECIPE, app
from f1kit.recipe import load_recipe, parse_yaml, recipe_from_dict
from tests.f1kit.recipe.helpers import toy

runner = CliRunner()


def write(folder: Path, data: dict, name: str = "toy.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Stands in for f1kit.recipe.run (the runner's own tests run real stages); records calls."""
    calls: list[dict] = []

    def run_recipe(recipe, output_dir=None, *, resume=False, allow_changes=False):
        calls.append({"recipe": recipe, "output_dir": output_dir, "resume": resume})
        return Path(output_dir)

    module = types.ModuleType("f1kit.recipe.run")
    module.run_recipe = run_recipe
    monkeypatch.setitem(sys.modules, "f1kit.recipe.run", module)
    return calls


def test_validate_accepts_a_valid_recipe(tmp_path):
    result = runner.invoke(app, ["recipe", "validate", str(write(tmp_path, toy()))])
    assert result.exit_code == 0, result.output
    assert result.output == "ok: toy, 3 stages\n"


def test_validate_lists_every_problem_and_exits_2(tmp_path):
    data = toy(data={"chunk": 8})
    data["stages"][1]["stpes"] = 1
    data["seed"] = -1
    path = write(tmp_path, data)
    result = runner.invoke(app, ["recipe", "validate", str(path)])
    assert result.exit_code == INVALID_RECIPE == 2
    assert f"{path}: seed: " in result.output
    assert f"{path}: stages.1.stpes: unknown key" in result.output
    # the field errors stop validation before the cross-section rules (data.chunk) run
    assert "data.chunk" not in result.output


def test_validate_applies_overrides(tmp_path):
    path = str(write(tmp_path, toy()))
    bad = runner.invoke(app, ["recipe", "validate", path, "--set", "data.chunk=8"])
    assert bad.exit_code == 2 and "data.chunk: 8 differs from model.action.chunk 4" in bad.output
    fixed = runner.invoke(
        app,
        ["recipe", "validate", path, "--set", "data.chunk=8", "--set", "model.action.chunk=8",
         "--set", "model.action.execute=8"],
    )  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    malformed = runner.invoke(app, ["recipe", "validate", path, "--set", "seed"])
    assert malformed.exit_code == 2 and "expected KEY.PATH=VALUE" in malformed.output


def test_validate_of_a_missing_file_exits_2(tmp_path):
    result = runner.invoke(app, ["recipe", "validate", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "no such recipe file" in result.output


def test_show_prints_the_resolved_recipe_that_loads_back(tmp_path):
    path = write(tmp_path, toy())
    result = runner.invoke(app, ["recipe", "show", str(path), "--set", "stages.post.steps=3"])
    assert result.exit_code == 0, result.output
    shown = recipe_from_dict(parse_yaml(result.output))
    assert shown == load_recipe(path, ["stages.post.steps=3"])
    assert shown.stages[1].steps == 3
    assert "weighting: task" in result.output  # defaults are spelled out


def test_run_of_an_invalid_recipe_exits_2_and_writes_nothing(tmp_path, fake_runner):
    out = tmp_path / "run"
    path = write(tmp_path, toy(stages=[{"kind": "evaluate", "name": "e"}]))
    result = runner.invoke(app, ["recipe", "run", str(path), "--output", str(out)])
    assert result.exit_code == 2
    assert "no train stage comes before this evaluate stage" in result.output
    assert not out.exists() and fake_runner == []
    result = runner.invoke(
        app, ["recipe", "run", str(write(tmp_path, toy())), "--output", str(out), "--set", "x=1"]
    )
    assert result.exit_code == 2 and not out.exists() and fake_runner == []


def test_run_hands_the_validated_recipe_to_the_runner(tmp_path, fake_runner):
    path = write(tmp_path, toy())
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["recipe", "run", str(path), "--output", str(out), "--set", "seed=4", "--resume"]
    )
    assert result.exit_code == 0, result.output
    assert fake_runner == [
        {"recipe": load_recipe(path, ["seed=4"]), "output_dir": out, "resume": True}
    ]
    assert result.output.endswith(f"done: {out}\n")


def test_run_defaults_to_the_recipes_output_directory(tmp_path, fake_runner):
    path = write(tmp_path, toy(output=str(tmp_path / "runs" / "{name}")))
    result = runner.invoke(app, ["recipe", "run", str(path)])
    assert result.exit_code == 0, result.output
    assert fake_runner[0]["output_dir"] == tmp_path / "runs" / "toy"
    assert fake_runner[0]["resume"] is False


def test_list_shows_name_stages_and_description_and_flags_invalid_files(tmp_path):
    write(tmp_path, toy(description="A toy.\nSecond line."), "a.yaml")
    write(tmp_path, toy(name="nogen", generation=False), "b.yaml")
    write(tmp_path, toy(seed=-1), "c.yaml")
    (tmp_path / "notes.txt").write_text("not a recipe")
    result = runner.invoke(app, ["recipe", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "a.yaml: toy (3 stages) A toy.",
        "b.yaml: nogen (2 stages)",
        "c.yaml: INVALID (seed: expected a value greater than or equal to 0, got -1)",
    ]
    empty = runner.invoke(app, ["recipe", "list", "--dir", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no recipes" in empty.output


def test_the_other_commands_still_work():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip()
    assert runner.invoke(app, ["recipe", "--help"]).exit_code == 0


def test_list_reads_the_recipes_folder_of_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    write(tmp_path / "recipes", toy(description="Shipped."), "f1.yaml")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["recipe", "list"])
    assert result.exit_code == 0 and result.output == "f1.yaml: toy (3 stages) Shipped.\n"
