"""The ``init_from`` directories of a recipe, checked before any work: each one readable, holding
the parts the model needs or naming them under ``random``, with matching settings
(`f1kit.model.importers.part_problems`). Tensor shapes are checked when the weights load."""

from f1kit.model.importers import ModelDirError, part_problems, read_model_dir
from f1kit.model.importers.model_dir import tensor_problems
from f1kit.model.importers.parts import PARTS
from f1kit.model.importers.registry import expected_shapes
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


def init_parts(recipe: Recipe, stage: bool) -> dict[str, set[str]]:
    """How an ``init_from`` treats the parts loaded elsewhere: the model's takes the tokenizer
    unless ``tokenizer.path`` provides it; a stage's never replaces the run's tokenizer (its
    codes are computed), it may only hold the same one (`init_from`'s ``match``)."""
    if stage:
        return {"provided": set(), "match": {"tokenizer"}}
    return {"provided": provided_parts(recipe), "match": set()}


def init_problems(recipe: Recipe) -> list[Problem]:
    """Every problem of ``model.init_from`` and the stages' ``init_from``: unreadable
    directories, parts, settings, and every tensor's shape (read from the file's header)."""
    found: list[tuple[str, InitFrom, bool]] = []
    if recipe.model.init_from is not None:
        found.append(("model.init_from", recipe.model.init_from, False))
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, TrainStage) and stage.init_from is not None:
            found.append((f"stages.{i}.init_from", stage.init_from, True))
    if not found:
        return []
    config = recipe.model.f1_config()
    expected = expected_shapes(config, PARTS)  # built on the meta device: no memory
    problems: list[Problem] = []
    for key, init, is_stage in found:
        try:
            directory = read_model_dir(init.path)
        except (ModelDirError, OSError, ValueError) as err:
            problems.append((f"{key}.path", str(err)))
            continue
        how = init_parts(recipe, is_stage)
        messages = part_problems(
            directory, model_parts(recipe), init.random, how["provided"], config,
            match=how["match"],
        )  # fmt: skip
        if not messages:
            messages = [
                f"{directory.weights} does not fit the recipe's model: {line}"
                for line in tensor_problems(directory, expected, directory.parts)
            ]
        problems += [(key, message) for message in messages]
    return problems
