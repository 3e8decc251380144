"""A train stage's data and length: its datasets (a group of data.groups), a task subset within
them, how often each window is drawn (weighting), steps or epochs."""

import numpy as np
import pytest

from f1kit.data import (
    Episode,
    RobotDataset,
    WindowConfig,
    WindowedDataset,
    read_dataset,
    write_dataset,
)
from f1kit.recipe import recipe_from_dict
from f1kit.recipe.stages import StageDataError, sample_weights, stage_data
from f1kit.train import epoch_order
from tests.f1kit.conftest import coded_episodes
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


# ---- per-stage data: dataset groups and weighting ------------------------------------------


def _lerobot(groups: dict | None = None, **stage: object) -> dict:
    """The toy recipe on three LeRobot datasets (paths need not exist to validate)."""
    recipe = toy()
    recipe["data"] = {"source": "lerobot", "paths": ["d/mix-a", "d/mix-b", "d/target"]}
    if groups is not None:
        recipe["data"]["groups"] = groups
    recipe["stages"][1] = train_stage(**stage)
    recipe["stages"][2]["tasks"] = ["reach-v3"]
    return recipe


GROUPS = {"mixture": ["d/mix-a", "d/mix-b"], "target": ["d/target/"]}


def test_a_stage_names_a_group_of_data_groups() -> None:
    recipe = recipe_from_dict(_lerobot(GROUPS, data="target", weighting="pi0"), "toy.yaml")
    # Paths compare as paths: "d/target/" is data.paths' "d/target".
    assert recipe.data.group_datasets("target") == [2]
    assert recipe.data.group_datasets("mixture") == [0, 1]
    assert recipe.data.group_datasets(None) is None
    assert recipe.stages[1].data == "target" and recipe.stages[1].weighting == "pi0"
    found = problems(_lerobot(GROUPS, data="targte"))
    assert found == {"stages.1.data": "'targte' is not a group of data.groups (mixture, target)"}
    found = problems(_lerobot(None, data="target"))
    assert "'target' is not a group of data.groups (there are none" in found["stages.1.data"]
    found = problems(_lerobot(GROUPS, weighting="datasets"))
    assert "'uniform', 'task' or 'pi0'" in found["stages.1.weighting"]


def test_data_groups_name_datasets_of_data_paths_once() -> None:
    found = problems(_lerobot({"target": ["d/target", "d/other", "d/target"]}))
    assert found == {
        "data.groups.target.1": "'d/other' is not in data.paths ['d/mix-a', 'd/mix-b', "
        "'d/target']; a group names datasets of data.paths",
        "data.groups.target.2": "'d/target' is listed twice",
    }
    assert "data.groups.target" in problems(_lerobot({"target": []}))
    metaworld = toy()
    metaworld["data"] = {"groups": {"target": ["d/target"]}}
    found = problems(metaworld)
    assert found == {"data.groups": "only for source: lerobot (metaworld demos are generated)"}


def _dataset(root, lengths: list[int], tasks: list[str]) -> RobotDataset:
    episodes = [
        Episode(tasks[e % len(tasks)], ep.arrays)
        for e, ep in enumerate(coded_episodes(lengths, tasks=1))
    ]
    write_dataset(root, episodes, fps=10)
    return read_dataset(root)


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> WindowedDataset:
    """mix-a: 24 windows of tasks 0/1 (12 each); mix-b: 60 of tasks 0/1 (30 each); target: 17
    of task 2 (8) and task 0 (9)."""
    root = tmp_path_factory.mktemp("three")
    data = [
        _dataset(root / "mix-a", [6, 6, 6, 6], ["task 0", "task 1"]),
        _dataset(root / "mix-b", [10] * 6, ["task 0", "task 1"]),
        _dataset(root / "target", [5, 9, 3], ["task 2", "task 0"]),
    ]
    return WindowedDataset(data, WindowConfig(chunk=2, image_keys=("observation.images.cam",)))


def _stage(**fields: object):
    return recipe_from_dict(_lerobot(GROUPS, **fields), "toy.yaml").stages[1]


def test_a_stage_reads_only_its_groups_datasets(three: WindowedDataset) -> None:
    none = np.zeros(len(three), dtype=bool)
    datasets = three.groups("dataset")
    target = stage_data(three, _stage(data="target"), none, [2])
    assert target.indices == np.flatnonzero(datasets == 2).tolist()  # exactly its 17 windows
    assert set(target.dataset_groups.tolist()) == {2}
    assert {target[i]["dataset_index"] for i in range(len(target))} == {2}
    mixture = stage_data(three, _stage(data="mixture"), none, [0, 1])
    assert mixture.indices == list(range(84))
    # tasks apply within the group: task 0 of the target dataset only, held-out rows excluded.
    held = np.zeros(len(three), dtype=bool)
    held[-3:] = True  # target's last episode (task 2)
    subset = stage_data(three, _stage(data="target", tasks=["task 0"]), held, [2])
    assert subset.indices == list(range(84 + 5, 84 + 14))
    with pytest.raises(
        StageDataError, match=r"\['task 1'\] not all found among the tasks of data group 'target'"
    ):
        stage_data(three, _stage(data="target", tasks=["task 1"]), none, [2])


def test_pi0_weighting_draws_datasets_by_n_to_the_0_43(three: WindowedDataset) -> None:
    data = stage_data(three, _stage(), np.zeros(len(three), dtype=bool))
    n = np.array([24, 60, 17])
    p_dataset = n**0.43 / (n**0.43).sum()
    # Within a dataset, its two tasks equally often, a task's windows alike.
    pair_counts = {(0, 0): 12, (0, 1): 12, (1, 0): 30, (1, 1): 30, (2, 2): 8, (2, 0): 9}
    expected = np.array(
        [
            p_dataset[d] / 2 / pair_counts[d, t]
            for d, t in zip(data.dataset_groups, data.task_groups, strict=True)
        ]
    )
    weights = sample_weights(data, "pi0")
    np.testing.assert_allclose(weights / weights.sum(), expected, rtol=1e-12)
    # The trainer's own draws (ShardedBatchSampler's epochs) follow those frequencies.
    p = weights / weights.sum()
    draws = np.concatenate([epoch_order(len(data), e, 0, p) for e in range(400)])
    freq = np.bincount(data.dataset_groups[draws], minlength=3) / len(draws)
    sigma = np.sqrt(p_dataset * (1 - p_dataset) / len(draws))
    assert np.all(np.abs(freq - p_dataset) < 4 * sigma), (freq, p_dataset)
    # Counter-case: uniform draws (datasets by n) are far from the n^0.43 mixture.
    assert np.abs(n / n.sum() - p_dataset).max() > 40 * sigma.max()
    assert sample_weights(data, "uniform") is None
    task = sample_weights(data, "task")
    per_task = np.bincount(data.task_groups, weights=task / task.sum())
    np.testing.assert_allclose(per_task, [1 / 3] * 3)


def test_a_stage_weighting_defaults_to_data_weighting() -> None:
    recipe = recipe_from_dict(_lerobot(GROUPS), "toy.yaml")
    assert recipe.stages[1].weighting is None and recipe.data.weighting == "task"
