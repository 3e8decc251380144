"""Save and load an F1 policy as a directory, never through pickle (DESIGN.md s9).

    <dir>/config.json                the model config (`F1Config`) and the policy's cameras/history
    <dir>/model.safetensors          every weight, the frozen tokenizer included
    <dir>/normalization.safetensors  state/action statistics (modes in the metadata), if any

Writing goes to a temporary sibling directory that replaces ``<dir>`` in one rename, so a crash
never leaves a half-written checkpoint. Loading is strict: missing, unexpected or mis-shaped
tensors raise `PretrainedError` listing every one of them.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from f1kit.model.config import F1Config
from f1kit.model.f1 import F1
from f1kit.model.policy import F1Policy
from f1kit.train import load_model_weights, save_model_weights
from flow import Normalizer

FORMAT = "f1kit.policy/1"
CONFIG, WEIGHTS, STATS = "config.json", "model.safetensors", "normalization.safetensors"


class PretrainedError(ValueError):
    """A policy directory that is incomplete or does not match its config."""


def save_pretrained(policy: F1Policy, directory: str | Path) -> Path:
    """Write ``policy`` to ``directory`` atomically (an existing one is replaced)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        config = {
            "format": FORMAT,
            "model": policy.model.config.model_dump(mode="json"),
            "policy": {"cameras": list(policy.cameras), "history_offsets": list(policy.offsets)},
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        # The checkpoints' writer: contiguous CPU copies, tied tensors stored once.
        save_model_weights(policy.model.state_dict(), tmp / WEIGHTS)
        stats: dict[str, torch.Tensor] = {}
        modes: dict[str, str] = {"format": FORMAT}
        for name, norm in (("state", policy.state_norm), ("action", policy.action_norm)):
            if norm is not None:
                stats[f"{name}.center"], stats[f"{name}.scale"] = (
                    norm.center.cpu(),
                    norm.scale.cpu(),
                )
                modes[f"{name}.mode"] = norm.mode
        if stats:
            save_file(stats, str(tmp / STATS), metadata=modes)
        for f in tmp.iterdir():
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


def read_config(directory: str | Path) -> tuple[F1Config, dict]:
    """The model config and the policy settings of a saved policy."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise PretrainedError(f"{path}: not found (is {directory} a saved f1kit policy?)")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise PretrainedError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    try:
        config = F1Config.model_validate(data["model"])
    except ValidationError as err:
        raise PretrainedError(f"{path}: invalid model config:\n{err}") from err
    return config, data.get("policy", {})


def load_pretrained(
    directory: str | Path, *, device: torch.device | str = "cpu", **policy_args: object
) -> F1Policy:
    """Rebuild the policy saved in ``directory``; ``policy_args`` override `F1Policy` options."""
    directory = Path(directory)
    config, settings = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise PretrainedError(f"{weights}: not found")
    model = F1(config)
    load_weights(model, load_model_weights(weights), str(weights))
    model.to(device)
    stats = _read_stats(directory / STATS)
    args = {
        "cameras": tuple(settings.get("cameras", ("corner",))),
        "history_offsets": tuple(settings.get("history_offsets", (-9, -6, -3, 0))),
        "state_norm": stats.get("state"),
        "action_norm": stats.get("action"),
        **policy_args,
    }
    return F1Policy(model, **args)  # type: ignore[arg-type]


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Strict load: every tensor present with its shape, nothing extra, or a listing error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(tensors)
        if tensors[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"{source}: does not match the model config"]
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise PretrainedError("\n".join(lines))
    model.load_state_dict(tensors, strict=True)


def _read_stats(path: Path) -> dict[str, Normalizer]:
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    out = {}
    for name in ("state", "action"):
        if f"{name}.center" in tensors:
            mode = meta.get(f"{name}.mode")
            if mode is None:
                raise PretrainedError(f"{path}: no mode for {name!r} in the metadata")
            out[name] = Normalizer(tensors[f"{name}.center"], tensors[f"{name}.scale"], mode)
    return out
