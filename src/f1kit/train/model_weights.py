"""A model state dict as one safetensors file, tied tensors stored once.

safetensors refuses tensors that share memory, so tied weights (one parameter under two names,
as LM heads tied to their embedding) are stored under their first name only; the file's
``f1kit.aliases`` metadata maps every other name to it (``{"head.weight": "embed.weight"}``).

A model declares its ties by sharing storage: :func:`tied_names` of its state dict is exactly
what :func:`save_model_weights` writes as aliases. Loading refuses an alias that names a stored
tensor or a missing one and, given the model, any alias the model does not declare, so metadata
can never silently put one tensor in another's place.
"""

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

ALIASES_KEY = "f1kit.aliases"


class WeightsError(ValueError):
    """A weights file that cannot be read or whose aliases the model does not declare."""


def _view_key(t: Tensor) -> tuple:
    return (
        t.device,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def tied_names(state: Mapping[str, Tensor]) -> dict[str, str]:
    """``{name: first name}`` for every entry that is the same view as an earlier entry.

    Example::

        model.head.weight = model.embed.weight
        tied_names(model.state_dict())  # {"head.weight": "embed.weight"}
    """
    seen: dict[tuple, str] = {}
    ties: dict[str, str] = {}
    for name, t in state.items():
        key = _view_key(t)
        if t.numel() and key in seen:
            ties[name] = seen[key]
        else:
            seen.setdefault(key, name)
    return ties


def save_model_weights(state: dict[str, Tensor], path: Path) -> None:
    """Write a state dict as safetensors, tied tensors once (see :func:`load_model_weights`).

    Every stored tensor is copied to its own contiguous CPU buffer."""
    aliases = tied_names(state)
    tensors = {
        name: t.detach().to("cpu", copy=True).contiguous()
        for name, t in state.items()
        if name not in aliases
    }
    save_file(tensors, str(path), metadata={ALIASES_KEY: json.dumps(aliases, sort_keys=True)})


def load_model_weights(
    path: Path, device: torch.device | str = "cpu", *, model: nn.Module | None = None
) -> dict[str, Tensor]:
    """The full state dict saved by :func:`save_model_weights`, tied names restored.

    Pass the ``model`` the weights are for: its ties (:func:`tied_names`) are then the only
    aliases accepted. Without it only the file's own consistency is checked.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(ALIASES_KEY, "{}")
            stored = set(f.keys())
        aliases = json.loads(raw)
    except Exception as err:  # safetensors raises its own error types; name the file in all
        raise WeightsError(f"{path}: unreadable ({_first_line(err)})") from err
    _check_aliases(path, aliases, stored, model)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as err:
        raise WeightsError(f"{path}: unreadable ({_first_line(err)})") from err
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state


def _check_aliases(path: Path, aliases: object, stored: set[str], model: nn.Module | None) -> None:
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise WeightsError(
            f"{path}: {ALIASES_KEY}: expected a JSON object of names, got {aliases!r}"
        )
    problems = []
    declared = tied_names(model.state_dict()) if model is not None else None
    for alias, target in sorted(aliases.items()):
        if alias in stored:
            problems.append(f"{alias} -> {target}: {alias} is a stored tensor")
        elif target not in stored:
            problems.append(f"{alias} -> {target}: {target} is not stored")
        elif declared is not None and declared.get(alias, alias) != declared.get(target, target):
            problems.append(f"{alias} -> {target}: the model does not tie them")
    if problems:
        ties = "" if declared is None else f"; the model ties {declared or 'nothing'}"
        raise WeightsError(f"{path}: {ALIASES_KEY} refused: {'; '.join(problems)}{ties}")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
