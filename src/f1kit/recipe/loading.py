"""Reading recipes: YAML file -> ``--set`` overrides -> validated `Recipe`, and back to YAML.

Overrides are ``key.path=value`` strings applied to the parsed YAML before validation. The value
is parsed as YAML (``5``, ``1e-3``, ``[a, b]``, ``null``, ``true``, ``{a: 1}``; an empty value is
null). Path parts index mappings by key and lists by position (``stages.1.steps=10``) or by the
``name`` of a list entry (``stages.align.steps=10``). Missing mapping keys are created, so a key
the schema does not know ends up as a schema error naming its path.

Every problem, from a missing file to a cross-stage rule, becomes one :class:`RecipeError` whose
lines read ``<file>: <key.path>: <message>``.

Bounds, so that any input gets a clear error in well under a second: the file and every
``--set`` value within `f1kit.recipe.yaml_io`'s (1 MiB of text, 100 000 values once aliases
expand), the first `MAX_PROBLEMS` problems listed, and every value a message quotes cut to ~80
characters before it is formatted (`f1kit.recipe.fields.short_repr`).

Example:
    >>> recipe = load_recipe("recipes/f1.yaml", ["stages.1.steps=10", "data.tasks=[reach-v3]"])
    >>> print(resolved_yaml(recipe))  # what the run writes as recipe.yaml
"""

import copy
import difflib
import re
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from f1kit.recipe.component_checks import block_errors, component_problems
from f1kit.recipe.fields import Problems, RecipeError, short_repr
from f1kit.recipe.schema import STAGE_KINDS, Recipe
from f1kit.recipe.yaml_io import (
    MAX_RECIPE_BYTES,
    TooLarge,
    dump_yaml,
    load_yaml,
    too_big,
    yaml_message,
)

MAX_PROBLEMS = 100


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate the recipe at ``path``; any problem raises `RecipeError`."""
    source = str(path)
    path = Path(path)
    if not path.exists():
        raise RecipeError(source, [("", "no such recipe file")])
    if not path.is_file():
        raise RecipeError(source, [("", "expected a YAML file, got a directory")])
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:  # before reading it: a recipe is a few KB
            raise RecipeError(source, [("", too_big(size))])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(source, [("", f"cannot read the file: {err}")]) from None
    data = parse_yaml(text, source)
    return recipe_from_dict(apply_overrides(data, overrides, source), source)


def parse_yaml(text: str, source: str = "<recipe>") -> dict[str, Any]:
    """A recipe document -> its mapping; bad YAML, a duplicate key, a non-mapping or a document
    past the bounds (module docstring): RecipeError."""
    try:
        data = load_yaml(text)
    except TooLarge as err:
        raise RecipeError(source, [("", str(err))]) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as err:
        raise RecipeError(source, [("", f"not valid YAML: {yaml_message(err)}")]) from None
    if not isinstance(data, dict):
        got = f"{type(data).__name__} {_short(data)}" if data is not None else "an empty document"
        raise RecipeError(
            source, [("", f"expected a YAML mapping with keys name, model, stages, ...; got {got}")]
        )
    return data


def recipe_from_dict(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a parsed recipe; every problem (field or cross-section) raises `RecipeError`."""
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as err:
        problems = validation_problems(err)
    except TypeError as err:
        # pydantic wraps only ValueError; a block config's own check on a wrongly typed value
        # (the model's solver or sampler args) raises TypeError from F1Config's validator.
        problems = [("model", f"invalid value: {err}")]
    raise RecipeError(source, _with_component_problems(problems, data.get("model"))) from None


def _with_component_problems(problems: list[tuple[str, str]], model: Any) -> list[tuple[str, str]]:
    """``problems`` with each component argument's own problem at its key path
    (`f1kit.recipe.component_checks`), in place of the message F1Config's check gave for it under
    the bare key ``model``. The cross-section checks list them when every section is valid;
    otherwise they come here, with the other sections' problems."""
    precise = component_problems(model) if isinstance(model, Mapping) else []
    if not precise:
        return problems
    # Only a component build raises TypeError there (every other model value is typed by the
    # schema); a ValueError is recognised by its message.
    explained = block_errors(model)
    kept = [
        (path, message)
        for path, message in problems
        if path != "model" or not (message.startswith("invalid value: ") or message in explained)
    ]
    return kept + [p for p in precise if p not in kept]


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], source: str = "<recipe>"
) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``key.path=value`` override applied in order."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        key, sep, raw = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise RecipeError(
                source,
                [
                    (
                        f"--set {short_repr(text)}",
                        "expected KEY.PATH=VALUE such as stages.1.steps=10",
                    )
                ],
            )
        try:
            value = load_yaml(raw) if raw.strip() else None
        except TooLarge as err:
            raise RecipeError(source, [(key, f"--set value: {err}")]) from None
        except (yaml.YAMLError, ValueError, TypeError, RecursionError) as err:
            raise RecipeError(
                source,
                [(key, f"--set value {short_repr(raw)} is not valid YAML: {yaml_message(err)}")],
            ) from None
        _set(out, [p.strip() for p in parts], value, source, key)
    return out


def resolved_yaml(recipe: Recipe) -> str:
    """The recipe with every default filled in, keys in schema order; loads back to ``recipe``."""
    return dump_yaml(recipe.model_dump(mode="json"))


# ---- overrides -------------------------------------------------------------------------------


def _set(root: dict, parts: list[str], value: Any, source: str, key: str) -> None:
    def fail(message: str) -> RecipeError:
        return RecipeError(source, [(key, message)])

    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the recipe"
        if isinstance(node, list):
            index = _list_index(node, part, where, fail)
            if last:
                node[index] = value
                return
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return
            child = node.get(part)
            if child is None:  # a section left out (or null) in the file
                child = node[part] = {}
            node = child
        if not isinstance(node, (dict, list)):
            path = ".".join(parts[: depth + 1])
            raise fail(f"{path} is {short_repr(node)}, not a mapping or list, so it has no keys")


def _list_index(items: list, part: str, where: str, fail: Callable[[str], RecipeError]) -> int:
    if re.fullmatch(r"\d+", part):
        if int(part) >= len(items):
            raise fail(
                f"{where} has {len(items)} entries (indices 0..{len(items) - 1}), got index {part}"
            )
        return int(part)
    named = [i for i, it in enumerate(items) if isinstance(it, dict) and it.get("name") == part]
    if len(named) != 1:
        names = [it.get("name") for it in items if isinstance(it, dict)]
        raise fail(
            f"{where} is a list: expected an index 0..{len(items) - 1} or the name of one entry"
            f" {short_repr(names, 400)}, got {short_repr(part)}"
        )
    return named[0]


# ---- pydantic errors -> key paths ------------------------------------------------------------


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted key path, message naming the bad value and what is allowed)."""
    lines: list[list] = []  # [path, messages, got]
    errors = err.errors(include_url=False)
    for done, e in enumerate(errors):
        if len(lines) >= MAX_PROBLEMS:  # a huge document: the first ones say what is wrong
            lines = lines[:MAX_PROBLEMS]
            lines.append(["", [f"... and {len(errors) - done} more problems"], ""])
            break
        raw = tuple(e["loc"])
        loc = _clean_loc(raw)
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            lines += [[_join(loc, rel), [message], ""] for rel, message in cause.problems]
            continue
        path, message, got = _describe(e, raw, loc)
        # A union reports once per member at the same path: one line, "expected A or B".
        if (
            lines
            and lines[-1][0] == path
            and lines[-1][2] == got
            and e["type"] != "extra_forbidden"
        ):
            if message not in lines[-1][1]:
                lines[-1][1].append(message)
            continue
        lines.append([path, [message], got])
    return [
        (
            path,
            " or ".join([messages[0]] + [re.sub(r"^expected ", "", m) for m in messages[1:]]) + got,
        )
        for path, messages, got in lines
    ]


def _clean_loc(raw: tuple) -> tuple:
    """The key path of a pydantic location: walks the schema along ``raw`` and drops what pydantic
    inserts that is no key (the stage's tag: ``stages.1.train.steps`` is ``stages.1.steps``;
    union member labels such as ``list[str]``; ``[key]`` markers)."""
    tp: Any = Recipe
    out: list = []
    for part in raw:
        tp = _unwrap(tp)
        if part == "[key]":
            continue
        model = tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
        if isinstance(part, int):
            args = get_args(tp)
            if get_origin(tp) is tuple and len(args) > part and args[-1] is not Ellipsis:
                tp = args[part]
            else:
                tp = args[0] if get_origin(tp) in (list, tuple) and args else Any
            out.append(part)
        elif model is not None:
            field = model.model_fields.get(part)
            tp = field.annotation if field is not None else Any  # an unknown key stays in the path
            out.append(part)
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1] if get_args(tp) else Any
            out.append(part)
        elif _is_union(tp):  # a stage's tag selects that member; any other label is dropped
            members = [m for m in _members(tp) if part in _tags(m)]
            tp = members[0] if members else Any
        else:
            out.append(part)  # inside free-form data (component args): keys as given
    return tuple(out)


def _join(loc: tuple, rel: str = "") -> str:
    parts = [str(p) for p in loc] + ([rel] if rel else [])
    return ".".join(p if len(p) <= 80 else p[:77] + "..." for p in parts)


def _describe(e: dict, raw: tuple, loc: tuple) -> tuple[str, str, str]:
    """(path, message, ", got <value>" or "") of one pydantic error."""
    kind, value = e["type"], e.get("input")
    message = re.sub(r"^(Value|Assertion) error, ", "", e["msg"])
    if loc and isinstance(loc[-1], str):  # "tasks: unknown ..." under data.tasks: say it once
        message = re.sub(rf"^{re.escape(loc[-1])}: ", "", message)
    if kind == "extra_forbidden":
        allowed = _keys_at(raw[:-1])
        close = difflib.get_close_matches(str(raw[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        hint += f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return _join(loc), f"unknown key{hint}", ""
    if kind == "missing":
        return _join(loc), "required key is missing", ""
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = f"expected a stage kind, one of {', '.join(STAGE_KINDS)}"
        if kind == "union_tag_not_found":
            return _join(loc, "kind"), f"required key is missing; {expected}", ""
        return _join(loc, "kind"), expected, f", got {_short(value.get('kind'))}"
    if raw and raw[-1] == "[key]":  # a mapping key outside its allowed set
        return _join(loc), message.replace("Input should", "key should"), f", got {_short(loc[-1])}"
    message = re.sub(r"^Input should be (greater|less)", r"expected a value \1", message)
    message = message.replace("Input should be", "expected")
    if kind == "value_error":
        return _join(loc), message, ""  # our own messages already name the value
    if isinstance(value, (dict, BaseModel)):
        return _join(loc), message, ", got a mapping"
    return _join(loc), message, f", got {_short(value)}"


def _short(value: Any) -> str:
    return short_repr(value)


def _keys_at(raw: tuple) -> list[str]:
    """The keys the schema allows in the mapping at pydantic location ``raw`` ([] if unknown)."""
    tp: Any = Recipe
    for part in raw:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if get_origin(tp) not in (list, tuple):
                return []
            tp = get_args(tp)[0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        else:  # a tagged union of stages: pydantic's loc names the member by its tag
            members = [m for m in _members(tp) if part in _tags(m)]
            if not members:
                return []
            tp = members[0]
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is not None and getattr(origin, "__name__", "") == "Annotated":
            tp = get_args(tp)[0]
            continue
        members = [m for m in _members(tp) if m is not type(None)]
        if _is_union(tp) and len(members) == 1:
            tp = members[0]
            continue
        return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _members(tp: Any) -> list[Any]:
    if get_origin(tp) is not None and getattr(get_origin(tp), "__name__", "") == "Annotated":
        tp = get_args(tp)[0]
    return [_unwrap(m) for m in get_args(tp)] if _is_union(tp) else []


def _tags(model: Any) -> tuple:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ()
    field = model.model_fields.get("kind")
    return get_args(field.annotation) if field is not None else ()
