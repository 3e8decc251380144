"""Held-out episodes: the validation split of a run's demos.

The last ``per_task`` episodes of every task in every dataset are held out: never trained on,
used for validation losses and foresight quality. "Last" in episode order, so a dataset generated
with more episodes keeps the same training episodes (Meta-World demos are generated episode by
episode from one seed: ``episodes + validation`` demos per task hold the same first ``episodes``).
Layouts of held-out Meta-World demos are still drawn from the training seed; closed-loop evaluation
uses its own seed.
"""

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Int

from f1kit.data.reader import RobotDataset


def held_out_episodes(dataset: RobotDataset, per_task: int) -> np.ndarray:
    """Indices of the last ``per_task`` episodes of each task of ``dataset``, sorted."""
    if per_task < 0:
        raise ValueError(f"per_task: expected >= 0 held-out episodes per task, got {per_task}")
    task_of = dataset.task_index[dataset.episode_bounds[:, 0]]
    held: list[int] = []
    for task in np.unique(task_of):
        episodes = np.flatnonzero(task_of == task)
        if per_task and len(episodes) <= per_task:
            raise ValueError(
                f"data.validation: task {dataset.tasks[int(task)]!r} of {dataset.root} has "
                f"{len(episodes)} episode(s); holding out {per_task} would leave none to train on"
            )
        held.extend(episodes[len(episodes) - per_task :].tolist() if per_task else [])
    return np.sort(np.asarray(held, dtype=np.int64))


def held_out_rows(datasets: Sequence[RobotDataset], per_task: int) -> Bool[np.ndarray, " n"]:
    """Whether each row of the datasets, concatenated in order, belongs to a held-out episode."""
    masks = []
    for ds in datasets:
        ids = ds.episode_index[ds.episode_bounds[held_out_episodes(ds, per_task), 0]]
        masks.append(np.isin(ds.episode_index, ids))
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def episode_ids(datasets: Sequence[RobotDataset]) -> Int[np.ndarray, " n"]:
    """Episode of each row of the datasets, concatenated, numbered 0.. across all of them."""
    ids, base = [], 0
    for ds in datasets:
        local = np.unique(ds.episode_index, return_inverse=True)[1].reshape(-1)
        ids.append(local + base)
        base += int(local.max()) + 1 if len(local) else 0
    return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
