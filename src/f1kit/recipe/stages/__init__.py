"""The stages of a recipe run: one run context, and one runner per stage kind, registered by
its file (importing them here fills the registry)."""

from f1kit.recipe.stages.context import DONE, RunContext
from f1kit.recipe.stages.evaluate import run_evaluate
from f1kit.recipe.stages.registry import RUNNERS, Runner, register, runner
from f1kit.recipe.stages.tokenizer import run_tokenizer
from f1kit.recipe.stages.train import run_train
from f1kit.recipe.stages.train_data import StageData, StageDataError, sample_weights, stage_data

__all__ = [
    "DONE",
    "RUNNERS",
    "RunContext",
    "Runner",
    "StageData",
    "StageDataError",
    "register",
    "run_evaluate",
    "run_tokenizer",
    "run_train",
    "runner",
    "sample_weights",
    "stage_data",
]
