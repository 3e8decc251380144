"""F1's training window (f1kit.data.window): offsets, clamping and masks at episode boundaries,
per-dataset normalisation, batching."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from f1kit.data import RobotDataset, WindowConfig, WindowedDataset, read_dataset, write_dataset
from tests.f1kit.conftest import coded_episodes

RAW = dict(normalization="identity")


def episode_range(ds: RobotDataset, row: int) -> tuple[int, int]:
    e = int(np.searchsorted(ds.episode_bounds[:, 1], row, side="right"))
    return int(ds.episode_bounds[e, 0]), int(ds.episode_bounds[e, 1])


def check_sample(ds: RobotDataset, data: WindowedDataset, i: int) -> dict:
    """Compare sample i against rows computed from scratch (values encode their row)."""
    cfg, s = data.config, data[i]
    lo, hi = episode_range(ds, i)
    hist = np.array([i + o for o in cfg.history])
    np.testing.assert_array_equal(s["history"][:, 0, 0, 0, 0].numpy(), np.clip(hist, lo, hi - 1))
    np.testing.assert_array_equal(s["history_is_pad"].numpy(), hist < lo)
    assert int(s["images"][0, 0, 0, 0]) == i
    assert int(s["foresight"][0, 0, 0, 0]) == min(i + cfg.foresight, hi - 1)
    assert bool(s["foresight_is_pad"]) == (i + cfg.foresight >= hi)
    acts = i + np.arange(cfg.chunk)
    np.testing.assert_array_equal(s["action"][:, 0].numpy(), np.clip(acts, lo, hi - 1))
    np.testing.assert_array_equal(s["action_is_pad"].numpy(), acts >= hi)
    assert s["state"].tolist()[:2] == [i, -i]
    assert s["task"] == ds.tasks[int(ds.task_index[i])] and s["index"] == i
    return s


def test_every_sample_of_a_coded_dataset(coded_dataset: RobotDataset) -> None:
    data = WindowedDataset(coded_dataset, WindowConfig(chunk=4, **RAW))
    assert len(data) == len(coded_dataset) == 41
    pads = {"history": 0, "foresight": 0, "action": 0}
    for i in range(len(data)):
        s = check_sample(coded_dataset, data, i)
        pads["history"] += int(s["history_is_pad"].any())
        pads["foresight"] += int(s["foresight_is_pad"])
        pads["action"] += int(s["action_is_pad"].any())
    # Not vacuous: the boundaries are hit, where an unclamped window would read a neighbour's rows.
    assert min(pads.values()) > 0, pads
    s = data[5]  # the one-frame episode: everything clamps to row 5
    assert s["history"][:, 0, 0, 0, 0].tolist() == [5, 5, 5, 5]
    assert s["action_is_pad"].tolist() == [False, True, True, True]


@given(
    history=st.lists(st.integers(-12, 0), min_size=1, max_size=5, unique=True).map(sorted),
    foresight=st.integers(1, 8),
    chunk=st.integers(1, 9),
    i=st.integers(0, 40),
)
def test_any_window_config(
    coded_dataset: RobotDataset, history: list[int], foresight: int, chunk: int, i: int
) -> None:
    config = WindowConfig(tuple(history), foresight, chunk, **RAW)
    check_sample(coded_dataset, WindowedDataset(coded_dataset, config), i)


def test_per_dataset_normalisation_and_task_vocabulary(tmp_path: Path) -> None:
    first = coded_episodes([6, 9, 4])
    second = coded_episodes([7, 5], tasks=1)
    for ep in second:
        ep.task = "another task"
        ep.arrays["observation.state"] = ep.arrays["observation.state"] * 100 + 5
    a = read_dataset(write_dataset(tmp_path / "a", first, fps=10))
    b = read_dataset(write_dataset(tmp_path / "b", second, fps=10))
    data = WindowedDataset([a, b], WindowConfig(chunk=2))
    assert data.tasks == ["task 0", "task 1", "another task"]
    assert np.bincount(data.groups("task")).tolist() == [10, 9, 12]
    assert np.bincount(data.groups("dataset")).tolist() == [19, 12]
    for d, (start, stop) in enumerate([(0, 19), (19, 31)]):
        states = torch.stack([data[i]["state"] for i in range(start, stop)])
        torch.testing.assert_close(states[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            states[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0
        )
        assert all(data[i]["dataset_index"] == d for i in (start, stop - 1))
    # Counter-case: dataset b's states under dataset a's statistics are far from unit scale.
    raw_b = torch.from_numpy(b.numeric["observation.state"])
    under_a = data.preprocessor({"observation.state": raw_b, "embodiment": data.embodiments[0]})
    assert under_a["observation.state"][:, :2].abs().mean() > 10
    assert data.embodiments == ["a", "b"] and data[19]["embodiment"] == "b"


def test_batches_through_a_dataloader(coded_dataset: RobotDataset) -> None:
    data = WindowedDataset(coded_dataset, WindowConfig(chunk=3))
    batch = next(iter(DataLoader(data, batch_size=8, shuffle=False)))
    assert batch["history"].shape == (8, 4, 1, 3, 8, 8) and batch["history"].dtype == torch.uint8
    assert batch["action"].shape == (8, 3, 3) and batch["action_is_pad"].dtype == torch.bool
    assert len(batch["task"]) == 8


def test_config_and_index_errors(coded_dataset: RobotDataset) -> None:
    for bad in [dict(history=(0, -3)), dict(history=(1,)), dict(foresight=0), dict(chunk=0)]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            WindowConfig(**bad)
    data = WindowedDataset(coded_dataset, WindowConfig())
    with pytest.raises(IndexError, match="index"):
        data[len(data)]
    with pytest.raises(ValueError, match=r"observation\.missing"):
        WindowedDataset(coded_dataset, WindowConfig(state_key="observation.missing"))


@pytest.mark.sim
def test_window_on_generated_demos(demo_root: Path) -> None:
    ds = read_dataset(demo_root)
    data = WindowedDataset(ds, WindowConfig(**RAW))
    key = "observation.images.corner"
    for lo, hi in ds.episode_bounds.tolist():
        for i in (lo, lo + 1, hi - 2, hi - 1):
            s = data[i]
            rows = np.clip(i + np.array([-9, -6, -3, 0]), lo, hi - 1)
            expected = torch.from_numpy(ds.frames(key, rows)).permute(0, 3, 1, 2)
            assert torch.equal(s["history"][:, 0], expected)
            assert torch.equal(
                s["foresight"][0],
                torch.from_numpy(ds.frames(key, [min(i + 3, hi - 1)])[0]).permute(2, 0, 1),
            )
            np.testing.assert_array_equal(
                s["action"].numpy(), ds.numeric["action"][np.clip(i + np.arange(4), lo, hi - 1)]
            )
    # Consecutive frames of a rollout differ, so a wrong offset would be caught.
    frames = ds.frames(key, np.arange(10))
    assert all(not np.array_equal(frames[j], frames[j + 3]) for j in range(7))


def test_precomputed_codes_replace_history_and_foresight(coded_dataset: RobotDataset) -> None:
    """Row r's codes are [r, 10 r, 100 r]: every sample's codes name the rows its frames had."""
    rows = np.arange(len(coded_dataset))
    codes = np.stack([rows, 10 * rows, 100 * rows], axis=1)
    cfg = WindowConfig(chunk=4, **RAW)
    framed = WindowedDataset(coded_dataset, cfg)
    coded = WindowedDataset(coded_dataset, cfg, codes=[codes])
    for i in range(len(coded)):
        f, c = framed[i], coded[i]
        assert "history" not in c and "foresight" not in c
        assert torch.equal(c["images"], f["images"])
        hist_rows = f["history"][:, 0, 0, 0, 0].long()
        assert torch.equal(c["history_codes"], torch.from_numpy(codes)[hist_rows])
        ahead = int(f["foresight"][0, 0, 0, 0])
        assert c["foresight_codes"].tolist() == codes[ahead].tolist()
    with pytest.raises(ValueError, match=r"codes\[0\]: expected \[41 rows"):
        WindowedDataset(coded_dataset, cfg, codes=[codes[:-1]])


def test_frames_at_reads_offsets_clipped_to_the_episode(coded_dataset: RobotDataset) -> None:
    windows = WindowedDataset(
        coded_dataset, WindowConfig(chunk=2, image_keys=("observation.images.cam",))
    )
    # Episode 2 holds rows 6..17; pixel value = row.
    frames = windows.frames_at(7, "observation.images.cam", [-3, 0, 3, 20])
    assert frames[:, 0, 0, 0].tolist() == [6, 7, 10, 17]
