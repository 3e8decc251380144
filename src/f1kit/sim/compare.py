"""Two policies on the same layouts: the paired bootstrap of their success difference.

Evaluations with one ``seed`` run episode ``e`` of a task on the same layout for every policy
(`layout_seed`), so their per-episode outcomes pair up layout by layout. Resampling the *layouts*
(within each task, the same draw for both policies) gives an interval for the difference of mean
success rates that accounts for the pairing: layouts that every policy solves or every policy fails
add no noise, unlike two independent Wilson intervals.

Example::

    a, b = json.load(open("f1/eval.json")), json.load(open("no-gen/eval.json"))
    paired_bootstrap(outcomes_of(a), outcomes_of(b))   # {"difference": 0.12, "low": 0.05, ...}
"""

import numpy as np


def outcomes_of(report: dict) -> dict[str, list[bool]]:
    """Per-task episode outcomes of an ``EvalReport.as_dict()`` (e.g. a run's ``eval.json``)."""
    tasks = report.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError("report: expected an evaluation report with a 'tasks' mapping")
    out = {}
    for task, result in tasks.items():
        outcomes = result.get("outcomes") if isinstance(result, dict) else None
        if not outcomes:
            raise ValueError(
                f"report: task {task!r} has no per-episode 'outcomes' (evaluated by an older "
                "f1kit?); re-run the evaluation"
            )
        out[task] = [bool(x) for x in outcomes]
    return out


def paired_bootstrap(
    a: dict[str, list[bool]],
    b: dict[str, list[bool]],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Mean success of ``a`` minus ``b`` (tasks weighted equally) and its bootstrap interval.

    Both must hold the same tasks with the same number of episodes (the same layouts). Each
    resample draws, per task, episodes with replacement, the same indices for both policies.
    Returns difference, low, high, the fraction of resamples where a does not beat b
    (``p_not_better``), and the two means.
    """
    if set(a) != set(b):
        raise ValueError(f"tasks: the evaluations differ: {sorted(a)} vs {sorted(b)}")
    if resamples < 100 or not 0 < level < 1:
        raise ValueError(f"expected resamples >= 100 and 0 < level < 1, got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    diffs = np.zeros(resamples)
    for task in sorted(a):
        x, y = np.asarray(a[task], float), np.asarray(b[task], float)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{task}: expected the same episodes (layouts) in both, got {len(x)} and {len(y)}"
            )
        idx = rng.integers(0, len(x), size=(resamples, len(x)))
        diffs += (x[idx] - y[idx]).mean(axis=1)
    diffs /= len(a)
    mean_a = float(np.mean([np.mean(a[t]) for t in a]))
    mean_b = float(np.mean([np.mean(b[t]) for t in b]))
    tail = (1 - level) / 2
    return {
        "difference": mean_a - mean_b,
        "low": float(np.quantile(diffs, tail)),
        "high": float(np.quantile(diffs, 1 - tail)),
        "p_not_better": float(np.mean(diffs <= 0)),
        "mean_a": mean_a,
        "mean_b": mean_b,
    }
