"""A train stage's data and length: a task subset of the recipe's data, steps or epochs."""

import numpy as np
import pytest

from f1kit.data import RobotDataset, WindowConfig, WindowedDataset
from f1kit.recipe import recipe_from_dict
from f1kit.recipe.stages import stage_data
from tests.f1kit.recipe.helpers import problems, toy, train_stage


def _with_stage(**fields: object) -> dict:
    recipe = toy()
    recipe["stages"][1] = train_stage(**fields)
    recipe["data"] = {"tasks": ["reach-v3", "push-v3"]}
    return recipe


def test_steps_or_epochs_exactly_one() -> None:
    found = problems(_with_stage(steps=None))
    assert "exactly one of steps" in found["stages.1.steps"]
    found = problems(_with_stage(steps=10, epochs=2))
    assert "steps=10, epochs=2" in found["stages.1.steps"]
    stage = recipe_from_dict(_with_stage(steps=None, epochs=2.5), "toy.yaml").stages[1]
    # 2.5 passes over 100 windows at batch 8: ceil(250 / 8) optimizer steps.
    assert stage.total_steps(100) == 32
    assert stage.settings(0, 1, samples=100).steps == 32
    with pytest.raises(ValueError, match="counts epochs"):
        stage.settings(0, 1)


def test_stage_tasks_must_be_among_the_data_tasks() -> None:
    found = problems(_with_stage(tasks=["reach-v3", "door-open-v3"]))
    assert "'door-open-v3' is not among data.tasks" in found["stages.1.tasks.1"]
    recipe = recipe_from_dict(_with_stage(tasks=["push-v3"]), "toy.yaml")
    assert recipe.stages[1].tasks == ["push-v3"]


def test_stage_data_keeps_exactly_the_windows_of_its_tasks(coded_dataset: RobotDataset) -> None:
    windows = WindowedDataset(
        coded_dataset, WindowConfig(chunk=2, image_keys=("observation.images.cam",))
    )
    none = np.zeros(len(windows), dtype=bool)
    everything = stage_data(windows, recipe_stage(None), none)
    assert len(everything) == len(windows)
    subset = stage_data(windows, recipe_stage(["task 1"]), none)
    expected = np.flatnonzero(windows.groups("task") == windows.tasks.index("task 1"))
    assert subset.indices == expected.tolist() and len(subset) > 0
    assert all(subset[i]["task"] == "task 1" for i in range(len(subset)))
    assert set(subset.task_groups.tolist()) == {windows.tasks.index("task 1")}
    with pytest.raises(ValueError, match="not all found"):
        stage_data(windows, recipe_stage(["task 7"]), none)


def recipe_stage(tasks: list[str] | None):
    recipe = toy()
    recipe["data"] = {"source": "lerobot", "paths": ["unused"]}
    recipe["stages"][1] = train_stage(tasks=tasks)
    recipe["stages"][2]["tasks"] = ["reach-v3"]
    return recipe_from_dict(recipe, "toy.yaml").stages[1]
