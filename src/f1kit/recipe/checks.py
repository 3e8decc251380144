"""The rules that span recipe sections: stages against the model, data windows against the model.

Each rule returns problems as (key path from the recipe root, message naming the bad value and
what is allowed), so one run of the checks reports everything wrong with a recipe at once.
"""

from f1kit.model import F1Config
from f1kit.recipe.component_checks import component_problems
from f1kit.recipe.limits import limit_problems
from f1kit.recipe.schema import (
    METAWORLD_ACTION_DIM,
    METAWORLD_STATE_DIM,
    DataConfig,
    EvalStage,
    Recipe,
    TokenizerStage,
    TrainStage,
)
from f1kit.sim import CAMERAS

Problem = tuple[str, str]


def recipe_problems(recipe: Recipe) -> list[Problem]:
    """Every cross-section problem of a recipe whose sections are each valid."""
    problems = component_problems(recipe.model) + limit_problems(recipe)
    problems += _data_against_model(recipe.data, recipe.model) + _stage_problems(recipe)
    return problems + _evaluation_problems(recipe) + _understanding_problems(recipe)


def _understanding_problems(recipe: Recipe) -> list[Problem]:
    """A stage that freezes the Understanding expert (stage I aligns G against it) needs a U
    with weights: from an ``init_from`` that holds it, or trained by an earlier stage. A frozen
    random U is refused unless the stage says ``allow_random_understanding: true``."""
    init = recipe.model.init_from
    ready = init is not None and "understanding" not in init.random
    problems: list[Problem] = []
    for i, stage in enumerate(recipe.stages):
        if not isinstance(stage, TrainStage):
            continue
        if stage.init_from is not None and "understanding" not in stage.init_from.random:
            ready = True  # a part named random keeps its weights: ready stays what it was
        if "understanding" in stage.train:
            ready = True
        elif not ready and not stage.allow_random_understanding:
            problems.append(
                (
                    f"stages.{i}.train",
                    f"{stage.train} trains against a frozen Understanding expert that is "
                    "randomly initialised (no init_from holds it, no earlier stage trained it); "
                    "start from pretrained weights (model.init_from: a directory from `f1kit "
                    "convert --from paligemma|pi0|f1-vla`), train understanding, or say "
                    "allow_random_understanding: true",
                )
            )
    return problems


def _no_gen(model: F1Config) -> str:
    return "this model is No-Gen (model.generation is null)"


def _data_against_model(data: DataConfig, model: F1Config) -> list[Problem]:
    problems = []
    if data.chunk != model.action.chunk:
        problems.append(
            (
                "data.chunk",
                f"{data.chunk} differs from model.action.chunk {model.action.chunk}; "
                "the training windows must hold the chunk the action head predicts",
            )
        )
    gen = model.generation
    if gen is not None:
        if gen.history != len(data.history):
            problems.append(
                (
                    "data.history",
                    f"{len(data.history)} offsets {data.history} but "
                    f"model.generation.history is {gen.history}; give one offset per history "
                    "frame",
                )
            )
        if gen.camera >= len(data.cameras):
            problems.append(
                (
                    "model.generation.camera",
                    f"index {gen.camera} is out of range for the "
                    f"{len(data.cameras)} camera(s) {data.cameras}",
                )
            )
    if model.action.state_dim is None:
        problems.append(
            (
                "model.action.state_dim",
                "null (pi0.5's stateless action expert: the state goes into the prompt) is not "
                "trainable from a recipe yet: nothing writes that prompt from the data; use the "
                "converted model through F1.predict / forward with f1kit.model.importers."
                "pi05_prompt (docs/weights.md), or give a state_dim",
            )
        )
    if data.source == "metaworld":
        for key, need, what in (
            ("action_dim", METAWORLD_ACTION_DIM, "action dims (delta xyz, gripper)"),
            ("state_dim", METAWORLD_STATE_DIM, "state dims (hand xyz, gripper)"),
        ):
            have = getattr(model.action, key)
            if have is not None and have < need:
                problems.append(
                    (
                        f"model.action.{key}",
                        f"{have} is smaller than Meta-World's {need} {what}; "
                        f"expected >= {need} (smaller robots are zero-padded up to it)",
                    )
                )
    return problems


def _stage_problems(recipe: Recipe) -> list[Problem]:
    model, data = recipe.model, recipe.data
    gen = model.generation
    experts = model.experts
    scales = gen.tokenizer.vqvae_config().scales if gen is not None else ()
    # A Generation model reads tokenizer codes for its history and foresight tokens, so every
    # train stage needs a tokenizer that is trained (a stage before it) or loaded (path).
    init = model.init_from  # a model directory that holds the tokenizer loads it too
    holds_tokenizer = init is not None and "tokenizer" not in init.random
    tokenizer_ready = gen is not None and (gen.tokenizer.path is not None or holds_tokenizer)
    gen_trained_by: str | None = None
    trained = False
    names: dict[str, int] = {}
    problems: list[Problem] = []
    for i, stage in enumerate(recipe.stages):
        at = f"stages.{i}"
        if stage.name in names:
            problems.append(
                (
                    f"{at}.name",
                    f"{stage.name!r} is already the name of stages.{names[stage.name]}"
                    "; stage names must be unique",
                )
            )
        names.setdefault(stage.name, i)
        if isinstance(stage, TokenizerStage):
            if gen is None:
                problems.append(
                    (f"{at}.kind", f"a tokenizer stage needs a Generation expert; {_no_gen(model)}")
                )
            elif gen_trained_by is not None:
                problems.append(
                    (
                        at,
                        f"retraining the tokenizer after stage {gen_trained_by!r} changes the "
                        "codes its Generation expert learned; put tokenizer stages before every "
                        "train stage",
                    )
                )
            else:
                tokenizer_ready = True
        elif isinstance(stage, TrainStage):
            known = data.task_names if data.source == "metaworld" else None
            problems += _train_problems(stage, at, model, experts, scales, tokenizer_ready, known)
            if stage.data is not None and stage.data not in data.groups:
                problems.append((f"{at}.data", _not_a_group(stage.data, data)))
            if gen is not None and gen_trained_by is None:
                gen_trained_by = stage.name
            trained = True
        elif isinstance(stage, EvalStage):
            problems += _eval_problems(stage, at, model, data, trained)
    return problems


def _not_a_group(name: str, data: DataConfig) -> str:
    if data.groups:
        return f"{name!r} is not a group of data.groups ({', '.join(data.groups)})"
    return (
        f"{name!r} is not a group of data.groups (there are none: with source lerobot, name "
        "subsets of data.paths there)"
    )


def _train_problems(
    stage: TrainStage,
    at: str,
    model: F1Config,
    experts: tuple[str, ...],
    scales: tuple[int, ...],
    tokenizer_ready: bool,
    data_tasks: tuple[str, ...] | None = None,
) -> list[Problem]:
    problems = []
    note = " (No-Gen: generation is null)" if model.generation is None else ""
    if stage.tasks is not None and data_tasks is not None:
        for j, task in enumerate(stage.tasks):
            if task not in data_tasks:
                problems.append(
                    (
                        f"{at}.tasks.{j}",
                        f"{task!r} is not among data.tasks {list(data_tasks)}; a stage trains on "
                        "a subset of the recipe's data",
                    )
                )
    for j, expert in enumerate(stage.train):
        if expert not in experts:
            problems.append(
                (
                    f"{at}.train.{j}",
                    f"{expert!r} is not an expert of this model{note}; experts "
                    f"are {', '.join(experts)}",
                )
            )
    if model.generation is None:
        weight = stage.losses.get("generation", 0.0)
        if weight > 0:
            problems.append(
                (
                    f"{at}.losses.generation",
                    f"{weight} needs a Generation expert; "
                    f"{_no_gen(model)}; set it to 0 or remove it",
                )
            )
        if stage.scales is not None:
            problems.append(
                (
                    f"{at}.scales",
                    f"{stage.scales!r} applies to the Generation expert; "
                    f"{_no_gen(model)}; leave it null",
                )
            )
        return problems
    inference_scales = model.generation.scales
    if stage.losses.get("action", 0.0) > 0 and stage.scales not in (None, inference_scales):
        problems.append(
            (
                f"{at}.scales",
                f"{stage.scales} differs from model.generation.scales = {inference_scales}, the "
                "scales inference generates; a stage with an action loss trains the Action "
                "expert on exactly those (docs/contract.md): set it to "
                f"{inference_scales} or leave it null",
            )
        )
    if stage.scales is not None and stage.scales > len(scales):
        problems.append(
            (
                f"{at}.scales",
                f"{stage.scales} exceeds the tokenizer's {len(scales)} scales "
                f"{scales}; expected 1..{len(scales)} or null (all)",
            )
        )
    if not tokenizer_ready:
        problems.append(
            (
                at,
                "the Generation expert reads tokenizer codes (history and foresight), but no "
                "tokenizer stage comes before this stage, model.generation.tokenizer.path is "
                "not set and no model.init_from holds it; add a tokenizer stage first or set "
                "the path",
            )
        )
    return problems


def _eval_problems(
    stage: EvalStage, at: str, model: F1Config, data: DataConfig, trained: bool
) -> list[Problem]:
    problems = []
    if not trained:
        problems.append(
            (
                at,
                "no train stage comes before this evaluate stage, so there is no trained "
                "policy to evaluate",
            )
        )
    if stage.decode_foresight and model.generation is None:
        problems.append(
            (
                f"{at}.decode_foresight",
                f"true needs a Generation expert; {_no_gen(model)}; set it to false or null",
            )
        )
    return problems + _rollout_problems(at, stage.name, stage.seed, stage.tasks, data)


def _rollout_problems(
    at: str, name: str, seed: int, tasks: object, data: DataConfig
) -> list[Problem]:
    """Closed-loop rollouts (an evaluate stage, a train stage's ``evaluate``) on unseen
    Meta-World layouts of named tasks, rendered from the data's cameras."""
    problems = []
    if data.source == "metaworld" and seed == data.seed:
        problems.append(
            (
                f"{at}.seed",
                f"{seed} equals data.seed, so evaluation would replay the "
                "training layouts; use a different seed",
            )
        )
    if data.source == "lerobot":
        if tasks is None:
            problems.append(
                (
                    f"{at}.tasks",
                    "evaluation runs Meta-World tasks; with source lerobot name them "
                    "here (data.tasks only applies to generated demos)",
                )
            )
        bad = [c for c in data.cameras if c not in CAMERAS]
        if bad:
            problems.append(
                (
                    "data.cameras",
                    f"{bad} are not Meta-World cameras, so stage {name!r} "
                    f"cannot render them; expected some of {CAMERAS}",
                )
            )
    return problems


def _evaluation_problems(recipe: Recipe) -> list[Problem]:
    """A train stage's ``evaluate``: its layouts never score the final policy, and what it
    selects by exists."""
    final_seeds = {s.seed: i for i, s in enumerate(recipe.stages) if isinstance(s, EvalStage)}
    problems: list[Problem] = []
    for i, stage in enumerate(recipe.stages):
        spec = stage.evaluate if isinstance(stage, TrainStage) else None
        if spec is None:
            continue
        at = f"stages.{i}.evaluate"
        if spec.seed in final_seeds:
            problems.append(
                (
                    f"{at}.seed",
                    f"{spec.seed} is also stages.{final_seeds[spec.seed]}.seed: the layouts "
                    "that choose a checkpoint must not score it; use another seed",
                )
            )
        if spec.episodes:
            problems += _rollout_problems(at, stage.name, spec.seed, spec.tasks, recipe.data)
        if spec.select == "val_loss" and recipe.data.validation == 0:
            problems.append(
                (
                    f"{at}.select",
                    "val_loss needs held-out episodes: set data.validation > 0",
                )
            )
    return problems
