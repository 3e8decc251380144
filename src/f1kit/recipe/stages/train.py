"""``kind: train``: one F1 training stage (`f1kit.train.train_stage`) over its windows, from the
weights the previous stage left; the policy is saved after it."""

import json
from pathlib import Path

from torch import nn

from f1kit.global_batch import GlobalBatch
from f1kit.recipe.schema import TrainStage
from f1kit.recipe.stage_eval import recipe_policy, stage_evaluation
from f1kit.recipe.stages.context import DONE, RunContext
from f1kit.recipe.stages.registry import register
from f1kit.recipe.stages.train_data import sample_weights, stage_data
from f1kit.recipe.stages.weights import load_init, load_result_weights
from f1kit.train import is_main, train_stage


@register("train")
def run_train(ctx: RunContext, stage: TrainStage, index: int, stage_dir: Path) -> dict:
    """Train (or, done earlier, reload the result of) ``stage``, then save the policy."""
    model, recipe = ctx.model, ctx.recipe
    windows = ctx.windows()
    dataset = stage_data(windows, stage, ctx.held, recipe.data.group_datasets(stage.data))
    evaluation = None
    if stage.evaluate is not None:
        evaluation = stage_evaluation(model, stage, recipe, windows, ctx.held, ctx.processors)
    done = stage_dir / DONE
    if done.exists():  # completed earlier: its final (or best) weights continue the run
        summary = json.loads(done.read_text())
        load_result_weights(model, stage_dir, final_step=summary["steps"])
    else:
        summary = _train(ctx, stage, index, stage_dir, dataset, evaluation)
    if is_main():
        policy = recipe_policy(model, recipe, ctx.processors)
        policy.save_pretrained(ctx.out / "policy")
        # Done only once its policy is written: a crash in between reruns the save on resume.
        done.write_text(json.dumps(summary, indent=2))
    return summary


def _train(ctx: RunContext, stage: TrainStage, index, stage_dir, dataset, evaluation) -> dict:
    model, recipe = ctx.model, ctx.recipe
    if stage.init_from is not None:  # a resumed stage then loads its checkpoint over it
        load_init(model, recipe, stage.init_from, f"stages.{index}.init_from", stage=True)
    model.set_trainable(stage.train)
    objective = stage.objective(recipe.model)
    groups = model.param_groups(stage.lr)

    def loss_fn(net: nn.Module, batch: dict, draws: GlobalBatch):
        return net(batch, draws, objective=objective)

    result = train_stage(
        model,
        loss_fn,
        dataset,
        stage.settings(recipe.seed, index, samples=len(dataset)),
        stage_dir,
        param_groups=groups,
        collate_fn=None,
        resume=ctx.resume,
        progress=ctx.progress,
        sample_weights=sample_weights(dataset, stage.weighting or recipe.data.weighting),
        name=stage.name,
        evaluation=evaluation,
        parallel=recipe.parallel.settings(),
    )
    summary = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "wall_seconds": result.wall_seconds,
        "checkpoint": str(result.checkpoint),
    }
    best = load_result_weights(model, stage_dir) if evaluation is not None else None
    if best is not None:
        summary["best"] = best
    model.set_trainable(model.experts)
    return summary
