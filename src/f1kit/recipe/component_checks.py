"""A model's components against their builders: every registered ``name`` with its ``args`` (vision
encoder, text tokenizer, ODE solver, time sampler) and the tokenizer's ``overrides`` are held
against the parameters and types of what they are passed to, when a recipe is validated; a typo
or a wrong type would otherwise surface only when the model is built, after the demos.

Types are checked as YAML gives them, without coercion: ``"3"`` is not an int, nor is ``true``
or ``2.5``; an int is a float (PEP 484), a list is a tuple (YAML has no tuples), a str is a path.
A block's own value rules (``steps >= 1``, an image size that is a multiple of the patch) are found
by building the cheap config the model builds. Each problem names its full key path:
``model.action.solver.args.steps: expected int, got '3'``.

`path_problems` names the files a model reads that do not exist (trained tokenizer weights, a
pretrained encoder or text tokenizer); `f1kit.recipe.check_datasets` runs it with the other
local-file checks, so ``recipe show`` and ``recipe list`` need no weights.
"""

import collections.abc
import inspect
import os
import types
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel

from f1kit.model import TEXT_TOKENIZERS, VISION_ENCODERS
from f1kit.model.config import TokenizerConfig
from f1kit.model.conv_vision import ConvConfig
from f1kit.model.text import ByteTokenizer, HFTokenizer
from f1kit.model.vision import ViTConfig
from f1kit.recipe.fields import short_repr as _short
from flow import NATIVE_METHODS, TIME_SAMPLERS, TORCHDIFFEQ_METHODS, ODESolver, make_time_sampler
from foresight import VQVAEConfig

Problem = tuple[str, str]


@dataclass(frozen=True)
class Builder:
    """What a component's ``args`` are passed to.

    params: the callable whose signature and type hints name the args. skip: its parameters the
    model fills in (a vision encoder's ``out_width``, the solver's ``method``). build: a cheap
    build that applies the block's own value rules (None: it needs files, or weights). open: more
    keyword args pass through unchecked. paths: args naming a local file or directory. partial:
    args override some fields of a preset (none is required). noun: what messages call them.
    """

    params: Callable[..., Any]
    skip: tuple[str, ...] = ()
    build: Callable[[str, dict[str, Any]], object] | None = None
    open: bool = False
    paths: tuple[str, ...] = ()
    partial: bool = False
    noun: str = "args"


def _conv(name: str, args: dict[str, Any]) -> object:
    return ConvConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


def _vqvae(preset: str) -> Callable[[str, dict[str, Any]], object]:
    # F1Config's own check builds exactly this, so its message is the one pydantic shows.
    return lambda name, args: TokenizerConfig(preset=preset, overrides=args).vqvae_config()


VISION = {
    "vit": Builder(ViTConfig, build=lambda name, args: ViTConfig(**args)),
    "conv": Builder(ConvConfig, build=_conv),
    "siglip": Builder(VISION_ENCODERS["siglip"], skip=("out_width",), open=True, paths=("path",)),
}
TEXT = {
    "bytes": Builder(ByteTokenizer, build=lambda name, args: ByteTokenizer(**args)),
    "hf": Builder(HFTokenizer, paths=("path",)),
}
SOLVER = Builder(ODESolver, skip=("method",), build=lambda name, args: ODESolver(name, **args))


def _sampler(name: str, args: dict[str, Any]) -> object:
    return make_time_sampler(name, **args)


SAMPLER = {name: Builder(cls, build=_sampler) for name, cls in TIME_SAMPLERS.items()}


def component_problems(model: BaseModel | Mapping[str, Any]) -> list[Problem]:
    """Every unknown, missing, mistyped or invalid component argument of ``model`` (an
    `F1Config`, or the raw ``model:`` mapping of a recipe that failed validation)."""
    return [p for c in _components(model) for p in c.problems()]


def block_errors(model: BaseModel | Mapping[str, Any]) -> set[str]:
    """The messages the components' own builders raise for ``model``'s args: what F1Config's
    check reports under the bare key ``model`` when it builds the solver, sampler and tokenizer
    config (the loader shows the precise problems above in their place)."""
    return {e for c in _components(model) if (e := c.build_error()) is not None}


def path_problems(model: BaseModel | Mapping[str, Any]) -> list[Problem]:
    """The files ``model`` reads that are not there (relative paths from the working directory)."""
    found = []
    tokenizer = _at(_at(model, "generation"), "tokenizer")
    found.append(("model.generation.tokenizer.path", _at(tokenizer, "path")))
    for c in _components(model):
        if c.builder is not None and isinstance(c.args, Mapping):
            found += [(f"{c.at}.{c.args_key}.{k}", c.args.get(k)) for k in c.builder.paths]
    problems = []
    for where, path in found:
        if not isinstance(path, str) or any(unicodedata.category(ch) == "Cc" for ch in path):
            continue  # unset, or not a path (the schema or f1kit.recipe.limits names it)
        if not Path(path).exists():
            cwd = "" if Path(path).is_absolute() else f" (relative to {os.getcwd()})"
            problems.append((where, f"no such file or directory: {_short(path)}{cwd}"))
    return problems


# ---- the components of a model ---------------------------------------------------------------


@dataclass
class _Component:
    at: str  # key path of its section: model.action.solver
    what: str  # how messages name it: "vit", "euler", "VQVAEConfig"
    name_problem: str | None
    builder: Builder | None
    name: str
    args: Any
    args_key: str = "args"  # the tokenizer's are its overrides

    def problems(self) -> list[Problem]:
        if self.name_problem is not None:
            return [(f"{self.at}.name", self.name_problem)]
        if self.builder is None or not isinstance(self.args, Mapping):
            return []  # an unregistered name (the model check names it) or args the schema refuses
        at = f"{self.at}.{self.args_key}"
        found = _arg_problems(self.builder, self.what, self.args, at)
        if not found and (error := self.build_error()) is not None:
            found.append((at, error))
        return found

    def build_error(self) -> str | None:
        if self.builder is None or self.builder.build is None or not isinstance(self.args, Mapping):
            return None
        try:
            self.builder.build(self.name, dict(self.args))
        except (TypeError, ValueError) as err:
            return str(err)
        return None


def _components(model: BaseModel | Mapping[str, Any]) -> list[_Component]:
    out = []
    for key, registry, builders, kind in (
        ("vision", VISION_ENCODERS, VISION, "vision encoder"),
        ("text", TEXT_TOKENIZERS, TEXT, "text tokenizer"),
    ):
        section = _at(model, key)
        name = _at(section, "name")
        if not isinstance(name, str):
            continue
        problem, builder = None, None
        if name not in registry:
            problem = (
                f"{_short(name)} is not a registered {kind}; expected one of {sorted(registry)}"
            )
        else:  # a newly registered component without a Builder here: its callable's signature
            builder = builders.get(name) or Builder(registry[name], skip=_first(registry[name]))
        out.append(_Component(f"model.{key}", name, problem, builder, name, _at(section, "args")))
    action = _at(model, "action")
    solver = _at(action, "solver")
    name, args = _at(solver, "name"), _at(solver, "args")
    if isinstance(name, str):
        backend = args.get("backend", "native") if isinstance(args, Mapping) else "native"
        methods = TORCHDIFFEQ_METHODS if backend == "torchdiffeq" else NATIVE_METHODS
        problem = None
        if name not in methods:
            problem = (
                f"{_short(name)} is not an ODE method of backend {_short(backend)}; expected "
                f"one of {list(methods)}"
                + ("" if backend == "torchdiffeq" else " (backend torchdiffeq has more)")
            )
        out.append(_Component("model.action.solver", name, problem, SOLVER, name, args))
    sampler = _at(action, "time_sampler")
    name = _at(sampler, "name")
    if isinstance(name, str):
        problem = None
        if name not in SAMPLER:
            problem = (
                f"{_short(name)} is not a registered time sampler; expected one of "
                f"{sorted(SAMPLER)}"
            )
        # an unknown name still builds: its error is the one F1Config's check gave
        builder = SAMPLER.get(name, Builder(make_time_sampler, build=_sampler))
        out.append(
            _Component(
                "model.action.time_sampler", name, problem, builder, name, _at(sampler, "args")
            )
        )
    tokenizer = _at(_at(model, "generation"), "tokenizer")
    overrides = _at(tokenizer, "overrides")
    if overrides is not None:
        preset = _at(tokenizer, "preset") or "small_64"
        build = _vqvae(preset) if isinstance(preset, str) else None
        builder = Builder(VQVAEConfig, build=build, partial=True, noun="fields")
        at, what = "model.generation.tokenizer", "VQVAEConfig"
        out.append(_Component(at, what, None, builder, "overrides", overrides, "overrides"))
    return out


def _at(section: Any, key: str) -> Any:
    """``section[key]`` of a mapping or a pydantic model (None when it is neither or lacks it)."""
    if isinstance(section, Mapping):
        return section.get(key)
    if isinstance(section, BaseModel):
        return getattr(section, key, None)
    return None


def _first(builder: Callable[..., Any]) -> tuple[str, ...]:
    """The leading positional parameters without defaults (``out_width``): the model's own."""
    out = []
    for p in inspect.signature(builder).parameters.values():
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is not p.empty:
            break
        out.append(p.name)
    return tuple(out[:1])


# ---- args against a signature ----------------------------------------------------------------


def _arg_problems(builder: Builder, what: str, args: Mapping[Any, Any], at: str) -> list[Problem]:
    params = {
        name: p
        for name, p in inspect.signature(builder.params).parameters.items()
        if name not in builder.skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    hints = _hints(builder.params)
    problems = []
    unknown = [k for k in args if k not in params]
    if unknown and not builder.open:
        problems.append(
            (
                at,
                f"unknown {what} {builder.noun} [{', '.join(map(_short, unknown))}]; "
                f"expected some of {list(params)}",
            )
        )
    missing = [n for n, p in params.items() if p.default is p.empty and n not in args]
    missing = [] if builder.partial else missing
    if missing:
        problems.append((at, f"missing {what} {builder.noun} {missing} (they have no default)"))
    for key, value in args.items():
        if key in params:
            problems += _type_problems(value, hints.get(key, Any), f"{at}.{key}")
    return problems


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return get_type_hints(function)
    except Exception:  # an annotation that does not resolve: those params go unchecked
        return {}


def _type_problems(value: Any, hint: Any, at: str) -> list[Problem]:
    """``value`` against the type ``hint``, strictly (see the module docstring)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, str):
        return []
    if origin is Annotated:
        return _type_problems(value, args[0], at)
    if origin in (Union, types.UnionType):
        if any(not _type_problems(value, member, at) for member in args):
            return []
        return [(at, f"expected {_type_name(hint)}, got {_short(value)}")]
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return []
        return [(at, f"expected one of {', '.join(map(repr, args))}, got {_short(value)}")]
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return [(at, f"expected a list ({_type_name(hint)}), got {_short(value)}")]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return [(at, f"expected {len(args)} items ({_type_name(hint)}), got {len(value)}")]
            pairs = list(zip(value, args, strict=True))
        else:
            pairs = [(v, args[0] if args else Any) for v in value]
        return [p for i, (v, h) in enumerate(pairs) for p in _type_problems(v, h, f"{at}.{i}")]
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            return [(at, f"expected a mapping ({_type_name(hint)}), got {_short(value)}")]
        item = args[1] if len(args) == 2 else Any
        return [p for k, v in value.items() for p in _type_problems(v, item, f"{at}.{k}")]
    if hint is None or hint is type(None):
        return [] if value is None else [(at, f"expected null, got {_short(value)}")]
    if not isinstance(hint, type):
        return []  # a TypeVar, a Protocol alias...: the builder judges
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif issubclass(hint, os.PathLike):
        ok = isinstance(value, (str, os.PathLike))
    else:
        ok = isinstance(value, hint)
    return [] if ok else [(at, f"expected {_type_name(hint)}, got {_short(value)}")]


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and get_origin(hint) is None:
        return hint.__name__
    return str(hint).replace("typing.", "").replace("pathlib.", "")
