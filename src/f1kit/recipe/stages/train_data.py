"""Which windows a train stage reads: the recipe's data, or the stage's ``tasks``, less the
held-out episodes (``data.validation``), and how often each is drawn (``weighting``)."""

import numpy as np
import torch

from f1kit.data import WindowedDataset
from f1kit.recipe.schema import TrainStage


class StageData(torch.utils.data.Subset):
    """The windows of a train stage (``indices`` into the run's `WindowedDataset`) and the task
    of each (``task_groups``: the global task index)."""

    def __init__(self, windows: WindowedDataset, rows: np.ndarray) -> None:
        super().__init__(windows, rows.tolist())
        self.task_groups = windows.groups("task")[rows]


def stage_data(windows: WindowedDataset, stage: TrainStage, held: np.ndarray) -> StageData:
    """The windows ``stage`` trains on; its ``tasks`` must all be among the windows' tasks."""
    groups = windows.groups("task")
    wanted = stage.task_sentences()
    if wanted is None:
        return StageData(windows, np.flatnonzero(~held))
    keep = [i for i, task in enumerate(windows.tasks) if task in wanted]
    if len(keep) != len(wanted):
        raise ValueError(
            f"stages.{stage.name}.tasks: {sorted(wanted)} not all found among the data's "
            f"tasks {windows.tasks}"
        )
    return StageData(windows, np.flatnonzero(np.isin(groups, keep) & ~held))


def sample_weights(data: StageData, weighting: str) -> np.ndarray | None:
    """One draw weight per window of ``data`` (None: every window alike).

    ``task``: every task is drawn equally often, its windows alike; ``uniform``: None.
    """
    if weighting == "task":
        groups_of = np.unique(data.task_groups, return_inverse=True)[1]
        return 1.0 / np.bincount(groups_of)[groups_of]
    return None
