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
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from f1kit.model.config import F1Config
from f1kit.model.importers.parts import PARTS, part_of, parts_of

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
        state = dict(tensors)
        parts = sorted(parts_of(state), key=PARTS.index)
        record = {
            "format": FORMAT,
            "model": config.model_dump(mode="json"),
            "parts": parts,
            "source": source or {},
            "dropped": dropped or {},
        }
        (tmp / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        for name, path in (files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if Path(path).is_dir():
                shutil.copytree(path, target)
            else:
                shutil.copy2(path, target)
        for f in (tmp / CONFIG, tmp / WEIGHTS):
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
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
        from f1kit.model.pretrained import read_config  # a policy: all parts of its model

        _, config, _ = read_config(directory)
        with torch.device("meta"):
            from f1kit.model.f1 import F1

            keys = F1(config).state_dict().keys()
        parts = tuple(sorted(parts_of(keys), key=PARTS.index))
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
) -> list[str]:
    """What is wrong with starting a model of ``model_parts`` from ``found``: a part neither
    held, ``random`` nor ``provided``; ``random`` or ``provided`` naming a held part; and, given
    the model's ``config``, settings the shapes cannot check (the flow-time convention of the
    action weights, RoPE base, norm epsilon, MLP kinds)."""
    random, provided, held = set(random), set(provided), set(found.parts)
    model_parts = set(model_parts)
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
    lacking = sorted(model_parts - held - random - provided, key=PARTS.index)
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
    if parts - {"tokenizer"}:  # trunk weights
        checks.append(("trunk.rope_base", ours.trunk.rope_base, theirs.trunk.rope_base))
        checks.append(("trunk.norm_eps", ours.trunk.norm_eps, theirs.trunk.norm_eps))
    for part in sorted(parts - {"tokenizer"}, key=PARTS.index):
        mine, other = getattr(ours.trunk, part), getattr(theirs.trunk, part)
        if mine is not None and other is not None:
            checks.append((f"trunk.{part}.mlp", mine.mlp, other.mlp))
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


def iter_weights(directory: ModelDir) -> Iterator[tuple[str, Tensor]]:
    """The directory's tensors, one at a time (memory-mapped reads)."""
    with safe_open(str(directory.weights), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
            yield key, handle.get_tensor(key)


def init_from(
    model: nn.Module,
    directory: str | Path,
    random: Iterable[str] = (),
    *,
    provided: Iterable[str] = (),
    key: str = "init_from",
) -> tuple[str, ...]:
    """Load the weights of a model directory into ``model``; return the parts loaded.

    random: the parts of ``model`` the directory does not hold, which keep their current
    weights; any other part it lacks is an error, as is naming a part it does hold.
    provided: parts loaded from elsewhere (a tokenizer from ``tokenizer.path``): the directory
    must not hold them too. Every tensor of the directory must exist in the model with the same
    shape (listed otherwise); its model config must agree where shapes cannot tell
    (`part_problems`).
    key: the recipe key that names the directory (heads every error).
    """
    found = read_model_dir(directory)
    state = model.state_dict()
    config = getattr(model, "config", None)
    config = config if isinstance(config, F1Config) else None
    problems = part_problems(found, parts_of(state), random, provided, config)
    if problems:
        raise ModelDirError(f"{key}: " + "; ".join(problems))
    held = set(found.parts)
    unexpected, shapes, loaded = [], [], {}
    in_file: set[str] = set()
    for name, tensor in iter_weights(found):
        in_file.add(name)
        if name not in state:
            unexpected.append(name)
        elif tuple(tensor.shape) != tuple(state[name].shape):
            shapes.append(f"{name}: file {tuple(tensor.shape)} vs model {tuple(state[name].shape)}")
        else:
            loaded[name] = tensor
    missing = [k for k in state if part_of(k) in held and k not in in_file]
    if unexpected or shapes or missing:
        lines = [f"{key}: {found.weights} does not fit the recipe's model"]
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise ModelDirError("\n".join(lines))
    with torch.no_grad():
        for name, tensor in loaded.items():
            state[name].copy_(tensor)
    return tuple(p for p in PARTS if p in held)
