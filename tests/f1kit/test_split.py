"""Held-out episodes: the last episodes of each task, never trained on."""

import numpy as np
import pytest

from f1kit.data import (
    RobotDataset,
    WindowConfig,
    WindowedDataset,
    episode_ids,
    held_out_episodes,
    held_out_rows,
)
from f1kit.recipe.stages import stage_data
from tests.f1kit.recipe.test_stage_data import recipe_stage


def test_the_last_episodes_of_each_task_are_held_out(coded_dataset: RobotDataset) -> None:
    # Episodes of lengths [5, 1, 12, 3, 20] alternate tasks 0, 1, 0, 1, 0.
    assert held_out_episodes(coded_dataset, 0).tolist() == []
    assert held_out_episodes(coded_dataset, 1).tolist() == [3, 4]
    rows = held_out_rows([coded_dataset], 1)
    assert np.flatnonzero(rows).tolist() == list(range(18, 41))
    # Two copies: each copy holds out its own episodes.
    assert held_out_rows([coded_dataset, coded_dataset], 1).sum() == 2 * 23
    with pytest.raises(ValueError, match="would leave none to train on"):
        held_out_episodes(coded_dataset, 2)  # task 1 has two episodes only


def test_episode_ids_are_unique_across_datasets(coded_dataset: RobotDataset) -> None:
    ids = episode_ids([coded_dataset, coded_dataset])
    assert len(ids) == 2 * len(coded_dataset)
    assert np.unique(ids).tolist() == list(range(10))
    assert ids[len(coded_dataset)] == 5  # the second copy's first episode


def test_train_stages_never_see_held_out_windows(coded_dataset: RobotDataset) -> None:
    windows = WindowedDataset(
        coded_dataset, WindowConfig(chunk=2, image_keys=("observation.images.cam",))
    )
    held = held_out_rows([coded_dataset], 1)
    everything = stage_data(windows, recipe_stage(None), held)
    assert everything.indices == list(range(18))
    subset = stage_data(windows, recipe_stage(["task 0"]), held)
    assert subset.indices == [0, 1, 2, 3, 4, *range(6, 18)]
