"""An f1kit model directory: the weights of some or all parts of an F1 model, and its config.

    <dir>/config.json        {"format": "f1kit.model/1", "model": F1Config, "parts": [...],
                              "source": {...}, "dropped": {source tensor: reason}}
    <dir>/model.safetensors  the tensors of ``parts`` under f1kit's names
    <dir>/<files>            e.g. tokenizer/ (a text tokenizer's files)

``f1kit convert`` writes one; a recipe starts its model (``model.init_from``) or a stage
(``stages.N.init_from``) from one, or from a saved policy directory. Relative paths inside the
model config (a text tokenizer's ``path``) are relative to the directory.

Starting from a directory is strict: every tensor it holds must exist in the model with the
same shape, and each part of the model it does not hold must be named in ``random`` (it keeps
its initialisation), so a partial import never passes for a whole one.
"""

import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from f1kit.model.config import F1Config
from f1kit.model.importers.parts import PARTS, part_of, parts_of
from f1kit.model.importers.safetensors_stream import write_safetensors
from f1kit.model.publish import publish_directory

FORMAT = "f1kit.model/1"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
POLICY_FORMATS = ("f1kit.policy/1", "f1kit.policy/2")


class ModelDirError(ValueError):
    """A model directory that cannot be read, or does not fit the model it starts."""


@dataclass(frozen=True)
class ModelDir:
    """What a model (or policy) directory holds: its config, parts, weights file, provenance."""

    path: Path
    config: F1Config
    parts: tuple[str, ...]
    source: dict[str, Any]
    dropped: dict[str, str]

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS


def write_model_dir(
    directory: str | Path,
    config: F1Config,
    tensors: Iterable[tuple[str, Tensor]],
    *,
    source: dict[str, Any] | None = None,
    dropped: dict[str, str] | None = None,
    files: dict[str, Path] | None = None,
) -> Path:
    """Write a model directory atomically (a temporary sibling renamed into place); an existing
    ``directory`` is replaced. ``files``: directory-relative name -> file or folder to copy."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        # One tensor in memory at a time: the parts are known once every name is written.
        names = write_safetensors(tmp / WEIGHTS, tensors, metadata={"format": FORMAT})
        parts = sorted(parts_of(names), key=PARTS.index)
        record = {
            "format": FORMAT,
            "model": config.model_dump(mode="json"),
            "parts": parts,
            "source": source or {},
            "dropped": dropped or {},
        }
        (tmp / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
        for name, path in (files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if Path(path).is_dir():
                shutil.copytree(path, target)
            else:
                shutil.copy2(path, target)
        publish_directory(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_model_dir(directory: str | Path) -> ModelDir:
    """The config, parts and provenance of a model directory, or of a saved policy (which holds
    every part of its model)."""
    directory = Path(directory)
    path = directory / CONFIG
    if not path.is_file():
        raise ModelDirError(
            f"{path}: not found (expected an f1kit model directory from `f1kit convert`, or a "
            "saved policy)"
        )
    if not (directory / WEIGHTS).is_file():
        raise ModelDirError(f"{directory / WEIGHTS}: not found")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ModelDirError(f"{path}: not valid JSON ({err})") from err
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt in POLICY_FORMATS:
        from f1kit.model.importers.registry import expected_shapes
        from f1kit.model.pretrained import read_config  # a policy: all parts of its model

        _, config, _ = read_config(directory)
        parts = tuple(sorted(parts_of(expected_shapes(config, PARTS)), key=PARTS.index))
        return ModelDir(directory, config, parts, {"kind": "f1kit-policy"}, {})
    if fmt != FORMAT:
        raise ModelDirError(f"{path}: format {fmt!r}, expected {FORMAT!r} or a policy's")
    unknown = sorted(set(data) - {"format", "model", "parts", "source", "dropped"})
    if unknown:
        raise ModelDirError(f"{path}: unknown keys {unknown}")
    model = _resolve_paths(data.get("model"), directory)
    try:
        config = F1Config.model_validate(model)
    except ValueError as err:
        raise ModelDirError(f"{path}: invalid model config:\n{err}") from err
    parts = tuple(data.get("parts", ()))
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise ModelDirError(f"{path}: parts {bad} are not parts of F1 {PARTS}")
    return ModelDir(directory, config, parts, data.get("source", {}), data.get("dropped", {}))


def _resolve_paths(model: Any, directory: Path) -> Any:
    """The text tokenizer's relative ``path`` made relative to ``directory``."""
    if not isinstance(model, dict):
        return model
    text = model.get("text")
    if isinstance(text, dict) and isinstance(text.get("args"), dict):
        path = text["args"].get("path")
        if isinstance(path, str) and not Path(path).is_absolute():
            args = {**text["args"], "path": str(directory / path)}
            model = {**model, "text": {**text, "args": args}}
    return model


def part_problems(
    found: ModelDir,
    model_parts: Iterable[str],
    random: Iterable[str] = (),
    provided: Iterable[str] = (),
    config: F1Config | None = None,
    *,
    match: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> list[str]:
    """What is wrong with starting a model of ``model_parts`` from ``found``: a part neither
    held, ``random``, ``provided`` nor matched; ``random`` or ``provided`` naming a held part;
    and, given the model's ``config``, settings the shapes cannot check (attention geometry,
    the flow-time convention of the action weights, RoPE base, norm epsilon, MLP kinds, the
    vision and text components, the VQ tokenizer's config).

    match: parts the model already has, which a directory may hold only if they are equal
    (checked on load: a stage's tokenizer, whose codes the run has computed). only: consider
    just these parts (of both the model and the directory)."""
    random, provided, match = set(random), set(provided), set(match)
    model_parts, held = set(model_parts), set(found.parts)
    if only is not None:
        model_parts, held = model_parts & set(only), held & set(only)
    problems = []
    unknown = sorted(random - set(PARTS))
    if unknown:
        problems.append(f"random: {unknown} are not parts of F1 {PARTS}")
    both = sorted(random & held)
    if both:
        problems.append(f"random: {both} are in {found.path}; remove them from random")
    twice = sorted(provided & held)
    if twice:
        problems.append(
            f"{found.path} holds {twice} weights that the recipe also loads from elsewhere "
            "(model.generation.tokenizer.path); keep one source"
        )
    lacking = sorted(model_parts - held - random - provided - match, key=PARTS.index)
    if lacking:
        problems.append(
            f"{found.path} holds no {lacking} weights (it holds {list(found.parts)}); list them "
            f"under random to start them from scratch: random: {lacking}"
        )
    extra = sorted(held - model_parts, key=PARTS.index)
    if extra:
        problems.append(f"{found.path} holds {extra} weights the model has no place for")
    if config is not None:
        problems += _setting_problems(found, config, held & model_parts)
    return problems


def _setting_problems(found: ModelDir, config: F1Config, parts: set[str]) -> list[str]:
    ours, theirs = config, found.config
    checks: list[tuple[str, object, object]] = []
    if parts - {"tokenizer"}:  # trunk weights: what q/k/v shapes cannot tell apart
        for name in ("depth", "heads", "kv_heads", "head_dim", "rope_base", "norm_eps"):
            checks.append((f"trunk.{name}", getattr(ours.trunk, name), getattr(theirs.trunk, name)))
    for part in sorted(parts - {"tokenizer"}, key=PARTS.index):
        mine, other = getattr(ours.trunk, part), getattr(theirs.trunk, part)
        if mine is not None and other is not None:
            checks.append((f"trunk.{part}.mlp", mine.mlp, other.mlp))
    if "understanding" in parts:
        checks.append(("vision.name", ours.vision.name, theirs.vision.name))
        for arg in sorted(set(ours.vision.args) & set(theirs.vision.args) - {"path"}):
            checks.append((f"vision.args.{arg}", ours.vision.args[arg], theirs.vision.args[arg]))
        checks.append(("text.name", ours.text.name, theirs.text.name))
        eos = (ours.text.args.get("append_eos", True), theirs.text.args.get("append_eos", True))
        if ours.text.name == theirs.text.name == "hf":  # the prompt format the weights saw
            checks.append(("text.args.append_eos", *eos))
    if "action" in parts:
        checks.append(
            (
                "action.weights_convention",
                ours.action.weights_convention,
                theirs.action.weights_convention,
            )
        )
    if "tokenizer" in parts and ours.generation is not None and theirs.generation is not None:
        mine_vq = ours.generation.tokenizer.vqvae_config()
        other_vq = theirs.generation.tokenizer.vqvae_config()
        checks.append(("generation.tokenizer (its VQVAEConfig)", mine_vq, other_vq))
    return [
        f"model.{key}: {mine!r}, but {found.path} was trained with {other!r}"
        for key, mine, other in checks
        if mine != other
    ]


def stored_shapes(directory: ModelDir) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in the directory's weights, read from the header alone."""
    with safe_open(str(directory.weights), framework="pt") as handle:
        keys = list(handle.keys())
        return {k: tuple(handle.get_slice(k).get_shape()) for k in keys}


def tensor_problems(
    directory: ModelDir, expected: dict[str, tuple[int, ...]], parts: Iterable[str]
) -> list[str]:
    """The directory's tensors of ``parts`` against the model's shapes ``expected`` (every
    state-dict tensor): missing, unexpected and mis-shaped ones, one line per kind."""
    parts = set(parts)
    stored = {k: v for k, v in stored_shapes(directory).items() if _part(k) in parts}
    missing = [k for k in expected if _part(k) in parts and k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k}: file {stored[k]} vs model {expected[k]}"
        for k in stored
        if k in expected and stored[k] != tuple(expected[k])
    ]
    return [
        f"{title} ({len(items)}): " + ", ".join(items)
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        )
        if items
    ]


def _part(key: str) -> str | None:
    try:
        return part_of(key)
    except ValueError:  # a tensor of no part: reported as unexpected
        return None


def init_from(
    model: nn.Module,
    directory: str | Path,
    random: Iterable[str] = (),
    *,
    provided: Iterable[str] = (),
    match: Iterable[str] = (),
    only: Iterable[str] | None = None,
    key: str = "init_from",
) -> tuple[str, ...]:
    """Load the weights of a model directory into ``model``; return the parts loaded.

    random: the parts of ``model`` the directory does not hold, which keep their current
    weights; any other part it lacks is an error, as is naming a part it does hold.
    provided: parts loaded from elsewhere (a tokenizer from ``tokenizer.path``): the directory
    must not hold them too. match: parts the directory may hold only if they equal the model's
    (then not loaded; a run's tokenizer, whose codes it computed). only: load just these parts.
    Every tensor must fit the model's shape (all mismatches listed, checked on the header before
    any data is read); the model config must agree where shapes cannot tell (`part_problems`).
    Tensors are read and copied one at a time. key: the recipe key naming the directory.
    """
    found = read_model_dir(directory)
    state = model.state_dict()
    config = getattr(model, "config", None)
    config = config if isinstance(config, F1Config) else None
    problems = part_problems(
        found, parts_of(state), random, provided, config, match=match, only=only
    )
    if problems:
        raise ModelDirError(f"{key}: " + "; ".join(problems))
    held = set(found.parts) if only is None else set(found.parts) & set(only)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    problems = tensor_problems(found, expected, held)
    if problems:
        lines = [f"{key}: {found.weights} does not fit the recipe's model", *problems]
        raise ModelDirError("\n  ".join(lines))
    compared = held & set(match)
    with torch.no_grad(), safe_open(str(found.weights), framework="pt") as handle:
        names = [(n, _part(n)) for n in handle.keys()]  # noqa: SIM118 (not iterable)
        # Compare first: a refused directory leaves the model untouched.
        differ = [
            n
            for n, part in names
            if part in compared
            and not torch.equal(handle.get_tensor(n).to(state[n].dtype), state[n].cpu())
        ]
        if differ:
            raise ModelDirError(
                f"{key}: {found.path} holds a {sorted(compared)} that differs from the run's "
                f"({len(differ)} tensors, e.g. {differ[0]}); the run's codes were computed with "
                "its own, so start from a directory with the same one (or without it)"
            )
        for name, part in names:
            if part in held - compared:
                state[name].copy_(handle.get_tensor(name))
    return tuple(p for p in PARTS if p in held - compared)
