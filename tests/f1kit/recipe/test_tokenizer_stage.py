"""The tokenizer stage reads the generation camera a batch of rows at a time (``CameraRows``), so
a lazily read dataset is never decoded whole, and the rows it serves are the concatenated
datasets' rows exactly."""

import numpy as np

from f1kit.data import read_dataset, write_dataset
from f1kit.recipe.stages.tokenizer import CameraRows
from tests.f1kit.conftest import coded_episodes

CAM = "observation.images.cam"


def test_camera_rows_are_the_concatenated_datasets_rows(tmp_path) -> None:
    data = [
        read_dataset(write_dataset(tmp_path / f"d{i}", coded_episodes(lengths), fps=10))
        for i, lengths in enumerate(([3, 5], [4], [2, 6]))
    ]
    everything = np.concatenate([ds.frames(CAM, np.arange(len(ds))) for ds in data])
    rows = np.random.default_rng(0).integers(0, len(everything), size=25)
    asked: list[int] = []
    for ds in data:
        original = ds.frames

        def frames(key, r, original=original):
            asked.append(len(r))
            return original(key, r)

        ds.frames = frames  # type: ignore[method-assign]
    assert np.array_equal(CameraRows(data, CAM)[rows], everything[rows])
    assert sum(asked) == len(rows)  # only the rows asked for were read
