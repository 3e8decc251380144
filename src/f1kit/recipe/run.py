"""`run_recipe`: from nothing to a trained, evaluated F1 policy and its report (the main job).

Run directory (``recipe.output``, or ``--output``)::

    recipe.yaml                  the fully resolved recipe (defaults and --set overrides applied)
    run.log                      the log of every stage
    data/demos/                  generated Meta-World demos (LeRobotDataset v3)  [source: metaworld]
    data/codes.npz               the frozen tokenizer's codes of every training frame
    stages/<i>-<name>/           per stage: metrics.jsonl, checkpoints/, done.json
        tokenizer.safetensors    [tokenizer stages]
        eval.json, videos/       [evaluate stages]
    policy/                      the final policy: config.json, model.safetensors, processors
    plots/                       losses.png, success.png, foresight.png
    report.md                    recipe, per-stage losses, wall times, success rates, pictures

Every stage writes ``done.json`` when it completes. ``resume=True`` skips completed stages
(reloading the weights they left), continues an interrupted training stage from its last
checkpoint (`f1kit.train.train_stage`), and regenerates nothing that exists.
"""

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from f1kit.data import WindowedDataset, episode_ids, held_out_rows
from f1kit.model import F1
from f1kit.recipe.data import (
    check_eval_embodiments,
    datasets,
    frame_codes,
    generation_key,
    processors,
)
from f1kit.recipe.dataset_checks import check_datasets
from f1kit.recipe.loading import resolved_yaml
from f1kit.recipe.schema import EvalStage, Recipe, TokenizerStage, TrainStage
from f1kit.recipe.stage_eval import recipe_policy, stage_evaluation
from f1kit.train import (
    best_weights,
    init_distributed,
    is_main,
    load_latest,
    load_model_weights,
    train_stage,
)
from foresight import MultiScaleVQVAE, tokenizer_quality, train_tokenizer

log = logging.getLogger(__name__)

DONE = "done.json"


def run_recipe(
    recipe: Recipe,
    output_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run every stage of ``recipe``; returns the run directory (holding ``report.md``)."""
    out = Path(output_dir) if output_dir is not None else recipe.output_dir()
    check_datasets(recipe)  # before anything is written: a mismatch found late leaves a half-run
    dist = init_distributed()
    if is_main():
        if out.exists() and any(out.iterdir()) and not resume:
            raise FileExistsError(
                f"output: {out} is not empty; pass --resume to continue that run or "
                "--output to start a new one"
            )
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(resolved_yaml(recipe))
    handler = _log_to(out / "run.log") if is_main() else None
    start = time.perf_counter()
    try:
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        device = _device(recipe.device, dist.device)
        torch.manual_seed(recipe.seed)
        data = datasets(recipe, out, progress)
        held = held_out_rows(data, recipe.data.validation)
        model = F1(recipe.model)
        _load_tokenizer_weights(model)
        model.to(device)
        window = recipe.data.window_config()
        preprocessor, postprocessor = processors(data, recipe)
        check_eval_embodiments(recipe, preprocessor)
        codes: list[np.ndarray] | None = None
        results: list[dict] = []
        for index, stage in enumerate(recipe.stages):
            stage_dir = out / "stages" / f"{index}-{stage.name}"
            stage_dir.mkdir(parents=True, exist_ok=True)
            done = stage_dir / DONE
            if isinstance(stage, TokenizerStage):
                result = _tokenizer_stage(
                    model, stage, index, data, held, recipe, stage_dir, done, progress
                )
                codes = None  # the codes follow the tokenizer
            elif isinstance(stage, TrainStage):
                if model.tokenizer is not None and codes is None:
                    codes = frame_codes(model, data, generation_key(recipe), out, progress)
                windows = WindowedDataset(data, window, codes=codes)
                dataset = _stage_data(windows, stage, held)
                evaluation = None
                if stage.evaluate is not None:
                    evaluation = stage_evaluation(
                        model, stage, recipe, windows, held, (preprocessor, postprocessor)
                    )
                result = _train_stage(
                    model,
                    stage,
                    index,
                    dataset,
                    recipe,
                    stage_dir,
                    done,
                    resume,
                    progress,
                    evaluation,
                )
                if is_main():
                    policy = recipe_policy(model, recipe, (preprocessor, postprocessor))
                    policy.save_pretrained(out / "policy")
            else:
                assert isinstance(stage, EvalStage)
                result = _eval_stage(
                    model, stage, recipe, stage_dir, done, preprocessor, postprocessor, progress
                )
            result.update(name=stage.name, kind=stage.kind, dir=str(stage_dir.relative_to(out)))
            results.append(result)
        if is_main():
            from f1kit.recipe.report import write_report

            write_report(
                out, recipe, results, time.perf_counter() - start, model, data, window, codes
            )
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
    return out


def _load_tokenizer_weights(model: F1) -> None:
    """``model.generation.tokenizer.path``: trained tokenizer weights (a ``.safetensors`` file
    from ``MultiScaleVQVAE.save``, or a directory holding ``tokenizer.safetensors``)."""
    gen = model.config.generation
    if gen is None or gen.tokenizer.path is None or model.tokenizer is None:
        return
    path = Path(gen.tokenizer.path)
    if path.is_dir():
        path = path / "tokenizer.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"model.generation.tokenizer.path: {path} not found")
    _load_tokenizer(model, path, "model.generation.tokenizer.path")


def _load_tokenizer(model: F1, path: Path, source: str) -> None:
    """Copy the tokenizer saved at ``path`` into the model, refusing another configuration."""
    loaded = MultiScaleVQVAE.load(path)
    if loaded.config != model.tokenizer.config:
        raise ValueError(
            f"{source}: {path} holds a tokenizer with config "
            f"{loaded.config}, the recipe describes {model.tokenizer.config}"
        )
    model.tokenizer.load_state_dict(loaded.state_dict())


# ---- stages ----------------------------------------------------------------------------------


class StageData(torch.utils.data.Subset):
    """The windows of a train stage: the recipe's data, or the stage's ``tasks``, less the
    held-out episodes (``data.validation``)."""

    def __init__(self, windows: WindowedDataset, rows: np.ndarray) -> None:
        super().__init__(windows, rows.tolist())
        self.task_groups = windows.groups("task")[rows]


def _stage_data(windows: WindowedDataset, stage: TrainStage, held: np.ndarray) -> StageData:
    groups = windows.groups("task")
    wanted = stage.task_sentences()
    if wanted is None:
        return StageData(windows, np.flatnonzero(~held))
    keep = [i for i, task in enumerate(windows.tasks) if task in wanted]
    if len(keep) != len(wanted):
        raise ValueError(
            f"stages.{stage.name}.tasks: {sorted(wanted)} not all found among the data's "
            f"tasks {windows.tasks}"
        )
    return StageData(windows, np.flatnonzero(np.isin(groups, keep) & ~held))


def _tokenizer_stage(model, stage, index, data, held, recipe, stage_dir, done, progress) -> dict:
    weights = stage_dir / "tokenizer.safetensors"
    if done.exists() and weights.exists():
        _load_tokenizer(model, weights, f"stages.{stage.name}")
        return json.loads(done.read_text())
    began = time.perf_counter()
    key = generation_key(recipe)
    frames = np.concatenate([ds.frames(key, np.arange(len(ds))) for ds in data])
    images = torch.from_numpy(frames[~held]).permute(0, 3, 1, 2)
    config = stage.train_config(recipe.seed, index)
    rng = torch.Generator().manual_seed(config.seed)
    tokenizer = model.tokenizer
    device = next(tokenizer.parameters()).device

    def batches():
        while True:
            idx = torch.randint(0, len(images), (stage.batch_size,), generator=rng)
            yield model.tokenizer_images(images[idx].to(device))

    tokenizer.requires_grad_(True).train()
    metrics = train_tokenizer(tokenizer, batches(), config=config, progress=progress and is_main())
    tokenizer.requires_grad_(False).eval()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every rank trained the same tokenizer from the same seed, but GPU kernels need not be
        # bit-reproducible across devices: rank 0's weights define the codes for all.
        for tensor in tokenizer.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    with (stage_dir / "metrics.jsonl").open("w") as f:
        for step, m in enumerate(metrics, start=1):
            f.write(json.dumps({**m, "step": step}) + "\n")
    if is_main():
        tokenizer.save(weights)
    result = {
        "steps": stage.steps,
        "wall_seconds": time.perf_counter() - began,
        "final": metrics[-1] if metrics else {},
    }
    if held.any():
        result["quality"] = _held_out_quality(model, data, held, frames, recipe)
        log.info("tokenizer %s on held-out frames: %s", stage.name, result["quality"])
    done.write_text(json.dumps(result, indent=2))
    return result


def _held_out_quality(model, data, held, frames, recipe) -> dict:
    """``foresight.tokenizer_quality`` on the held-out episodes at the data's image size, at the
    foresight horizon: the copy of the current frame, the first ``generation.scales`` scales
    (what F1 generates) and all scales."""
    episodes = episode_ids(data)
    images = torch.from_numpy(frames[held]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    counts = sorted({recipe.model.generation.scales, len(model.tokenizer.config.scales)})
    scores = tokenizer_quality(
        model.tokenizer, images, torch.from_numpy(episodes[held]), recipe.data.foresight, counts
    )
    return {label: q.as_dict() for label, q in scores.items()}


def _train_stage(
    model, stage, index, dataset, recipe, stage_dir, done, resume, progress, evaluation
) -> dict:
    if done.exists():  # completed earlier: its final (or best) weights continue the run
        _load_result_weights(model, stage_dir)
        return json.loads(done.read_text())
    model.set_trainable(stage.train)
    objective = stage.objective(recipe.model)
    groups = model.param_groups(stage.lr)

    def loss_fn(net: nn.Module, batch: dict, generator: torch.Generator):
        return net(batch, generator, objective=objective)

    weights = None
    if recipe.data.weighting == "task":  # every task drawn equally often
        groups_of = np.unique(dataset.task_groups, return_inverse=True)[1]
        weights = 1.0 / np.bincount(groups_of)[groups_of]
    result = train_stage(
        model,
        loss_fn,
        dataset,
        stage.settings(recipe.seed, index, samples=len(dataset)),
        stage_dir,
        param_groups=groups,
        collate_fn=None,
        resume=resume,
        progress=progress,
        sample_weights=weights,
        name=stage.name,
        evaluation=evaluation,
    )
    summary = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "wall_seconds": result.wall_seconds,
        "checkpoint": str(result.checkpoint),
    }
    best = _load_result_weights(model, stage_dir) if evaluation is not None else None
    if best is not None:
        summary["best"] = best
    if is_main():
        done.write_text(json.dumps(summary, indent=2))
    model.set_trainable(model.experts)
    return summary


def _load_result_weights(model: F1, stage_dir: Path) -> dict | None:
    """Load a finished train stage's result into ``model``: the best weights its evaluation
    kept (returning their record), else its last checkpoint (returning None)."""
    kept = best_weights(stage_dir)
    if kept is not None:
        path, record = kept
        model.load_state_dict(load_model_weights(path, next(model.parameters()).device))
        log.info("%s: continuing from the best weights (step %d)", stage_dir.name, record["step"])
        return record
    ckpt = load_latest(stage_dir)
    if ckpt is not None:
        ckpt.load_model(model)
    return None


def _eval_stage(
    model, stage, recipe, stage_dir, done, preprocessor, postprocessor, progress
) -> dict:
    if done.exists():
        return json.loads(done.read_text())
    if not is_main():
        return {}
    from f1kit.sim import evaluate

    began = time.perf_counter()
    policy = recipe_policy(
        model,
        recipe,
        (preprocessor, postprocessor),
        seed=stage.seed,
        decode_foresight=stage.decodes_foresight(recipe.model),
        embodiment=stage.embodiment,
    )
    config = stage.eval_config(recipe.data, stage_dir / "videos")
    report = evaluate(policy, config, progress=progress)
    result = {"wall_seconds": time.perf_counter() - began, **report.as_dict()}
    (stage_dir / "eval.json").write_text(json.dumps(result, indent=2))
    done.write_text(json.dumps(result, indent=2))
    model.train()
    return result


# ---- helpers ---------------------------------------------------------------------------------


def _device(name: str, dist_device: torch.device | None) -> torch.device:
    if dist_device is not None and dist_device.type == "cuda":
        return dist_device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: the recipe asks for cuda, but torch sees no CUDA device")
    return torch.device(name)


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
