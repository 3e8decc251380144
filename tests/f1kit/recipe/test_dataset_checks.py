"""`recipe validate` and `recipe run` hold local LeRobot datasets against the recipe from their
metadata, naming the key path and the dataset, and a run that fails them writes nothing."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from f1kit.cli import app
from f1kit.recipe import RecipeError, dataset_problems, recipe_from_dict
from f1kit.recipe.run import run_recipe
from tests.f1kit.recipe.lerobot_conventions import SIZE, TASKS, lerobot_dataset
from tests.f1kit.recipe.test_lerobot_recipe import lerobot_recipe


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lerobot_dataset(tmp_path_factory.mktemp("data") / "so100", episodes=2, length=12)


def _copy(dataset: Path, tmp_path: Path, **info: object) -> Path:
    """A copy of ``dataset`` whose info.json has ``info``'s top-level keys replaced."""
    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    path = root / "meta/info.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **info}))
    return root


def _problems(recipe: dict) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, message in dataset_problems(recipe_from_dict(recipe, "r.yaml")):
        found[key] = f"{found[key]} | {message}" if key in found else message
    return found


def test_a_recipe_that_fits_its_dataset_has_no_problems(dataset: Path) -> None:
    assert _problems(lerobot_recipe(dataset)) == {}


def test_cameras_sizes_and_widths_are_held_to_the_model(dataset: Path, tmp_path: Path) -> None:
    recipe = lerobot_recipe(dataset)
    recipe["data"]["cameras"] = ["top", "side"]
    recipe["data"]["image_size"] = 64
    recipe["model"]["action"].update(state_dim=4, action_dim=4)
    found = _problems(recipe)
    assert set(found) == {
        "data.cameras",
        "data.image_size",
        "model.action.state_dim",
        "model.action.action_dim",
    }
    assert "no camera 'side'" in found["data.cameras"] and "'top'" in found["data.cameras"]
    assert f"frames are {SIZE} x {SIZE}" in found["data.image_size"]
    assert "(6 dims)" in found["model.action.state_dim"]
    assert "(7 dims)" in found["model.action.action_dim"]
    for message in found.values():
        assert str(dataset) in message


def test_frames_that_are_not_square_are_named(dataset: Path, tmp_path: Path) -> None:
    info = json.loads((dataset / "meta/info.json").read_text())
    info["features"]["observation.images.top"]["shape"] = [48, 64, 3]
    root = _copy(dataset, tmp_path, features=info["features"])
    found = _problems(lerobot_recipe(root))
    assert list(found) == ["data.image_size"]
    assert "observation.images.top frames are 48 x 64" in found["data.image_size"]


def test_missing_and_malformed_datasets_name_the_path_and_file(
    dataset: Path, tmp_path: Path
) -> None:
    bad = _copy(dataset, tmp_path, fps="fast")
    recipe = lerobot_recipe(dataset)
    recipe["data"]["paths"] = [str(tmp_path / "nowhere"), str(bad), str(dataset)]
    found = _problems(recipe)
    assert set(found) == {"data.paths.0", "data.paths.1"}
    assert "nowhere" in found["data.paths.0"]
    assert "meta/info.json" in found["data.paths.1"] and "'fps'" in found["data.paths.1"]


def test_datasets_of_different_frame_rates_and_absent_stage_tasks(
    dataset: Path, tmp_path: Path
) -> None:
    other = _copy(dataset, tmp_path, fps=30)
    recipe = lerobot_recipe(dataset)
    recipe["data"]["paths"] = [str(dataset), str(other)]
    recipe["stages"][1]["tasks"] = [TASKS[0], "fold the towel"]
    found = _problems(recipe)
    assert set(found) == {"data.paths", "stages.1.tasks"}
    assert "frame rates differ" in found["data.paths"]
    assert "['fold the towel']" in found["stages.1.tasks"]


def test_cli_validate_and_run_refuse_before_writing(dataset: Path, tmp_path: Path) -> None:
    recipe = lerobot_recipe(dataset)
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    result = runner.invoke(app, ["recipe", "validate", str(file)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["recipe", "validate", str(file), "--set", "data.image_size=48"])
    assert result.exit_code == 2
    assert f"r.yaml: data.image_size: {dataset}" in result.output
    out = tmp_path / "run"
    args = ["recipe", "run", str(file), "--set", "data.cameras=[side]", "--output", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "no camera 'side'" in result.output
    assert not out.exists()
    with pytest.raises(RecipeError, match=r"data\.cameras"):  # the Python API refuses as well
        run_recipe(recipe_from_dict({**recipe, "data": {**recipe["data"], "cameras": ["side"]}}),
                   out)  # fmt: skip
    assert not out.exists()
