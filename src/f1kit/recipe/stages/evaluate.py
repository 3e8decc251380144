"""``kind: evaluate``: closed-loop Meta-World evaluation of the policy trained so far
(`f1kit.sim.evaluate`), on rank 0 only; writes ``eval.json`` and the rollout videos."""

import json
import time
from pathlib import Path

from f1kit.recipe.schema import EvalStage
from f1kit.recipe.stage_eval import recipe_policy
from f1kit.recipe.stages.context import DONE, RunContext
from f1kit.recipe.stages.registry import register
from f1kit.train import is_main


@register("evaluate")
def run_evaluate(ctx: RunContext, stage: EvalStage, index: int, stage_dir: Path) -> dict:
    """Roll the current policy out on the stage's held-out layouts (or reload its result)."""
    done = stage_dir / DONE
    if done.exists():
        return json.loads(done.read_text())
    if not is_main():
        return {}
    from f1kit.sim import evaluate

    began = time.perf_counter()
    policy = recipe_policy(
        ctx.model,
        ctx.recipe,
        ctx.processors,
        seed=stage.seed,
        decode_foresight=stage.decodes_foresight(ctx.recipe.model),
        embodiment=stage.embodiment,
    )
    config = stage.eval_config(ctx.recipe.data, stage_dir / "videos")
    report = evaluate(policy, config, progress=ctx.progress)
    result = {"wall_seconds": time.perf_counter() - began, **report.as_dict()}
    (stage_dir / "eval.json").write_text(json.dumps(result, indent=2))
    done.write_text(json.dumps(result, indent=2))
    ctx.model.train()
    return result
