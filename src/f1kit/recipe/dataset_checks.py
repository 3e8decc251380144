"""A recipe's local LeRobot datasets against its data section, model and stages, from metadata only.

Read: ``meta/info.json`` (fps, features), ``meta/tasks.parquet`` and, through the reader's rules,
nothing else: no frame is decoded, so `f1kit recipe validate` stays instant on a 30 GB dataset
and `recipe run` refuses a mismatch before it writes anything. Each problem names the key path
and the dataset:

* a dataset that is missing or malformed (the reader's own message, naming the file),
* a camera of ``data.cameras`` the dataset lacks,
* frames that are not square or not ``data.image_size`` (the model would resize them silently),
* a state or action wider than the model's ``state_dim`` / ``action_dim`` (narrower ones are
  zero-padded, as pi0 does),
* datasets of different frame rates (history and foresight offsets count frames),
* a train stage's ``tasks`` that no dataset holds.
"""

from pathlib import Path

from f1kit.data import DatasetFormatError, DatasetMetadata, read_metadata
from f1kit.recipe.component_checks import path_problems
from f1kit.recipe.fields import RecipeError
from f1kit.recipe.init_checks import init_problems
from f1kit.recipe.schema import Recipe, TrainStage

Problem = tuple[str, str]


def check_datasets(recipe: Recipe, source: str | None = None) -> None:
    """Raise ``RecipeError`` (named ``source``, default the recipe's name) listing every
    ``dataset_problems`` of ``recipe``, every model file that is missing (`path_problems`)
    and every ``init_from`` that does not fit (`init_problems`); nothing is read past the
    datasets' metadata and the model directories' configs."""
    problems = path_problems(recipe.model) + init_problems(recipe) + dataset_problems(recipe)
    if problems:
        raise RecipeError(source or recipe.name, problems)


def dataset_problems(recipe: Recipe) -> list[Problem]:
    """Every mismatch between ``recipe`` and its ``data.paths`` (none for Meta-World demos)."""
    data = recipe.data
    if data.source != "lerobot":
        return []
    problems: list[Problem] = []
    found: list[DatasetMetadata] = []
    for i, path in enumerate(data.paths):
        try:
            meta = read_metadata(Path(path))
        except (DatasetFormatError, OSError) as err:
            problems.append((f"data.paths.{i}", str(err)))
            continue
        problems += _against_recipe(meta, recipe)
        found.append(meta)
    rates = {str(m.root): m.fps for m in found}
    if len(set(rates.values())) > 1:
        problems.append(
            (
                "data.paths",
                f"the datasets' frame rates differ {rates}; history and foresight offsets count "
                "frames, so they would mean different times per dataset",
            )
        )
    if found:
        problems += _stage_tasks(recipe, sorted({t for m in found for t in m.tasks}))
    return problems


def _against_recipe(meta: DatasetMetadata, recipe: Recipe) -> list[Problem]:
    data, action = recipe.data, recipe.model.action
    problems = []
    cameras = {k.removeprefix("observation.images."): k for k in meta.image_keys}
    for camera, key in zip(data.cameras, data.image_keys, strict=True):
        if key not in meta.image_keys:
            problems.append(
                (
                    "data.cameras",
                    f"{meta.root} has no camera {camera!r} ({key}); it has {sorted(cameras)}",
                )
            )
            continue
        h, w = meta.frame_size(key)
        if (h, w) != (data.image_size, data.image_size):
            problems.append(
                (
                    "data.image_size",
                    f"{meta.root}: {key} frames are {h} x {w}, the recipe says "
                    f"{data.image_size} x {data.image_size}; frames are never resized silently: "
                    "set data.image_size to the dataset's (square) size, or write the dataset "
                    "at the size the model takes",
                )
            )
    for key, field, width in (
        ("observation.state", "state_dim", action.state_dim),
        ("action", "action_dim", action.action_dim),
    ):
        if key not in meta.info["features"]:
            problems.append(("data.paths", f"{meta.root} has no {key!r} feature"))
            continue
        have = meta.width(key)
        if width is not None and have > width:
            problems.append(
                (
                    f"model.action.{field}",
                    f"{width} is narrower than {meta.root}'s {key} ({have} dims); expected >= "
                    f"{have} (narrower data is zero-padded up to the model's width)",
                )
            )
    return problems


def _stage_tasks(recipe: Recipe, tasks: list[str]) -> list[Problem]:
    problems = []
    for index, stage in enumerate(recipe.stages):
        wanted = stage.task_sentences() if isinstance(stage, TrainStage) else None
        if wanted is not None:
            missing = sorted(wanted - set(tasks))
            if missing:
                problems.append(
                    (
                        f"stages.{index}.tasks",
                        f"{missing} are not tasks of the data; its tasks are {tasks}",
                    )
                )
    return problems
