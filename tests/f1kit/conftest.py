"""Shared data/sim fixtures: a tiny synthetic dataset builder and one tiny generated demo set."""

from pathlib import Path

import numpy as np
import pytest

from f1kit.data import Episode, RobotDataset, read_dataset, write_dataset

# Two tasks, two demos each, 32 px: ~300 frames, a few seconds on one core.
DEMO_TASKS = ("reach-v3", "drawer-open-v3")


def coded_episodes(lengths: list[int], size: int = 8, tasks: int = 2) -> list[Episode]:
    """Episodes whose every value encodes its global row: state = action = [row, -row, ep],
    pixel = row % 251 (so the source row of any frame, state or action can be read back)."""
    episodes, row = [], 0
    for e, n in enumerate(lengths):
        rows = np.arange(row, row + n)
        vec = np.stack([rows, -rows, np.full(n, e)], axis=1).astype(np.float32)
        pix = (rows % 251).astype(np.uint8)[:, None, None, None]
        frames = np.broadcast_to(pix, (n, size, size, 3)).copy()
        episodes.append(
            Episode(
                f"task {e % tasks}",
                {"observation.state": vec, "action": vec.copy(), "observation.images.cam": frames},
            )
        )
        row += n
    return episodes


@pytest.fixture(scope="session")
def coded_dataset(tmp_path_factory: pytest.TempPathFactory) -> RobotDataset:
    root = tmp_path_factory.mktemp("coded") / "ds"
    write_dataset(root, coded_episodes([5, 1, 12, 3, 20]), fps=10)
    return read_dataset(root)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # f1kit.sim first: it picks the headless GL backend before metaworld imports mujoco.
    from f1kit.sim import DemoConfig, generate_demos

    pytest.importorskip("metaworld", reason="needs the Meta-World simulator (the [sim] extra)")

    root = tmp_path_factory.mktemp("demos") / "mw"
    config = DemoConfig(tasks=DEMO_TASKS, episodes=2, size=32, seed=0, workers=1)
    generate_demos(config, root, progress=False)
    return root
