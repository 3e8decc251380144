"""`run_recipe`: from nothing to a trained, evaluated F1 policy and its report (the main job).

Run directory (``recipe.output``, or ``--output``)::

    recipe.yaml                  the fully resolved recipe (defaults and --set overrides applied)
    run.log                      the log of every stage
    data/demos/                  generated Meta-World demos (LeRobotDataset v3)  [source: metaworld]
    data/codes/d<i>.npy          the frozen tokenizer's codes of every frame of dataset i
    stages/<i>-<name>/           per stage: metrics.jsonl, checkpoints/, done.json
        tokenizer.safetensors    [tokenizer stages]
        eval.json, videos/       [evaluate stages]
    policy/                      the final policy: config.json, model.safetensors, processors
    plots/                       losses.png, success.png, foresight.png
    report.md                    recipe, per-stage losses, wall times, success rates, pictures

Every stage writes ``done.json`` when it completes. ``resume=True`` skips completed stages
(reloading the weights they left), continues an interrupted training stage from its last
checkpoint (`f1kit.train.train_stage`), and regenerates nothing that exists.

The loop below sets the run up (`stages.RunContext`), hands each stage to the runner of its
``kind`` (one file per kind in `f1kit.recipe.stages`) and writes the report.
"""

import logging
import shutil
import time
from pathlib import Path

from f1kit.recipe.dataset_checks import check_datasets
from f1kit.recipe.loading import resolved_yaml
from f1kit.recipe.run_dir import check_output, check_resume
from f1kit.recipe.schema import Recipe
from f1kit.recipe.stages import RunContext, runner
from f1kit.train import RunLock, RunLockedError, all_gather_objects, init_distributed, is_main

log = logging.getLogger(__name__)


def run_recipe(
    recipe: Recipe,
    output_dir: str | Path | None = None,
    *,
    resume: bool = False,
    allow_changes: bool = False,
    progress: bool = True,
) -> Path:
    """Run every stage of ``recipe``; returns the run directory (holding ``report.md``).

    ``resume`` continues the run in the directory; it refuses a recipe that differs from the
    run's own in anything finished or started work used (``allow_changes``: stages not yet
    started may change; `f1kit.recipe.run_dir`)."""
    out = Path(output_dir) if output_dir is not None else recipe.output_dir()
    # Before anything is written: a mismatch found late leaves a half-run.
    check_datasets(recipe)
    check_output(recipe, out)
    fresh = not out.exists() or not any(out.iterdir())  # nothing of an earlier run in it
    if not fresh and not resume:
        raise FileExistsError(
            f"output: {out} is not empty; pass --resume to continue that run or "
            "--output to start a new one"
        )
    dist = init_distributed()
    lock = _lock(out)  # one writer per run directory, taken before anything is recorded
    try:
        if resume:
            check_resume(recipe, out, allow_changes, record=is_main())
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if is_main():
        (out / "recipe.yaml").write_text(resolved_yaml(recipe))
    handler = _log_to(out / "run.log") if is_main() else None
    start = time.perf_counter()
    try:
        ctx = RunContext.open(recipe, out, dist.device, resume=resume, progress=progress)
        results: list[dict] = []
        for index, stage in enumerate(recipe.stages):
            stage_dir = ctx.stage_dir(index, stage.name)
            result = runner(stage.kind)(ctx, stage, index, stage_dir)
            result.update(name=stage.name, kind=stage.kind, dir=str(stage_dir.relative_to(out)))
            results.append(result)
        if is_main():
            from f1kit.recipe.report import write_report

            seconds = time.perf_counter() - start
            write_report(out, recipe, results, seconds, ctx.model, ctx.data, ctx.window, ctx.codes)
    except BaseException:
        if handler is not None:  # closed before cleaning up: it would reopen run.log
            logging.getLogger().removeHandler(handler)
            handler.close()
            handler = None
        if fresh and is_main():
            _forget_unstarted(out)
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
        if lock is not None:
            lock.release()
    return out


def _lock(out: Path) -> RunLock | None:
    """Rank 0 makes the run directory and takes its lock; every rank learns whether it got it,
    so a refused run stops on all ranks instead of leaving the others waiting."""
    lock, refused = None, None
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        try:
            lock = RunLock(out).acquire()
        except RunLockedError as err:
            refused = (str(err.path), err.owner)
    refused = all_gather_objects(refused)[0]
    if refused is not None:
        raise RunLockedError(Path(refused[0]), refused[1])
    return lock


def _forget_unstarted(out: Path) -> None:
    """A run that failed before making anything (no demos, no stage begun) leaves nothing that
    would block a rerun (``output ... is not empty``): what it wrote is removed."""
    if (out / "stages").exists() or (out / "data" / "demos.json").exists():
        return
    for path in out.iterdir():
        if path.name == ".lock":
            continue  # released (and removed) by the lock itself
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    log.info("nothing was made in %s; removed what the failed run wrote", out)


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
