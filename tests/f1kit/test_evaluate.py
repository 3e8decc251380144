"""Closed-loop evaluation (f1kit.sim.evaluate): Wilson intervals, the expert's score, videos."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from f1kit.sim import EvalConfig, ScriptedExpert, evaluate, layout_seed, wilson_interval


def test_wilson_known_values() -> None:
    lo, hi = wilson_interval(5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert math.isclose(lo, 0.7225, abs_tol=1e-4) and hi == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


@given(st.integers(1, 400), st.data())
def test_wilson_contains_the_rate_and_shrinks_with_n(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    lo4, hi4 = wilson_interval(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


class ZeroPolicy:
    """Never moves: must fail, which shows the evaluation can report failure."""

    def reset(self) -> None:
        pass

    def select_action(self, observation: dict) -> np.ndarray:
        return np.zeros(4, np.float32)


class ExpertWithForesight(ScriptedExpert):
    """The expert plus a fake 'predicted frame' stream, to exercise the side-by-side video."""

    def predicted_frame(self) -> np.ndarray:
        return np.full((16, 16, 3), 200, np.uint8)


@pytest.mark.sim
def test_scripted_expert_scores_at_least_090() -> None:
    pytest.importorskip("metaworld")
    tasks = ("reach-v3", "drawer-open-v3", "button-press-topdown-v3")
    report = evaluate(
        ScriptedExpert, EvalConfig(tasks=tasks, episodes=10, cameras=()), progress=False
    )
    for task in tasks:
        result = report.tasks[task]
        assert result.rate >= 0.9, (task, result)
        assert result.ci_low <= result.rate <= result.ci_high
        assert len(result.outcomes) == 10 and sum(result.outcomes) == result.successes
    assert report.as_dict()["mean_rate"] >= 0.9
    zero = evaluate(
        ZeroPolicy(),
        EvalConfig(tasks=("reach-v3",), episodes=3, max_steps=40, cameras=()),
        progress=False,
    )
    assert zero.tasks["reach-v3"].successes == 0 and zero.tasks["reach-v3"].mean_steps == 40
    assert zero.as_dict()["tasks"]["reach-v3"]["outcomes"] == [False, False, False]


@pytest.mark.sim
def test_held_out_layouts_differ_from_training() -> None:
    pytest.importorskip("metaworld")
    train = {layout_seed(0, "reach-v3", k) for k in range(100)}
    held_out = {layout_seed(EvalConfig().seed, "reach-v3", k) for k in range(100)}
    assert not train & held_out


@pytest.mark.sim
def test_records_a_side_by_side_video(tmp_path: Path) -> None:
    pytest.importorskip("metaworld")
    from f1kit.data import decode_mp4, has_video_codec

    config = EvalConfig(tasks=("reach-v3",), episodes=2, size=32, record=1, video_dir=tmp_path)
    report = evaluate(ExpertWithForesight, config, progress=False)
    videos = report.tasks["reach-v3"].videos
    assert len(videos) == 1 and Path(videos[0]).is_file() and "_ok" in videos[0]
    if has_video_codec():
        frames = decode_mp4(videos[0])
        assert frames.shape[1:] == (32, 64, 3)
        assert frames[:, :, :32].mean() < 180 and frames[:, 4:28, 36:60].mean() > 190


def test_config_errors() -> None:
    assert EvalConfig(tasks="reach-v3,push-v3").tasks == ("reach-v3", "push-v3")
    with pytest.raises(ValueError, match="video_dir"):
        EvalConfig(record=1)
    with pytest.raises(ValueError, match="record"):
        EvalConfig(episodes=2, record=3, video_dir=Path("."))
