"""Recipes: a whole F1 run (data, model, stages) as one validated YAML file."""

from f1kit.recipe.dataset_checks import check_datasets, dataset_problems
from f1kit.recipe.evaluation_config import StageEvaluation
from f1kit.recipe.fields import Problems, RecipeError
from f1kit.recipe.loading import (
    apply_overrides,
    load_recipe,
    parse_yaml,
    recipe_from_dict,
    resolved_yaml,
    validation_problems,
)
from f1kit.recipe.optimization import OptimizerConfig, ScheduleConfig
from f1kit.recipe.schema import (
    DataConfig,
    EvalStage,
    Recipe,
    Stage,
    TokenizerStage,
    TrainStage,
)

__all__ = [
    "DataConfig",
    "EvalStage",
    "OptimizerConfig",
    "Problems",
    "Recipe",
    "RecipeError",
    "ScheduleConfig",
    "Stage",
    "StageEvaluation",
    "TokenizerStage",
    "TrainStage",
    "apply_overrides",
    "check_datasets",
    "dataset_problems",
    "load_recipe",
    "parse_yaml",
    "recipe_from_dict",
    "resolved_yaml",
    "validation_problems",
]
