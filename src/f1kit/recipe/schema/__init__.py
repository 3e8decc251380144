"""The recipe format: one YAML file holds a whole F1 run (data, model, stages) as validated data.

A recipe maps 1:1 onto the components' own configs: ``data`` onto `f1kit.sim.DemoConfig` and
`f1kit.data.WindowConfig`, ``model`` IS an `f1kit.model.F1Config`, a ``tokenizer`` stage onto
`foresight.TokenizerTrainConfig`, a ``train`` stage onto `f1kit.model.Objective` +
`f1kit.train.TrainSettings`, an ``evaluate`` stage onto `f1kit.sim.EvalConfig` (DESIGN.md s5:
"which experts train, which losses with what weight, how many scales, which data" are plain data).

Every section forbids unknown keys and is immutable. Checks that span sections (an expert trained
that the model lacks, a generation loss without a tokenizer, data windows that do not fit the
model) run after the per-field checks and report every problem at once with its key path, via
:class:`Problems`; `f1kit.recipe.loading` turns them into a :class:`RecipeError`.

Sections by concern: ``data.py`` (the ``data:`` section), ``stages.py`` (one section per stage
kind, each run by its file of `f1kit.recipe.stages`), ``recipe.py`` (the whole recipe).

Example:
    >>> from f1kit.model import F1Config
    >>> recipe = Recipe.model_validate(
    ...     {"name": "toy", "model": F1Config.tiny().model_dump(mode="json"),
    ...      "stages": [{"kind": "tokenizer", "name": "tok", "steps": 10, "batch_size": 8}]})
    >>> recipe.output_dir()
    PosixPath('runs/toy')
"""

from f1kit.recipe.schema.data import METAWORLD_ACTION_DIM, METAWORLD_STATE_DIM, DataConfig
from f1kit.recipe.schema.recipe import Recipe
from f1kit.recipe.schema.stages import (
    EXPERTS,
    STAGE_KINDS,
    EvalStage,
    Stage,
    TokenizerStage,
    TrainStage,
)

__all__ = [
    "EXPERTS",
    "METAWORLD_ACTION_DIM",
    "METAWORLD_STATE_DIM",
    "STAGE_KINDS",
    "DataConfig",
    "EvalStage",
    "Recipe",
    "Stage",
    "TokenizerStage",
    "TrainStage",
]
