"""What a train stage measures while it trains (its ``evaluate:`` section, evaluation_config.py).

`stage_evaluation` turns the section into the trainer's `PeriodicEval`: at each evaluation the
model is scored on

* ``success``, ``success/<task>``: closed-loop Meta-World rollouts on the section's unseen layouts;
* ``val_loss``, ``val/<metric>``: the stage's own objective on held-out demo windows, a fixed set
  of batches drawn with a fixed generator (the same numbers at every evaluation);
* for Generation models, the foresight drawn on held-out windows exactly as the policy draws it
  (``model.predict``): ``foresight/accuracy_scale_<k>`` (fraction of tokens equal to the true
  future's), and against the true frame at +h (`foresight.FrameQuality`: the current frame is the
  reference for what moves) ``foresight/psnr``, ``foresight/motion_mse`` (beside
  ``foresight/copy_motion_mse``, the current frame's error there), also per task as
  ``foresight/<task>/...``: with ``success/<task>``, the link between foresight quality and
  acting that the report plots across checkpoints and tasks.
"""

import time

import numpy as np
import torch
from torch import Tensor

from f1kit.data import WindowedDataset
from f1kit.model import F1, F1Policy
from f1kit.recipe.evaluation_config import StageEvaluation
from f1kit.recipe.schema import Recipe, TrainStage
from f1kit.sim.tasks import task_of
from f1kit.train import PeriodicEval
from foresight import FrameQuality

VALIDATION_SEED = 1234  # the generator of the validation pass: fixed, so evaluations compare


def stage_evaluation(
    model: F1,
    stage: TrainStage,
    recipe: Recipe,
    windows: WindowedDataset,
    held: np.ndarray,
    processors: tuple,
    progress: bool = False,
) -> PeriodicEval:
    """The trainer's periodic evaluation for ``stage`` (which must have ``evaluate``)."""
    spec = stage.evaluate
    assert spec is not None
    objective = stage.objective(recipe.model)
    rows = np.flatnonzero(held)

    def run(step: int) -> dict[str, float]:
        began = time.perf_counter()
        model.eval()
        scores: dict[str, float] = {}
        if spec.episodes:
            scores |= _rollouts(model, spec, recipe, processors, progress)
        if len(rows):
            with torch.no_grad():
                scores |= _validation_loss(model, windows, rows, spec, stage, objective)
                if model.generator is not None and spec.foresight_samples:
                    scores |= _foresight(model, windows, rows, spec, recipe)
        scores["eval_seconds"] = time.perf_counter() - began
        return scores

    return PeriodicEval(
        every=spec.every,
        run=run,
        select=spec.select,
        minimize=spec.select == "val_loss",
        patience=spec.patience,
        # Few episodes tie often: then the lower validation loss picks.
        tiebreak="val_loss" if spec.select == "success" and len(rows) else None,
    )


def _rollouts(model, spec: StageEvaluation, recipe: Recipe, processors, progress) -> dict:
    from f1kit.sim import EvalConfig, evaluate

    policy = recipe_policy(model, recipe, processors, seed=spec.seed)
    config = EvalConfig(
        tasks=spec.tasks if spec.tasks is not None else recipe.data.tasks,
        episodes=spec.episodes,
        max_steps=spec.max_steps,
        seed=spec.seed,
        cameras=tuple(recipe.data.cameras),
        size=recipe.data.image_size,
    )
    report = evaluate(policy, config, progress=progress)
    scores = {"success": report.mean_rate}
    scores |= {f"success/{task}": r.rate for task, r in report.tasks.items()}
    return scores


def recipe_policy(model: F1, recipe: Recipe, processors: tuple, **options) -> F1Policy:
    """The closed-loop policy of ``model`` as the recipe's data shapes it: its cameras, history
    offsets and the pre/post-processors; ``options`` go to `F1Policy` (seed, embodiment, ...)."""
    pre, post = processors
    return F1Policy(
        model,
        cameras=recipe.data.cameras,
        preprocessor=pre,
        postprocessor=post,
        history_offsets=recipe.data.history,
        **options,
    )


def _spread(rows: np.ndarray, n: int) -> np.ndarray:
    """``n`` held-out rows spread evenly over all of them (so over every task's episodes)."""
    if n >= len(rows):
        return rows
    return rows[np.linspace(0, len(rows) - 1, n).round().astype(int)]


def _batch(windows: WindowedDataset, rows: np.ndarray, device: torch.device) -> dict:
    batch = torch.utils.data.default_collate([windows[int(i)] for i in rows])
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _validation_loss(model, windows, rows, spec, stage, objective) -> dict[str, float]:
    device = next(model.parameters()).device
    picks = _spread(rows, spec.validation_batches * stage.batch_size)
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    totals: dict[str, float] = {}
    batches = np.array_split(picks, max(1, int(np.ceil(len(picks) / stage.batch_size))))
    for part in batches:
        loss, metrics = model(_batch(windows, part, device), generator, objective=objective)
        for key, value in {"loss": loss, **metrics}.items():
            name = "val_loss" if key == "loss" else f"val/{key}"
            totals[name] = totals.get(name, 0.0) + float(value) * len(part) / len(picks)
    return totals


def _unit(frames: np.ndarray) -> Tensor:
    """uint8 [n, H, W, 3] -> float [n, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _task_name(sentence: str) -> str:
    return task_of(sentence) or sentence  # Meta-World's name, else the instruction itself


def _foresight(model, windows, rows, spec, recipe: Recipe) -> dict[str, float]:
    device = next(model.parameters()).device
    picks = _spread(rows, spec.foresight_samples)
    batch = _batch(windows, picks, device)
    pred = model.predict(
        batch["images"],
        batch["task"],
        batch["state"],
        batch["history_codes"],
        generator=torch.Generator(device=device).manual_seed(VALIDATION_SEED),
    )
    truth = model.split_codes(batch["foresight_codes"])
    scores = {
        f"foresight/accuracy_scale_{k + 1}": float((p == t).float().mean())
        for k, (p, t) in enumerate(zip(pred.foresight, truth, strict=False))
    }
    key = recipe.data.image_keys[model.config.generation.camera]
    pairs = np.stack([windows.frames_at(int(i), key, [0, recipe.data.foresight]) for i in picks])
    now_t, future_t = _unit(pairs[:, 0]), _unit(pairs[:, 1])
    guess = _unit(model.decode_foresight(pred.foresight).cpu().numpy())
    guess_t = torch.nn.functional.interpolate(
        guess, size=future_t.shape[-2:], mode="bilinear", antialias=True
    )
    tasks = np.asarray([_task_name(t) for t in batch["task"]])
    groups = [("", np.ones(len(picks), dtype=bool))]
    groups += [(f"{t}/", tasks == t) for t in dict.fromkeys(tasks.tolist())]
    for prefix, mask in groups:
        m = torch.from_numpy(mask)
        q = FrameQuality.of(guess_t[m], future_t[m], now_t[m])
        scores[f"foresight/{prefix}psnr"] = q.psnr
        scores[f"foresight/{prefix}motion_mse"] = q.motion_mse
        # The no-foresight reference: the current frame standing in for the future one.
        copy = FrameQuality.of(now_t[m], future_t[m], now_t[m])
        scores[f"foresight/{prefix}copy_motion_mse"] = copy.motion_mse
    return scores
