"""Expert demonstrations for Meta-World v3 tasks, written as a LeRobotDataset (DESIGN.md s8).

For each task, attempt ``k`` runs the scripted expert on the layout ``layout_seed(seed, task, k)``
until success or the step cap; only successes are kept (failures are counted) and the first
``episodes`` successful attempts, in attempt order, form the task's demos. Attempts are split into
jobs run by spawned worker processes, each job on one environment that is closed and
garbage-collected at its end (several live GL contexts in one process render black). Because a
layout depends only on (seed, task, attempt) and the kept set only on attempt order, the result is
the same for any number of workers: same seed, same bytes.

Rows follow LeRobot's convention: row ``i`` holds the observation before action ``i``. When writing
a dataset, workers spill each kept episode to an .npz file in a scratch folder next to ``out`` and
the writer streams them back in order, so memory holds one episode at a time, not the dataset.
"""

import logging
import math
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from rich.progress import Progress

from f1kit.data import Episode, has_video_codec, write_dataset
from f1kit.data.writer import check_overwritable
from f1kit.sim.env import MetaWorldEnv, layout_seed
from f1kit.sim.expert import ScriptedExpert
from f1kit.sim.tasks import MT10, instruction, resolve_tasks

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
    """Per-task attempt accounting, and the kept episodes (task order, then attempt order) when
    no output folder was given (with one, episodes stream to disk and ``episodes`` is empty)."""

    episodes: list[Episode]
    frames: int
    successes: dict[str, int]
    failures: dict[str, int]
    fps: int
    seconds: float
    layouts: dict[str, list[int]] = field(default_factory=dict)  # kept attempt indices per task


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


Kept = Episode | Path  # an episode in memory, or spilled to an .npz file in the scratch folder


def _run_job(job: tuple) -> tuple[str, list[tuple[int, Kept | None, int]], int]:
    """Worker: attempts ``indices`` of one task on a single environment.

    Successes come back as episodes, or with a ``scratch`` folder as .npz files there, so the
    parent never holds more than one episode's frames when writing a dataset.
    """
    task, indices, cameras, size, max_steps, seed, scratch = job
    out: list[tuple[int, Kept | None, int]] = []
    with MetaWorldEnv(task, cameras=cameras, size=size, max_steps=max_steps) as env:
        expert = ScriptedExpert(task)
        fps = env.fps
        for k in indices:
            ok, ep = run_expert_episode(env, expert, layout_seed(seed, task, k))
            kept: Kept | None = None
            if ok and scratch is None:
                kept = ep
            elif ok:
                kept = Path(scratch) / f"{task}-{k:06d}.npz"
                np.savez(kept, **ep.arrays)
            out.append((k, kept, ep.length))
    return task, out, fps


def _load(kept: Kept, task: str) -> Episode:
    if isinstance(kept, Episode):
        return kept
    with np.load(kept) as z:
        arrays = {key: z[key] for key in z.files}
    kept.unlink()
    return Episode(instruction(task), arrays)


def generate_demos(
    config: DemoConfig,
    out: Path | str | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    images: Literal["png", "video"] = "png",
) -> DemoResult:
    """Generate the demos of ``config``; with ``out``, also write them as a LeRobotDataset there.

    ``images`` is how ``write_dataset`` stores the cameras: PNG in the data parquet (lossless, the
    same bytes for the same seed) or one MP4 per camera (``"video"``, ~30x smaller, needs PyAV).

    Example (the CLI's ``f1kit demos``)::

        config = DemoConfig(tasks="MT10", episodes=30, size=64, workers=0)
        result = generate_demos(config, "data/mt10")
    """
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        check_overwritable(Path(out), overwrite)  # before any simulation, as the writer would
    # Checked before any simulation rather than by the writer at the end.
    if images not in ("png", "video"):
        raise ValueError(f"images: expected 'png' or 'video', got {images!r}")
    if images == "video" and config.cameras and not has_video_codec():
        raise ValueError("images: 'video' needs PyAV with the libx264 encoder (pip install av)")
    start = time.perf_counter()
    workers = config.workers or os.cpu_count() or 1
    results: dict[str, dict[int, tuple[Kept | None, int]]] = {t: {} for t in config.tasks}
    fps = 0
    scratch = None
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(prefix=".f1kit-demos-", dir=Path(out).parent)
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        with Progress(disable=not progress) as bar:
            bar_id = bar.add_task("expert demos", total=len(config.tasks) * config.episodes)
            while True:
                jobs = _next_jobs(config, results, workers, scratch and scratch.name)
                if not jobs:
                    break
                runs = pool.imap_unordered(_run_job, jobs) if pool else map(_run_job, jobs)
                for task, attempts, job_fps in runs:
                    fps = job_fps
                    results[task].update({k: (kept, n) for k, kept, n in attempts})
                    bar.advance(bar_id, sum(kept is not None for _, kept, _ in attempts))
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    ordered, frames, successes, failures, layouts = [], 0, {}, {}, {}
    for task, attempts in results.items():
        kept = [k for k in sorted(attempts) if attempts[k][0] is not None][: config.episodes]
        ordered += [(attempts[k][0], task) for k in kept]
        frames += sum(attempts[k][1] for k in kept)
        successes[task] = sum(item is not None for item, _ in attempts.values())
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
    episodes = [] if out is not None else [_load(item, task) for item, task in ordered]
    seconds = time.perf_counter() - start
    result = DemoResult(episodes, frames, successes, failures, fps, seconds, layouts)
    log.info(
        "%d demos, %d frames, %d failures in %.1f s",
        len(ordered),
        frames,
        sum(failures.values()),
        seconds,
    )
    if out is not None:
        try:
            stream = (_load(item, task) for item, task in ordered)
            write_dataset(
                out,
                stream,
                fps=fps,
                images=images,
                robot_type="sawyer",
                names=FEATURE_NAMES,
                overwrite=overwrite,
            )
        finally:
            scratch.cleanup()
    return result


def _next_jobs(
    config: DemoConfig, results: dict[str, dict], workers: int, scratch: str | None
) -> list[tuple]:
    """Attempts still needed per task (one per missing demo, up to the cap), split into jobs."""
    jobs = []
    for task, attempts in results.items():
        have = sum(item is not None for item, _ in attempts.values())
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
                    scratch,
                )
            )
    return jobs
