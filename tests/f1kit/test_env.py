"""Meta-World environment wrapper (f1kit.sim.env): seeded layouts, fast non-black frames."""

import numpy as np
import pytest

from f1kit.sim import MetaWorldEnv, layout_seed

pytestmark = pytest.mark.sim
pytest.importorskip("metaworld", reason="needs the Meta-World simulator (the [sim] extra)")

KEY = "observation.images.corner"


def test_layout_seed_is_a_pure_function_of_seed_task_episode() -> None:
    assert layout_seed(0, "reach-v3", 3) == layout_seed(0, "reach-v3", 3)
    seeds = {
        layout_seed(s, t, e) for s in (0, 1) for t in ("reach-v3", "push-v3") for e in range(5)
    }
    assert len(seeds) == 20
    with pytest.raises(ValueError, match="seed"):
        layout_seed(-1, "reach-v3", 0)


def test_same_seed_same_pixels_other_seed_other_layout() -> None:
    with MetaWorldEnv("reach-v3", cameras=("corner", "topview"), size=32) as env:
        a, info = env.reset(seed=5)
        b, _ = env.reset(seed=5)
        c, _ = env.reset(seed=6)
        assert info == {"layout_seed": 5}
        assert env.fps == 80
    assert a["observation.images.corner"].shape == (32, 32, 3)
    assert a["observation.environment_state"].shape == (39,) and a["observation.state"].shape == (
        4,
    )
    np.testing.assert_array_equal(a[KEY], b[KEY])
    np.testing.assert_array_equal(
        a["observation.environment_state"], b["observation.environment_state"]
    )
    # The goal (last 3 floats) moves with the layout, and the frame shows it.
    assert not np.allclose(
        a["observation.environment_state"][36:], c["observation.environment_state"][36:]
    )
    assert not np.array_equal(a[KEY], c[KEY])
    assert a["task"] == "move the gripper to the goal position"


def test_envs_in_turn_render_non_black_frames() -> None:
    # DESIGN.md s8 pitfall: without close() + gc the second env renders black.
    means = []
    for task in ("reach-v3", "drawer-open-v3", "reach-v3"):
        with MetaWorldEnv(task, size=24) as env:
            obs, _ = env.reset(seed=1)
            obs, *_ = env.step(np.zeros(4, np.float32))
            means.append(obs[KEY].mean())
    assert min(means) > 20, means


def test_step_cap_and_bad_input() -> None:
    with MetaWorldEnv("reach-v3", cameras=(), max_steps=3) as env:
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"observation.state", "observation.environment_state", "task"}
        flags = [env.step(np.zeros(4, np.float32))[3] for _ in range(3)]
        assert flags == [False, False, True]
        with pytest.raises(RuntimeError, match="cap"):
            env.step(np.zeros(4, np.float32))
        env.reset(seed=0)
        with pytest.raises(ValueError, match="action: expected shape"):
            env.step(np.zeros(3, np.float32))
        with pytest.raises(ValueError, match="finite"):
            env.step(np.array([0, np.nan, 0, 0], np.float32))
    with pytest.raises(ValueError, match="cameras"):
        MetaWorldEnv("reach-v3", cameras=("front",))
    with pytest.raises(ValueError, match="max_steps"):
        MetaWorldEnv("reach-v3", cameras=(), max_steps=501)
