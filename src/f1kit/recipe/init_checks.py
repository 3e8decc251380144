"""The ``init_from`` directories of a recipe, checked before any work: each one readable, holding
the parts the model needs or naming them under ``random``, with matching settings
(`f1kit.model.importers.part_problems`). Tensor shapes are checked when the weights load."""

from f1kit.model.importers import ModelDirError, part_problems, read_model_dir
from f1kit.recipe.schema import Recipe, TrainStage
from f1kit.recipe.schema.init import InitFrom

Problem = tuple[str, str]


def model_parts(recipe: Recipe) -> set[str]:
    """The parts of the recipe's model (No-Gen has neither Generation expert nor tokenizer)."""
    parts = {"understanding", "action"}
    if recipe.model.generation is not None:
        parts |= {"generation", "tokenizer"}
    return parts


def provided_parts(recipe: Recipe) -> set[str]:
    """Parts the recipe loads from elsewhere: the tokenizer from ``tokenizer.path``."""
    gen = recipe.model.generation
    return {"tokenizer"} if gen is not None and gen.tokenizer.path is not None else set()


def init_problems(recipe: Recipe) -> list[Problem]:
    """Every problem of ``model.init_from`` and the stages' ``init_from``."""
    found: list[tuple[str, InitFrom]] = []
    if recipe.model.init_from is not None:
        found.append(("model.init_from", recipe.model.init_from))
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, TrainStage) and stage.init_from is not None:
            found.append((f"stages.{i}.init_from", stage.init_from))
    problems: list[Problem] = []
    for key, init in found:
        try:
            directory = read_model_dir(init.path)
        except (ModelDirError, OSError, ValueError) as err:
            problems.append((f"{key}.path", str(err)))
            continue
        config = recipe.model.f1_config()
        for message in part_problems(
            directory, model_parts(recipe), init.random, provided_parts(recipe), config
        ):
            problems.append((key, message))
    return problems
