"""The importers by source name (``f1kit convert --from NAME``), and what each one returns.

An importer reads a foreign checkpoint (`SourceTensors`, its ``config.json`` beside it) and
returns an `Imported`: the f1kit model config the weights fit, the parts of F1 they fill, and a
checked `Plan` (every f1kit tensor of those parts produced, every source tensor read or dropped
for a stated reason). `f1kit.model.importers.convert` writes it as an f1kit model directory.
"""

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from f1kit.model.config import F1Config
from f1kit.model.importers.mapping import Rule, check_plan, convert
from f1kit.model.importers.parts import keys_of
from f1kit.model.importers.source import SourceTensors


@dataclass(frozen=True)
class Imported:
    """A foreign checkpoint mapped onto f1kit.

    config: the f1kit model the weights fit; parts: the parts of it they fill (the others start
    random: `init_from` names them); tensors(dtype): the f1kit tensors, one at a time (floats
    cast to dtype when given); dropped: source tensors left out on purpose, with the reason;
    files: extra files to copy into the model directory (directory-relative name -> source
    path, e.g. a text tokenizer's); info: what to record about the source (kind, conventions).
    """

    config: F1Config
    parts: tuple[str, ...]
    tensors: Callable[[torch.dtype | None], Iterator[tuple[str, torch.Tensor]]]
    dropped: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    count: int | None = None  # how many tensors ``tensors`` yields (a progress bar's total)


Importer = Callable[..., Imported]  # (source: SourceTensors, **options) -> Imported
IMPORTERS: dict[str, Importer] = {}


def importer(name: str) -> Callable[[Importer], Importer]:
    """Register an importer under ``name`` (the ``--from`` value)."""

    def register(fn: Importer) -> Importer:
        if name in IMPORTERS:
            raise ValueError(f"importer {name!r}: registered twice")
        IMPORTERS[name] = fn
        return fn

    return register


def expected_shapes(config: F1Config, parts: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of ``parts`` of the model ``config`` describes (built on the meta
    device: no memory, no random init, even at paper size; cached per config, since a build
    costs about a second and one import or recipe check asks several times)."""
    shapes = _all_shapes(config.model_dump_json())
    return {key: shapes[key] for key in keys_of(shapes, parts)}


@functools.lru_cache(maxsize=4)
def _all_shapes(config: str) -> dict[str, tuple[int, ...]]:
    from f1kit.model.loading import build_empty  # the model imports nothing from here

    state = build_empty(F1Config.model_validate_json(config)).state_dict()
    return {key: tuple(t.shape) for key, t in state.items()}


def imported_from_plan(
    source: SourceTensors,
    config: F1Config,
    parts: tuple[str, ...],
    rules: list[Rule],
    dropped: dict[str, str],
    name: str,
    **extra: Any,
) -> Imported:
    """The `Imported` of a rule-based importer: the plan checked now, tensors read on demand."""
    plan = check_plan(source, rules, dropped, expected_shapes(config, parts), name)
    return Imported(
        config,
        parts,
        lambda dtype: convert(source, plan, dtype),
        plan.dropped,
        count=len(plan.rules),
        **extra,
    )
