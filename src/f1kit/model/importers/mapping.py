"""Strict key mapping from a foreign checkpoint onto f1kit's state dict.

An importer states its mapping as data: one `Rule` per f1kit tensor (its source tensors and the
transform that turns them into it) and a table of source tensors dropped on purpose, each with
its reason. `check_plan` verifies the whole mapping on shapes alone (the transforms run on meta
tensors) and raises one `WeightImportError` listing every problem at once:

    missing      an f1kit tensor no rule produces, or a rule whose source tensor is absent
    unexpected   a source tensor no rule reads and the dropped table does not name
    shape        a rule whose output shape differs from the f1kit tensor's

Nothing is ever loaded with ``strict=False``: a checkpoint that does not fit is an error.
"""

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from f1kit.model.importers.source import SourceTensors

Transform = Callable[..., Tensor]
FLOAT32_PREFIXES = ("tokenizer.",)  # kept float32 whatever dtype a conversion asks for


def same(x: Tensor) -> Tensor:
    """The tensor as stored."""
    return x


def gemma_norm(x: Tensor) -> Tensor:
    """Gemma's RMSNorm stores ``gain - 1`` (it applies ``1 + w`` in float32); f1kit stores the
    gain, kept in float32 so a bf16 checkpoint's ``1 + w`` loses no bits."""
    return x.float() + 1.0


def f1kit_to_gemma_norm(x: Tensor) -> Tensor:
    """The inverse of `gemma_norm`, for exports."""
    return x.float().sub(1.0).to(x.dtype)


@dataclass(frozen=True)
class Rule:
    """f1kit tensor ``target`` = ``transform(*sources)`` (source tensor names, in order)."""

    target: str
    sources: tuple[str, ...]
    transform: Transform = same

    @classmethod
    def rename(cls, target: str, source: str, transform: Transform = same) -> "Rule":
        return cls(target, (source,), transform)


class WeightImportError(ValueError):
    """A checkpoint that does not fit the f1kit model it is imported into; lists every problem."""


@dataclass(frozen=True)
class Plan:
    """A checked mapping: ``rules`` cover ``expected`` exactly; ``dropped`` are the source
    tensors left out on purpose (name -> reason)."""

    rules: tuple[Rule, ...]
    dropped: dict[str, str]


def dropped_reason(key: str, table: Mapping[str, str]) -> str | None:
    """The reason ``table`` gives for dropping ``key`` (patterns are regular expressions that
    must match the whole name), or None."""
    for pattern, reason in table.items():
        if re.fullmatch(pattern, key):
            return reason
    return None


def check_plan(
    source: SourceTensors,
    rules: list[Rule],
    dropped: Mapping[str, str],
    expected: Mapping[str, tuple[int, ...]],
    name: str,
) -> Plan:
    """Verify ``rules`` against ``source`` and the f1kit shapes ``expected``, or raise.

    name: what is being imported (it heads the error message).
    """
    produced = {rule.target for rule in rules}
    repeated = sorted({r.target for r in rules if sum(x.target == r.target for x in rules) > 1})
    missing = [f"{key} (no source tensor maps to it)" for key in expected if key not in produced]
    extra_targets = sorted(produced - set(expected))
    absent: list[str] = []
    shapes: list[str] = []
    read: set[str] = set()
    for rule in rules:
        gone = [s for s in rule.sources if s not in source]
        read.update(s for s in rule.sources if s in source)
        if gone:
            absent.append(f"{', '.join(gone)} (for {rule.target})")
            continue
        if rule.target not in expected:
            continue
        try:
            out = rule.transform(*(source.meta(s) for s in rule.sources))
        except (RuntimeError, ValueError) as err:
            sizes = ", ".join(f"{s} {source.shape(s)}" for s in rule.sources)
            shapes.append(f"{rule.target}: cannot be formed from {sizes} ({err})")
            continue
        if tuple(out.shape) != tuple(expected[rule.target]):
            sizes = ", ".join(f"{s} {source.shape(s)}" for s in rule.sources)
            shapes.append(
                f"{rule.target}: f1kit {tuple(expected[rule.target])}, source gives "
                f"{tuple(out.shape)} (from {sizes})"
            )
    reasons: dict[str, str] = {}
    unexpected = []
    for key in source.keys():  # noqa: SIM118 (SourceTensors is not a dict)
        if key in read:
            continue
        reason = dropped_reason(key, dropped)
        if reason is None:
            unexpected.append(f"{key} {source.shape(key)}")
        else:
            reasons[key] = reason
    problems = [
        ("missing in the source", absent),
        ("f1kit tensors with no source", missing),
        ("unexpected source tensors (neither mapped nor in the dropped list)", unexpected),
        ("shape mismatch", shapes),
        ("rules for tensors f1kit does not have", extra_targets),
        ("f1kit tensors mapped twice", repeated),
    ]
    if any(items for _, items in problems):
        lines = [f"{name}: {source.path} does not fit the f1kit model"]
        for title, items in problems:
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {item}" for item in items)
        raise WeightImportError("\n".join(lines))
    return Plan(tuple(rules), reasons)


def convert(
    source: SourceTensors, plan: Plan, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, Tensor]]:
    """The f1kit tensors of a checked plan, one at a time. ``dtype``: floats are cast to it,
    except the VQ tokenizer (its quantizer's nearest-code search stays float32: bf16 codebooks
    change codes) and the Gemma gains `gemma_norm` forms in float32."""
    for rule in plan.rules:
        tensor = rule.transform(*(source.get(s) for s in rule.sources))
        exact = rule.target.startswith(FLOAT32_PREFIXES) or rule.transform is gemma_norm
        if dtype is not None and tensor.is_floating_point() and not exact:
            tensor = tensor.to(dtype)
        yield rule.target, tensor.contiguous()
