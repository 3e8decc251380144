"""The run context: what every stage of a recipe run reads and leaves, in one object.

`RunContext.open` sets a run up (threads, device, seed, datasets, held-out rows, the model with
any trained tokenizer loaded, the policy's processors) in the order the runner always has, so
the global RNG reaches the first stage in the same state. Stage runners (`stages.registry`) take
the context, their stage, its index and its directory, and return the stage's summary.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from f1kit.data import Processor, WindowConfig, WindowedDataset, held_out_rows
from f1kit.model import F1
from f1kit.model.loading import build_empty
from f1kit.recipe.data import (
    check_eval_embodiments,
    datasets,
    frame_codes,
    generation_key,
    processors,
)
from f1kit.recipe.fields import RecipeError
from f1kit.recipe.schema import Recipe, TrainStage
from f1kit.recipe.stages.train_data import StageDataError, stage_data
from f1kit.recipe.stages.weights import load_init, load_tokenizer_weights
from f1kit.train.distributed import is_main, world_size

log = logging.getLogger(__name__)

DONE = "done.json"  # written by every stage when it completes; resume skips stages that have it


@dataclass
class RunContext:
    """One recipe run: the recipe, its directory, the model every stage continues, the data.

    ``data``: the recipe's datasets (in ``data.paths`` order); ``held``: one flag per row of
    them, the held-out validation episodes (``data.validation``); ``codes``: the frozen
    tokenizer's codes of every frame, computed when a train stage first needs them and dropped
    when a tokenizer stage changes the tokenizer.
    """

    recipe: Recipe
    out: Path
    model: F1
    data: list
    held: np.ndarray
    window: WindowConfig
    processors: tuple[Processor, Processor]
    device: torch.device
    resume: bool = False
    progress: bool = True
    codes: list[np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        recipe: Recipe,
        out: Path,
        dist_device: torch.device | None,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> "RunContext":
        """Set the run up: threads, device, the recipe seed, data, model and processors."""
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        device = _device(recipe.device, dist_device)
        sharded = recipe.parallel.settings().shards_over(world_size())
        if sharded:
            # The main rank keeps the whole model in host memory, the others its shapes alone;
            # each rank's device holds only the shards a stage trains (f1kit.train.parallel).
            # The tokenizer stage, the codes, evaluations and the policy run on the main host.
            device = torch.device("cpu")
        torch.manual_seed(recipe.seed)
        data = datasets(recipe, out, progress)
        held = held_out_rows(data, recipe.data.validation)
        if sharded and not is_main():
            model = build_empty(recipe.model.f1_config())
        else:
            model = F1(recipe.model.f1_config())
            load_tokenizer_weights(model)
            if recipe.model.init_from is not None:
                load_init(model, recipe, recipe.model.init_from, "model.init_from", stage=False)
            model.to(device)
        window = recipe.data.window_config()
        pre_post = processors(data, recipe)
        check_eval_embodiments(recipe, pre_post[0])
        _check_stage_data(recipe, data, held, window)
        return cls(recipe, out, model, data, held, window, pre_post, device, resume, progress)

    def stage_dir(self, index: int, name: str) -> Path:
        """``stages/<index>-<name>``, made if missing."""
        path = self.out / "stages" / f"{index}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def windows(self) -> WindowedDataset:
        """Every dataset's training windows, carrying the tokenizer's codes for a Generation
        model (computed here once, or read back from ``data/codes/``)."""
        if self.model.tokenizer is not None and self.codes is None:
            key = generation_key(self.recipe)
            self.codes = frame_codes(self.model, self.data, key, self.out, self.progress)
        return WindowedDataset(self.data, self.window, codes=self.codes)


def _check_stage_data(recipe: Recipe, data: list, held: np.ndarray, window: WindowConfig) -> None:
    """Every train stage's ``tasks`` have windows in its datasets, checked before any stage runs:
    `check_datasets` holds them against the tasks every dataset's metadata lists, not against
    those a stage's group holds episodes of."""
    windows = WindowedDataset(data, window)
    problems = []
    for index, stage in enumerate(recipe.stages):
        if isinstance(stage, TrainStage):
            try:
                stage_data(windows, stage, held, recipe.data.group_datasets(stage.data))
            except StageDataError as err:
                problems.append((f"stages.{index}.{err.key}", err.message))
    if problems:
        raise RecipeError(recipe.name, problems)


def _device(name: str, dist_device: torch.device | None) -> torch.device:
    if dist_device is not None and dist_device.type == "cuda":
        return dist_device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: the recipe asks for cuda, but torch sees no CUDA device")
    return torch.device(name)
