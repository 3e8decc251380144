"""Stage kinds -> their runners. A stage kind is one file of this package that registers a
runner for its ``kind`` (the schema's ``STAGE_KINDS``); `f1kit.recipe.run` dispatches on it.

A runner is ``runner(ctx, stage, index, stage_dir) -> summary``: it runs stage ``index`` of
``ctx.recipe`` (or, when ``stage_dir/done.json`` exists, reloads what it left), continuing
``ctx.model``, and returns the summary it wrote to ``done.json``.

Example::

    @register("distill")
    def run_distill(ctx: RunContext, stage: DistillStage, index: int, stage_dir: Path) -> dict:
        ...
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from f1kit.recipe.stages.context import RunContext

Runner = Callable[[RunContext, Any, int, Path], dict]

RUNNERS: dict[str, Runner] = {}


def register(kind: str) -> Callable[[Runner], Runner]:
    """Register the decorated function as the runner of stages of ``kind``."""

    def add(runner: Runner) -> Runner:
        if kind in RUNNERS:
            raise ValueError(f"stage kind {kind!r}: a runner is already registered")
        RUNNERS[kind] = runner
        return runner

    return add


def runner(kind: str) -> Runner:
    """The runner registered for ``kind``."""
    if kind not in RUNNERS:
        raise KeyError(f"stage kind {kind!r}: no runner registered; registered: {sorted(RUNNERS)}")
    return RUNNERS[kind]
