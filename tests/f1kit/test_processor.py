"""The one pre/post-processor (f1kit.data.processor): the training window and the policy apply the
same rule per embodiment, it round-trips through its files, and bad statistics are named."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from f1kit.data import (
    POSTPROCESSOR,
    PREPROCESSOR,
    Processor,
    ProcessorError,
    WindowConfig,
    WindowedDataset,
    make_processors,
    numeric_stats,
    read_dataset,
    write_dataset,
)
from tests.f1kit.conftest import coded_episodes

MODES = ["mean_std", "min_max", "quantile", "identity"]


def two_datasets(tmp_path: Path, tiny_spread: float = 0.0) -> list:
    """Two datasets with different statistics; state dim 2 is 0 (constant) within
    dataset ``a`` up to ``tiny_spread``."""
    first, second = coded_episodes([6, 9]), coded_episodes([7, 5])
    for ep in first:
        n = len(ep.arrays["observation.state"])
        ep.arrays["observation.state"][:, 2] = tiny_spread * np.arange(n) / n
    for ep in second:
        ep.arrays["observation.state"] = ep.arrays["observation.state"] * 100 + 5
        ep.arrays["action"] = ep.arrays["action"] * -7 + 1
    a = read_dataset(write_dataset(tmp_path / "a", first, fps=10, robot_type="arm"))
    b = read_dataset(write_dataset(tmp_path / "b", second, fps=10, robot_type="gripper"))
    return [a, b]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> list:
    return two_datasets(tmp_path_factory.mktemp("proc"))


@pytest.mark.parametrize("mode", MODES)
def test_window_and_policy_processor_agree_bit_for_bit_per_embodiment(datasets, mode, tmp_path):
    data = WindowedDataset(datasets, WindowConfig(chunk=2, normalization=mode))
    assert data.embodiments == ["arm", "gripper"]
    # The policy's processors, as a run saves them and a policy loads them back.
    pre, post = make_processors(datasets, mode=mode)
    pre.save_pretrained(tmp_path)
    post.save_pretrained(tmp_path)
    pre = Processor.from_pretrained(tmp_path, PREPROCESSOR)
    post = Processor.from_pretrained(tmp_path, POSTPROCESSOR)
    for i in (0, 5, 15, 20, len(data) - 1):
        sample = data[i]
        d, row = data.locate(i)
        raw_state = torch.from_numpy(datasets[d].numeric["observation.state"][row])
        out = pre({"observation.state": raw_state, "embodiment": sample["embodiment"]})
        assert torch.equal(out["observation.state"], sample["state"]), (mode, i)
        # The postprocessor undoes the window's action normalisation with the same statistics.
        back = post({"action": sample["action"], "embodiment": sample["embodiment"]})["action"]
        lo, hi = data._ranges[d][row]
        raw = datasets[d].numeric["action"][np.clip(row + np.arange(2), lo, hi - 1)]
        torch.testing.assert_close(back, torch.from_numpy(raw), rtol=1e-5, atol=1e-3)
    if mode != "identity":
        # Counter-case: dataset b's actions un-normalised with dataset a's stats (what the policy
        # did before: data[0] for everyone) are far off.
        sample = data[len(data) - 1]
        wrong = post({"action": sample["action"], "embodiment": "arm"})["action"]
        right = post({"action": sample["action"], "embodiment": "gripper"})["action"]
        assert (wrong - right).abs().max() > 1.0


@settings(max_examples=20, deadline=None)
@given(spread=st.sampled_from([0.0, 1e-9, 5e-8, 3e-7, 2e-6]), mode=st.sampled_from(MODES[:3]))
def test_a_near_constant_dimension_follows_one_rule(tmp_path_factory, spread, mode) -> None:
    # The twin rules disagreed between 1e-8 and 1e-6 (training: 1/spread, policy: scale 1).
    datasets = two_datasets(tmp_path_factory.mktemp("spread"), tiny_spread=spread)
    data = WindowedDataset(datasets, WindowConfig(chunk=2, normalization=mode))
    pre, _ = make_processors(datasets, mode=mode)
    for i in range(0, 15, 3):
        state = torch.from_numpy(datasets[0].numeric["observation.state"][i])
        expected = pre({"observation.state": state, "embodiment": "arm"})["observation.state"]
        assert torch.equal(data[i]["state"], expected)
        assert torch.isfinite(expected).all() and abs(float(expected[2])) < 1.0


def test_the_embodiment_is_chosen_by_id_or_defaults_to_the_only_one(datasets) -> None:
    pre, post = make_processors(datasets)
    state = torch.zeros(3)
    with pytest.raises(ProcessorError, match=r"embodiment.*\['arm', 'gripper'\]"):
        pre({"observation.state": state})
    with pytest.raises(ProcessorError, match=r"embodiment: expected one of \['arm', 'gripper'\]"):
        pre({"observation.state": state, "embodiment": "hand"})
    single, _ = make_processors(datasets[:1])
    explicit = single({"observation.state": state, "embodiment": "arm"})["observation.state"]
    assert torch.equal(single({"observation.state": state})["observation.state"], explicit)
    # A padded model action is cut to the data's dims before un-normalising.
    padded = torch.zeros(2, 4, 8)
    assert post({"action": padded, "embodiment": "arm"})["action"].shape == (2, 4, 3)
    with pytest.raises(ProcessorError, match="embodiments"):
        make_processors(datasets, embodiments=["x", "x"])
    with pytest.raises(ProcessorError, match=r"observation\.state: expected 3 features .*got 2"):
        pre({"observation.state": torch.zeros(2), "embodiment": "arm"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_statistics_are_refused_naming_file_and_key(tmp_path, bad) -> None:
    root = write_dataset(tmp_path / "ds", coded_episodes([6, 4]), fps=10)
    stats_path = root / "meta" / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["action"]["std"][1] = bad
    stats_path.write_text(json.dumps(stats))
    ds = read_dataset(root)
    named = r"meta/stats\.json: action: stats: 'std' .*dims \[1\]"
    with pytest.raises(ProcessorError, match=named):
        WindowedDataset(ds, WindowConfig())
    # A mode that does not read the broken statistic is fine.
    WindowedDataset(ds, WindowConfig(normalization="min_max"))


def test_saved_statistics_are_checked_when_loaded(datasets, tmp_path) -> None:
    pre, post = make_processors(datasets)
    pre.save_pretrained(tmp_path)
    post.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(pre.files() + post.files())
    state_file = tmp_path / post.files()[1]
    tensors = load_file(str(state_file))
    tensors["gripper/action/scale"][0] = float("nan")
    save_file(tensors, str(state_file))
    with pytest.raises(ProcessorError, match=r"gripper/action/scale.*NaN"):
        Processor.from_pretrained(tmp_path, POSTPROCESSOR)
    config = json.loads((tmp_path / f"{PREPROCESSOR}.json").read_text())
    config["steps"][0]["registry_name"] = "normaliser"
    (tmp_path / f"{PREPROCESSOR}.json").write_text(json.dumps(config))
    with pytest.raises(ProcessorError, match="registry_name"):
        Processor.from_pretrained(tmp_path, PREPROCESSOR)
    with pytest.raises(ProcessorError, match="not found"):
        Processor.from_pretrained(tmp_path / "nowhere", PREPROCESSOR)


def test_numeric_stats_feed_the_processor_modes() -> None:
    # Each mode's map hits its target range on the data its stats came from.
    from f1kit.data.processor import feature_normalizer

    x = np.random.default_rng(0).normal(size=(64, 3)) * [1, 50, 0.01] + [0, -3, 7]
    t = torch.tensor(x, dtype=torch.float32)
    for mode in MODES:
        norm = feature_normalizer(numeric_stats(x), mode, source="x")
        if norm is None:
            assert mode == "identity"
            continue
        y = norm(t)
        torch.testing.assert_close(norm.inverse(y), t, rtol=1e-5, atol=1e-4)
        if mode == "mean_std":
            torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
        if mode == "min_max":
            torch.testing.assert_close(y.amin(0), -torch.ones(3), atol=1e-4, rtol=0)
    with pytest.raises(ProcessorError, match="mode"):
        feature_normalizer(numeric_stats(x), "zscore", source="x")
