"""Expert demonstrations for Meta-World v3 tasks, written as a LeRobotDataset (DESIGN.md s8).

For each task, attempt ``k`` runs the scripted expert on the layout ``layout_seed(seed, task, k)``
until success or the step cap; only successes are kept (failures are counted) and the first
``episodes`` successful attempts, in attempt order, form the task's demos. Attempts are split into
jobs run by spawned worker processes, each job on one environment that is closed and
garbage-collected at its end (several live GL contexts in one process render black). Because a
layout depends only on (seed, task, attempt) and the kept set only on attempt order, the result is
the same for any number of workers: same seed, same bytes.

Rows follow LeRobot's convention: row ``i`` holds the observation before action ``i``.
"""

import logging
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from f1kit.data import Episode, write_dataset
from f1kit.sim.env import MetaWorldEnv, layout_seed
from f1kit.sim.expert import ScriptedExpert
from f1kit.sim.tasks import MT10, resolve_tasks

log = logging.getLogger(__name__)

FEATURE_NAMES = {
    "observation.state": ["hand_x", "hand_y", "hand_z", "gripper"],
    "action": ["delta_x", "delta_y", "delta_z", "gripper"],
}


@dataclass(frozen=True)
class DemoConfig:
    """What to generate: ``episodes`` successful demos of each task, at ``size`` px per camera."""

    tasks: tuple[str, ...] | str = MT10  # names, or "MT10" / "MT50"; stored as a tuple
    episodes: int = 10
    cameras: tuple[str, ...] = ("corner",)
    size: int = 64
    max_steps: int = 500
    seed: int = 0
    workers: int = 1
    max_attempts: int | None = None  # per task; default 2 * episodes + 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", resolve_tasks(self.tasks))
        if self.episodes < 1:
            raise ValueError(f"episodes: expected >= 1 demo per task, got {self.episodes}")
        if self.workers < 0:
            raise ValueError(f"workers: expected >= 0 (0 = one per CPU core), got {self.workers}")
        if self.seed < 0:
            raise ValueError(f"seed: expected >= 0, got {self.seed}")
        if self.max_attempts is not None and self.max_attempts < self.episodes:
            raise ValueError(
                f"max_attempts: expected >= episodes ({self.episodes}), got {self.max_attempts}"
            )

    @property
    def attempt_cap(self) -> int:
        return self.max_attempts if self.max_attempts is not None else 2 * self.episodes + 10


@dataclass
class DemoResult:
    """Kept episodes (task order, then attempt order) and per-task attempt accounting."""

    episodes: list[Episode]
    successes: dict[str, int]
    failures: dict[str, int]
    fps: int
    seconds: float
    layouts: dict[str, list[int]] = field(default_factory=dict)  # kept attempt indices per task

    @property
    def frames(self) -> int:
        return sum(ep.length for ep in self.episodes)


def run_expert_episode(
    env: MetaWorldEnv, expert: ScriptedExpert, seed: int
) -> tuple[bool, Episode]:
    """One expert rollout on layout ``seed``; returns (success, the recorded episode)."""
    obs, _ = env.reset(seed)
    expert.reset()
    rows: dict[str, list[np.ndarray]] = {}
    success = False
    for _ in range(env.max_steps):
        action = np.clip(expert.select_action(obs), -1.0, 1.0).astype(np.float32)
        for key, value in obs.items():
            if key != "task":
                rows.setdefault(key, []).append(value)
        rows.setdefault("action", []).append(action)
        obs, _, success, truncated, _ = env.step(action)
        if success or truncated:
            break
    arrays = {k: np.stack(v) for k, v in rows.items()}
    return success, Episode(env.instruction, arrays)


def _run_job(job: tuple) -> tuple[str, list[tuple[int, Episode | None]], int]:
    """Worker: attempts ``indices`` of one task on a single environment."""
    task, indices, cameras, size, max_steps, seed = job
    out: list[tuple[int, Episode | None]] = []
    with MetaWorldEnv(task, cameras=cameras, size=size, max_steps=max_steps) as env:
        expert = ScriptedExpert(task)
        fps = env.fps
        for k in indices:
            ok, ep = run_expert_episode(env, expert, layout_seed(seed, task, k))
            out.append((k, ep if ok else None))
    return task, out, fps


def generate_demos(
    config: DemoConfig,
    out: Path | str | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> DemoResult:
    """Generate the demos of ``config``; with ``out``, also write them as a LeRobotDataset there.

    Example (the CLI's ``f1kit demos``)::

        config = DemoConfig(tasks="MT10", episodes=30, size=64, workers=0)
        result = generate_demos(config, "data/mt10")
    """
    start = time.perf_counter()
    workers = config.workers or os.cpu_count() or 1
    results: dict[str, dict[int, Episode | None]] = {t: {} for t in config.tasks}
    fps = 0
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        with Progress(disable=not progress) as bar:
            bar_id = bar.add_task("expert demos", total=len(config.tasks) * config.episodes)
            while True:
                jobs = _next_jobs(config, results, workers)
                if not jobs:
                    break
                runs = pool.imap_unordered(_run_job, jobs) if pool else map(_run_job, jobs)
                for task, attempts, job_fps in runs:
                    fps = job_fps
                    results[task].update(attempts)
                    bar.advance(bar_id, sum(ep is not None for _, ep in attempts))
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    episodes, successes, failures, layouts = [], {}, {}, {}
    for task, attempts in results.items():
        kept = [k for k in sorted(attempts) if attempts[k] is not None][: config.episodes]
        episodes += [attempts[k] for k in kept]
        successes[task] = sum(ep is not None for ep in attempts.values())
        failures[task] = len(attempts) - successes[task]
        layouts[task] = kept
        if len(kept) < config.episodes:
            log.warning(
                "%s: only %d of %d demos after %d attempts (%d failures)",
                task,
                len(kept),
                config.episodes,
                len(attempts),
                failures[task],
            )
    result = DemoResult(episodes, successes, failures, fps, time.perf_counter() - start, layouts)
    log.info(
        "%d demos, %d frames, %d failures in %.1f s",
        len(episodes),
        result.frames,
        sum(failures.values()),
        result.seconds,
    )
    if out is not None:
        write_dataset(
            out, episodes, fps=fps, robot_type="sawyer", names=FEATURE_NAMES, overwrite=overwrite
        )
    return result


def _next_jobs(config: DemoConfig, results: dict[str, dict], workers: int) -> list[tuple]:
    """Attempts still needed per task (one per missing demo, up to the cap), split into jobs."""
    jobs = []
    for task, attempts in results.items():
        have = sum(ep is not None for ep in attempts.values())
        need = min(config.episodes - have, config.attempt_cap - len(attempts))
        if need <= 0:
            continue
        todo = list(range(len(attempts), len(attempts) + need))
        # Enough jobs to keep every worker busy, few enough to amortise env construction.
        size = max(1, math.ceil(len(todo) * len(config.tasks) / (2 * workers)))
        size = min(size, len(todo))
        for i in range(0, len(todo), size):
            jobs.append(
                (
                    task,
                    todo[i : i + size],
                    config.cameras,
                    config.size,
                    config.max_steps,
                    config.seed,
                )
            )
    return jobs
