"""Expert demonstrations (f1kit.sim.demos): successful, non-black, deterministic, counted."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from f1kit.data import decode_mp4, has_video_codec, read_dataset
from f1kit.sim import MT10, DemoConfig, MetaWorldEnv, generate_demos, layout_seed
from tests.f1kit.conftest import DEMO_TASKS

pytestmark = pytest.mark.sim
pytest.importorskip("metaworld", reason="needs the Meta-World simulator (the [sim] extra)")


def test_demos_are_successful_and_non_black(demo_root: Path) -> None:
    ds = read_dataset(demo_root)
    assert ds.num_episodes == 4 and ds.fps == 80
    assert sorted(ds.tasks) == sorted(
        ["move the gripper to the goal position", "pull the drawer open by its handle"]
    )
    frames = ds.frames("observation.images.corner", np.arange(len(ds)))
    assert frames.shape[1:] == (32, 32, 3)
    per_episode = [frames[lo:hi].mean() for lo, hi in ds.episode_bounds]
    assert min(per_episode) > 20, per_episode
    assert np.abs(ds.numeric["action"]).max() <= 1.0
    # Success is re-checked by replaying the stored actions on the same layout without a camera.
    layouts = {t: [layout_seed(0, t, k) for k in range(2)] for t in DEMO_TASKS}
    for e in range(ds.num_episodes):
        lo, hi = ds.episode_bounds[e]
        task = DEMO_TASKS[e // 2]
        with MetaWorldEnv(task, cameras=()) as env:
            obs, _ = env.reset(layouts[task][e % 2])
            np.testing.assert_allclose(
                obs["observation.state"], ds.numeric["observation.state"][lo]
            )
            success = False
            for a in ds.numeric["action"][lo:hi]:
                obs, _, success, _, _ = env.step(a)
            assert success, (task, e)
            # Counter-case: one step short of the end the task is not yet solved.
            env.reset(layouts[task][e % 2])
            done = [env.step(a)[2] for a in ds.numeric["action"][lo : hi - 1]]
            assert not any(done)


def test_same_seed_same_bytes_for_any_worker_count(demo_root: Path, tmp_path: Path) -> None:
    # demo_root was made by one in-process worker; here two spawned workers split the attempts.
    config = DemoConfig(tasks=DEMO_TASKS, episodes=2, size=32, seed=0, workers=2)
    result = generate_demos(config, tmp_path / "two", progress=False)
    assert result.layouts == {t: [0, 1] for t in DEMO_TASKS}
    files = sorted(p.relative_to(demo_root) for p in demo_root.rglob("*") if p.is_file())
    assert len(files) == 5
    for f in files:
        assert (demo_root / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    # Counter-case: the data file holds the frames, so any pixel change would show.
    frames = read_dataset(tmp_path / "two").frames("observation.images.corner", np.arange(2))
    assert not np.array_equal(frames[0], frames[1])


def test_failures_are_counted_and_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    # Five steps never solve reach: every attempt fails, up to the attempt cap.
    config = DemoConfig(tasks=("reach-v3",), episodes=2, cameras=(), max_steps=5, max_attempts=3)
    with caplog.at_level(logging.WARNING):
        result = generate_demos(config, progress=False)
    assert result.episodes == [] and result.failures == {"reach-v3": 3}
    assert result.successes == {"reach-v3": 0}
    assert "only 0 of 2 demos" in caplog.text


def test_config_errors(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):  # raised before any simulation
        generate_demos(DemoConfig(tasks=("reach-v3",), episodes=1), tmp_path / "taken")
    with pytest.raises(FileExistsError, match="only replaces an f1kit dataset"):  # kept
        config = DemoConfig(tasks=("reach-v3",), episodes=1)
        generate_demos(config, tmp_path / "taken", overwrite=True)
    assert (tmp_path / "taken" / "file").read_text() == "x"
    assert DemoConfig(tasks="MT10").tasks == MT10  # set names expand
    with pytest.raises(ValueError, match="episodes"):
        DemoConfig(episodes=0)
    with pytest.raises(ValueError, match="unknown"):
        DemoConfig(tasks=("reach",))
    with pytest.raises(ValueError, match="max_attempts"):
        DemoConfig(episodes=5, max_attempts=2)


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
def test_demos_command_writes_mp4_cameras_with_video(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from f1kit.cli import app

    args = ["demos", "--tasks", "reach-v3", "--episodes", "1", "--size", "15", "--seed", "3"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, str(tmp_path / "mp4"), "--video"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "mp4"
    feature = json.loads((root / "meta/info.json").read_text())["features"]
    assert feature["observation.images.corner"]["dtype"] == "video"
    assert feature["observation.images.corner"]["shape"] == [15, 15, 3]
    frames = decode_mp4(root / "videos/observation.images.corner/chunk-000/file-000.mp4")
    # The same run stored as PNG holds the frames the MP4 must reproduce, within the codec's error.
    result = runner.invoke(app, [*args, str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    png = read_dataset(tmp_path / "png")
    source = png.frames("observation.images.corner", np.arange(len(png)))
    assert frames.shape == source.shape == (len(png), 15, 15, 3)
    assert source.mean() > 20  # a rendered scene, not black frames
    # Measured 5.4 levels at 15 px (yuv444p; 8.4 at 16 px in yuv420p): tiny renders are all edges.
    assert np.abs(frames.astype(int) - source).mean() < 7.0
    video = read_dataset(root)
    np.testing.assert_array_equal(video.numeric["action"], png.numeric["action"])
