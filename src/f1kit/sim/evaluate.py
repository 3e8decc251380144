"""Closed-loop evaluation on held-out Meta-World layouts, with Wilson intervals and videos.

Episode ``e`` of a task runs on ``layout_seed(seed, task, e)``; use an evaluation ``seed`` different
from the demos' (defaults: demos 0, evaluation 10000) and the layouts are unseen in training.
A policy is any object with ``reset()`` and ``select_action(observation) -> action`` (4 floats,
numpy or torch), called once per env step with the observations of ``MetaWorldEnv`` (`F1Policy`
counts its frame history in these calls; ``reset()`` starts each episode); or a callable
``task -> policy`` (e.g. the per-task scripted experts). A policy that also has
``predicted_frame()`` returning a uint8 ``(H, W, 3)`` image (or None) gets it recorded side by
side with the camera.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from rich.progress import Progress

from f1kit.sim.env import MetaWorldEnv, layout_seed
from f1kit.sim.recording import write_rollout
from f1kit.sim.tasks import resolve_tasks

log = logging.getLogger(__name__)


@runtime_checkable
class Policy(Protocol):
    def reset(self) -> None: ...

    def select_action(self, observation: dict[str, object]) -> object: ...


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (z = 1.96: 95 %); sound at 0/n and n/n."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(
            f"wilson_interval: expected 0 <= successes <= n and n >= 1, got {successes}/{n}"
        )
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # The bounds are exactly 0 and 1 at k = 0 and k = n; rounding must not pull them inside.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class EvalConfig:
    """``episodes`` held-out layouts per task, ``max_steps`` each; ``record`` videos per task."""

    tasks: tuple[str, ...] | str = ("reach-v3",)  # names, or "MT10" / "MT50"
    episodes: int = 10
    max_steps: int = 200
    seed: int = 10_000
    cameras: tuple[str, ...] = ("corner",)
    size: int = 64
    record: int = 0
    video_dir: Path | str | None = None
    z: float = 1.96

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", resolve_tasks(self.tasks))
        if self.episodes < 1:
            raise ValueError(f"episodes: expected >= 1 per task, got {self.episodes}")
        if not 0 <= self.record <= self.episodes:
            raise ValueError(f"record: expected 0..episodes ({self.episodes}), got {self.record}")
        if self.record and self.video_dir is None:
            raise ValueError("video_dir: needed when record > 0")
        if self.record and not self.cameras:
            raise ValueError("cameras: recording needs at least one camera")


@dataclass
class TaskResult:
    task: str
    successes: int
    episodes: int
    ci_low: float
    ci_high: float
    mean_steps: float  # over all episodes; failures count max_steps
    videos: list[str] = field(default_factory=list)
    # Per episode, in order: episode e ran on layout_seed(seed, task, e), so two policies
    # evaluated with one seed are paired layout by layout (f1kit.sim.compare).
    outcomes: list[bool] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.successes / self.episodes


@dataclass
class EvalReport:
    tasks: dict[str, TaskResult]
    seconds: float

    @property
    def mean_rate(self) -> float:
        return float(np.mean([r.rate for r in self.tasks.values()]))

    def as_dict(self) -> dict:
        per_task = {t: {**asdict(r), "rate": r.rate} for t, r in self.tasks.items()}
        return {"mean_rate": self.mean_rate, "seconds": self.seconds, "tasks": per_task}


def _to_action(action: object) -> np.ndarray:
    if hasattr(action, "detach"):
        action = action.detach().cpu().numpy()
    return np.asarray(action, dtype=np.float32).reshape(-1)


def evaluate(
    policy: Policy | Callable[[str], Policy], config: EvalConfig, *, progress: bool = True
) -> EvalReport:
    """Run ``policy`` on ``config.episodes`` held-out layouts of every task.

    Example (the CLI's ``f1kit eval``)::

        report = evaluate(ScriptedExpert, EvalConfig(tasks=("reach-v3",), cameras=()))
        report.tasks["reach-v3"].rate, report.tasks["reach-v3"].ci_low
    """
    start = time.perf_counter()
    results = {}
    with Progress(disable=not progress) as bar:
        bar_id = bar.add_task("evaluation", total=len(config.tasks) * config.episodes)
        for task in config.tasks:
            is_instance = isinstance(policy, Policy) and not isinstance(policy, type)
            agent = policy if is_instance else policy(task)
            if not isinstance(agent, Policy):
                raise TypeError(
                    f"policy for {task}: expected reset() and select_action(), got {agent!r}"
                )
            successes, steps, videos, outcomes = 0, [], [], []
            with MetaWorldEnv(task, config.cameras, config.size, config.max_steps) as env:
                for e in range(config.episodes):
                    record = e < config.record
                    ok, n, frames, second = _episode(
                        env, agent, layout_seed(config.seed, task, e), record
                    )
                    successes += ok
                    steps.append(n)
                    outcomes.append(bool(ok))
                    if record:
                        path = Path(config.video_dir) / f"{task}_ep{e:03d}_{'ok' if ok else 'fail'}"
                        videos.append(str(write_rollout(frames, path, env.fps, second)))
                    bar.advance(bar_id)
            lo, hi = wilson_interval(successes, config.episodes, config.z)
            results[task] = TaskResult(
                task, successes, config.episodes, lo, hi, float(np.mean(steps)), videos, outcomes
            )
            log.info("%s: %d/%d [%.2f, %.2f]", task, successes, config.episodes, lo, hi)
    return EvalReport(results, time.perf_counter() - start)


def _episode(
    env: MetaWorldEnv, agent: Policy, seed: int, record: bool
) -> tuple[bool, int, np.ndarray | None, np.ndarray | None]:
    obs, _ = env.reset(seed)
    agent.reset()
    camera = f"observation.images.{env.cameras[0]}" if env.cameras else None
    frames, second = [], []
    predicted = getattr(agent, "predicted_frame", None)
    for step in range(1, env.max_steps + 1):
        action = _to_action(agent.select_action(obs))
        if record:
            frames.append(obs[camera])
            guess = predicted() if predicted is not None else None
            second.append(guess if guess is not None else np.zeros_like(obs[camera]))
        obs, _, success, truncated, _ = env.step(action)
        if success:
            return (
                True,
                step,
                _stack(frames, record),
                _stack(second, record and predicted is not None),
            )
        if truncated:
            break
    return (
        False,
        env.max_steps,
        _stack(frames, record),
        _stack(second, record and predicted is not None),
    )


def _stack(frames: list[np.ndarray], keep: bool) -> np.ndarray | None:
    return np.stack(frames) if keep and frames else None
