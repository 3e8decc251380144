"""Which windows a train stage reads and how often it draws each.

Its windows: those of its datasets (``data``: a group of ``data.groups``; default every dataset),
of its ``tasks`` among them (default all), less the held-out episodes (``data.validation``).
How often (``weighting``, default ``data.weighting``), with ``n_d`` the stage's windows of
dataset ``d``, ``T_d`` its tasks there and ``n_dt`` the windows of task ``t`` in ``d``:

* ``uniform``: every window alike, ``p = 1 / sum_d n_d``;
* ``task``: every task (across datasets) equally often, its windows alike;
* ``pi0``: datasets by pi0's mixture weights ``n_d^0.43 / sum_e n_e^0.43``
  (`f1kit.data.sampling.group_weights`, alpha ``PI0_ALPHA``), then within a dataset every task
  equally often and its windows alike: ``p = n_d^0.43 / sum_e n_e^0.43 / T_d / n_dt``. A large
  mixture does not drown a small dataset (as ``uniform`` would), nor does a small one repeat
  as often as a large one (as equal datasets would); tasks stay balanced inside each dataset, as
  ``task`` balances them across all.

The trainer draws with these per-window weights (`f1kit.train.ShardedBatchSampler`), which keeps
its order resumable and shardable; `WeightedGroupSampler` draws the same group frequencies outside
the trainer.
"""

import numpy as np
import torch

from f1kit.data import WindowedDataset
from f1kit.data.sampling import PI0_ALPHA, group_weights
from f1kit.recipe.schema import TrainStage


class StageDataError(ValueError):
    """A train stage's ``key`` (e.g. ``tasks``) asks for windows its data does not hold."""

    def __init__(self, stage: str, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"stages.{stage}.{key}: {message}")


class StageData(torch.utils.data.Subset):
    """The windows of a train stage (``indices`` into the run's `WindowedDataset`), the task of
    each (``task_groups``: its global task index) and its dataset (``dataset_groups``)."""

    def __init__(self, windows: WindowedDataset, rows: np.ndarray) -> None:
        super().__init__(windows, rows.tolist())
        self.task_groups = windows.groups("task")[rows]
        self.dataset_groups = windows.groups("dataset")[rows]


def stage_data(
    windows: WindowedDataset,
    stage: TrainStage,
    held: np.ndarray,
    datasets: list[int] | None = None,
) -> StageData:
    """The windows ``stage`` trains on: of ``datasets`` (indices of ``windows.datasets``; None =
    all, else `DataConfig.group_datasets` of ``stage.data``), of its tasks, not ``held``."""
    tasks, known, where = windows.groups("task"), windows.tasks, "the data's tasks"
    keep = ~held
    if datasets is not None:
        mine = np.isin(windows.groups("dataset"), datasets)
        known = [windows.tasks[i] for i in np.unique(tasks[mine])]
        keep, where = keep & mine, f"the tasks of data group {stage.data!r}"
    wanted = stage.task_sentences()
    if wanted is not None:
        chosen = [i for i, task in enumerate(windows.tasks) if task in wanted and task in known]
        if len(chosen) != len(wanted):
            missing = sorted(wanted - {windows.tasks[i] for i in chosen})
            raise StageDataError(
                stage.name, "tasks", f"{missing} not all found among {where} {known}"
            )
        keep = keep & np.isin(tasks, chosen)
    return StageData(windows, np.flatnonzero(keep))


def sample_weights(data: StageData, weighting: str) -> np.ndarray | None:
    """One draw weight per window of ``data`` for ``weighting`` (module docstring); None: every
    window alike (``uniform``)."""
    if weighting == "uniform":
        return None
    if weighting == "task":
        groups_of = np.unique(data.task_groups, return_inverse=True)[1]
        return 1.0 / np.bincount(groups_of)[groups_of]
    if weighting == "pi0":
        _, dataset_of = np.unique(data.dataset_groups, return_inverse=True)
        pairs = np.stack([data.dataset_groups, data.task_groups], axis=1)
        _, first, pair_of = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
        pair_of = pair_of.reshape(-1)  # (dataset, task) pair of each window
        tasks_in = np.bincount(dataset_of[first])  # T_d
        mixture = group_weights(np.bincount(dataset_of), "power", PI0_ALPHA)
        return mixture[dataset_of] / tasks_in[dataset_of] / np.bincount(pair_of)[pair_of]
    raise ValueError(f"weighting: expected uniform, task or pi0, got {weighting!r}")
