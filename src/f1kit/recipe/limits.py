"""What a recipe may ask for beyond its types: an ``output`` template that fills in only
``{name}``, path strings without control characters, and batches whose input frames could fit in
memory at all.

A batch is refused when its input frames alone, as float32, pass `MAX_BATCH_BYTES` (1 TiB): a
lower bound on what one step holds (a train sample also holds history and foresight frames, and
activations dwarf the inputs), so a refused batch could never run, on any one machine. The
message gives the estimate and the largest batch under the bound.
"""

import string
import unicodedata
from typing import Any

from f1kit.recipe.fields import short_repr
from f1kit.recipe.schema import Recipe, TokenizerStage, TrainStage

Problem = tuple[str, str]

MAX_BATCH_BYTES = 2**40
FLOAT32 = 4


def limit_problems(recipe: Recipe) -> list[Problem]:
    """Every malformed path or output template and every impossible batch of ``recipe``."""
    return _output_problems(recipe.output) + _path_problems(recipe) + _batch_problems(recipe)


def control_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path (a NUL, a newline, any control character), or None."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc":
            return (
                f"contains the control character {ch!r} at position {i} ({short_repr(text)}); "
                "paths must be printable"
            )
    return None


def _output_problems(output: str) -> list[Problem]:
    problems = []
    for _, field, spec, conversion in string.Formatter().parse(output):
        if field is None:
            continue
        if field != "name" or spec or conversion:
            placeholder = "{" + field + (f"!{conversion}" if conversion else "")
            placeholder += (f":{spec}" if spec else "") + "}"
            problems.append(
                (
                    "output",
                    f"only {{name}} is filled in (no format spec or conversion), got "
                    f"{short_repr(placeholder)[1:-1]} in {short_repr(output)}",
                )
            )
    return problems


def _path_problems(recipe: Recipe) -> list[Problem]:
    paths: list[tuple[str, Any]] = [("output", recipe.output)]
    paths += [(f"data.paths.{i}", p) for i, p in enumerate(recipe.data.paths)]
    for group, members in recipe.data.groups.items():
        paths += [(f"data.groups.{group}.{j}", p) for j, p in enumerate(members)]
    model = recipe.model
    if model.generation is not None:
        paths.append(("model.generation.tokenizer.path", model.generation.tokenizer.path))
    for key in ("vision", "text"):
        args = getattr(model, key).args
        paths += [(f"model.{key}.args.{k}", v) for k, v in args.items() if k == "path"]
    problems = []
    for where, path in paths:
        if isinstance(path, str) and (problem := control_problem(path)) is not None:
            problems.append((where, problem))
    return problems


def _batch_problems(recipe: Recipe) -> list[Problem]:
    data, gen = recipe.data, recipe.model.generation
    problems = []
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, TrainStage):
            size, views = data.image_size, len(data.cameras)
            what = f"{views} camera(s) x 3 x {size}x{size} float32"
        elif isinstance(stage, TokenizerStage) and gen is not None:
            size, views = gen.tokenizer.vqvae_config().image_size, 1
            what = f"one frame, 3 x {size}x{size} float32"
        else:
            continue
        per_sample = views * 3 * size * size * FLOAT32
        need = stage.batch_size * per_sample
        if need > MAX_BATCH_BYTES:
            problems.append(
                (
                    f"stages.{i}.batch_size",
                    f"{stage.batch_size} samples need {_bytes(need)} for their input frames "
                    f"alone ({what} = {_bytes(per_sample)} per sample); the limit is "
                    f"{_bytes(MAX_BATCH_BYTES)}: expected at most "
                    f"{MAX_BATCH_BYTES // per_sample}",
                )
            )
    return problems


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB" if n < 1000 else f"{n:,.0f} TiB"
