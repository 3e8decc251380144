"""The paired bootstrap of two evaluations on the same layouts."""

import pytest

from f1kit.sim.compare import outcomes_of, paired_bootstrap


def test_identical_policies_differ_by_exactly_zero() -> None:
    a = {"reach-v3": [True, False, True, False], "push-v3": [False, False, True, True]}
    result = paired_bootstrap(a, a, resamples=500)
    assert result["difference"] == result["low"] == result["high"] == 0.0
    assert result["p_not_better"] == 1.0


def test_pairing_makes_a_consistent_edge_significant() -> None:
    # b fails exactly where a fails plus 6 more layouts out of 50: no resample favours b.
    a = {"t": [True] * 40 + [False] * 10}
    b = {"t": [True] * 34 + [False] * 16}
    result = paired_bootstrap(a, b, resamples=2000)
    assert result["difference"] == pytest.approx(0.12)
    assert 0 < result["low"] <= 0.12 <= result["high"] and result["p_not_better"] < 0.01
    # The same rates on unrelated layouts: the interval now reaches below zero.
    shuffled = {"t": [False] * 16 + [True] * 34}
    loose = paired_bootstrap(a, shuffled, resamples=2000)
    assert loose["difference"] == pytest.approx(0.12) and loose["low"] < 0


def test_tasks_weigh_equally_and_mismatches_are_named() -> None:
    a = {"x": [True] * 10, "y": [False] * 2}
    b = {"x": [False] * 10, "y": [False] * 2}
    assert paired_bootstrap(a, b, resamples=200)["difference"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="tasks"):
        paired_bootstrap(a, {"x": [True] * 10}, resamples=200)
    with pytest.raises(ValueError, match="y: expected the same episodes"):
        paired_bootstrap(a, {"x": [True] * 10, "y": [True]}, resamples=200)


def test_outcomes_of_reads_an_eval_report() -> None:
    report = {"mean_rate": 0.5, "tasks": {"reach-v3": {"successes": 1, "outcomes": [1, 0]}}}
    assert outcomes_of(report) == {"reach-v3": [True, False]}
    with pytest.raises(ValueError, match=r"reach-v3.*outcomes"):
        outcomes_of({"tasks": {"reach-v3": {"successes": 1}}})
