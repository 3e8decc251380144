"""benchmarks/bc_baseline.py: its net, policy, training and evaluation functions on a tiny budget.

`test_benchmarks_run.py` already runs the script in --quick mode for well-formed JSON; these tests
call its functions: per-episode successes recovered from the evaluator's counts, the net's size,
the policy un-normalising with the data's statistics and re-planning once per executed chunk,
a loss that falls, and one closed-loop episode. Never the success rate.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bc_baseline.py"
SIZE = 32


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("bc_baseline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    # Small convolutions at batch 32 on two shared cores: two threads were 25x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demos(bc, tmp_path_factory: pytest.TempPathFactory):
    import f1kit.sim  # noqa: F401  (first: it picks headless GL before metaworld imports mujoco)

    pytest.importorskip("metaworld", reason="needs the Meta-World simulator (the [sim] extra)")
    scratch = tmp_path_factory.mktemp("bc")
    return bc.load_demos(None, "reach-v3", 1, 0, "corner", SIZE, 200, 1, scratch)


def test_net_is_a_one_to_two_million_parameter_cnn(bc) -> None:
    net = bc.BCNet(64, state_dim=4, action_dim=4, chunk=4)
    assert 1e6 < bc.parameter_count(net) < 2e6
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert net(images, torch.zeros(2, 4)).shape == (2, 4, 4)


@pytest.mark.sim
def test_policy_unnormalises_and_replans_once_per_chunk(bc, demos) -> None:
    data = bc.window(demos, "corner", chunk=4)
    net = bc.BCNet(SIZE, 4, 4, chunk=4)
    torch.nn.init.zeros_(net.head[-1].weight)
    torch.nn.init.zeros_(net.head[-1].bias)
    obs = {
        "observation.state": demos.numeric["observation.state"][0],
        "observation.images.corner": demos.frames("observation.images.corner", [0])[0],
    }
    stats = json.loads((demos.root / "meta" / "stats.json").read_text())["action"]
    for execute, plans in ((4, 2), (1, 6)):
        policy = bc.BCPolicy(net, data.preprocessor, data.postprocessor, "corner", execute)
        policy.reset()
        actions = [policy.select_action(obs) for _ in range(6)]
        # A zero (normalised) output is the data's mean action: the postprocessor ran, the
        # right way round.
        np.testing.assert_allclose(actions[0], stats["mean"], rtol=1e-5, atol=1e-6)
        assert policy.episodes[0]["steps"] == 6 and len(policy.episodes[0]["plan_ms"]) == plans


@pytest.mark.sim
def test_training_lowers_the_loss_and_one_episode_evaluates(bc, demos) -> None:
    torch.manual_seed(0)
    data = bc.window(demos, "corner", chunk=4)
    net = bc.BCNet(SIZE, 4, 4, chunk=4)
    before = bc.train(net, data, seconds=None, steps=1, progress=False).final_loss
    run = bc.train(net, data, seconds=None, steps=40, lr=1e-3, progress=False)
    after = bc.train(net, data, seconds=None, steps=1, progress=False).final_loss
    assert run.steps == 40 and after < 0.5 * before, (before, after)

    policy = bc.BCPolicy(net, data.preprocessor, data.postprocessor, "corner", execute=4)
    outcomes, _ = bc.evaluate_policy(
        policy,
        ("reach-v3",),
        episodes=1,
        seed=20_000,
        camera="corner",
        size=SIZE,
        max_steps=20,
        progress=False,
    )
    (outcome,) = outcomes
    assert outcome.episodes == 1 and len(outcome.episode_success) == 1
    steps = policy.episodes[0]["steps"]
    assert outcome.episode_success == [outcome.successes == 1]
    assert len(outcome.plan_ms) == math.ceil(steps / 4)
