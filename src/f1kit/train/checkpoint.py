"""Atomic, resumable training checkpoints.

Layout under a stage's output directory::

    checkpoints/
      step-0000100/
        model.safetensors   full model state dict (trainable and frozen); tied tensors stored once
        trainer.pt          optimizer, scheduler, sampler position, step, RNG states (torch.save;
                            tensors and plain containers only, read with weights_only=True)
        meta.json           step, settings, loss, elapsed seconds, versions
      step-0000200/
      latest                the name of the newest complete checkpoint ("step-0000200")

A checkpoint is written into ``checkpoints/.tmp-step-XXXXXXX``, every file fsynced, then renamed
onto its final name with ``os.replace`` and only then published by atomically replacing
``latest``. A kill at any moment leaves either the previous checkpoint or the new one as latest;
a half-written ``.tmp-*`` directory is ignored and removed by :func:`load_latest`.
"""

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

log = logging.getLogger(__name__)

MODEL_FILE, TRAINER_FILE, META_FILE, LATEST = (
    "model.safetensors",
    "trainer.pt",
    "meta.json",
    "latest",
)
_STEP_DIR = re.compile(r"^step-(\d{7,})$")
_ALIASES_KEY = "f1kit.aliases"


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to open directories.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _split_aliases(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Copies of the tensors to store, and ``{alias: stored name}`` for tied entries.

    safetensors refuses tensors that share memory; tied weights (the same view under two names)
    are stored once, anything else is copied to its own CPU buffer.
    """
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in state.items():
        key = (
            t.device,
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            tuple(t.stride()),
            t.dtype,
        )
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu", copy=True).contiguous()
    return tensors, aliases


def save_model_weights(state: dict[str, Tensor], path: Path) -> None:
    """Write a state dict as safetensors, tied tensors once (see :func:`load_model_weights`)."""
    tensors, aliases = _split_aliases(state)
    save_file(tensors, str(path), metadata={_ALIASES_KEY: json.dumps(aliases, sort_keys=True)})


def load_model_weights(path: Path, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The full state dict saved by :func:`save_model_weights`, tied names restored."""
    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get(_ALIASES_KEY, "{}"))
    state = load_file(str(path), device=str(device))
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint directory."""

    path: Path
    step: int
    meta: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def load_model(self, model: nn.Module, strict: bool = True) -> None:
        """Copy the saved weights into ``model`` (on the model's device)."""
        device = next(iter(model.state_dict().values()), torch.empty(0)).device
        model.load_state_dict(load_model_weights(self.model_path, device), strict=strict)

    def trainer_state(self) -> dict:
        """Optimizer, scheduler, sampler and RNG state (CPU tensors), read without pickle code."""
        return torch.load(self.path / TRAINER_FILE, map_location="cpu", weights_only=True)


def save_checkpoint(
    out_dir: Path,
    step: int,
    model_state: dict[str, Tensor],
    trainer_state: dict,
    meta: dict,
    keep: int = 2,
) -> Checkpoint:
    """Atomically write checkpoint ``step`` under ``out_dir/checkpoints``, publish it as latest,
    and delete all but the newest ``keep`` checkpoints."""
    if keep < 1:
        raise ValueError(f"keep: expected >= 1 checkpoints to keep, got {keep}")
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    meta = {**meta, "step": step, "format": 1, "torch": torch.__version__}
    save_model_weights(model_state, tmp / MODEL_FILE)
    torch.save(trainer_state, tmp / TRAINER_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    for name in (MODEL_FILE, TRAINER_FILE, META_FILE):
        _fsync_file(tmp / name)
    _fsync_dir(tmp)
    if final.exists():
        # Only reachable when a run died between publishing this step's directory and `latest`;
        # `latest` still names an older checkpoint, so the stale copy can go.
        stale = root / f".tmp-stale-{step_name(step)}"
        os.replace(final, stale)
        shutil.rmtree(stale)
    os.replace(tmp, final)
    _fsync_dir(root)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    _fsync_file(pointer)
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    # Newer directories are left from a killed run that is now being redone; they are stale.
    complete = _complete_checkpoints(root)
    older = [c for c in complete if c.step < step]
    stale = [c for c in complete if c.step > step] + older[: max(0, len(older) - (keep - 1))]
    for old in stale:
        shutil.rmtree(old.path, ignore_errors=True)
    log.info("checkpoint %s written", final)
    return Checkpoint(final, step, meta)


def _read(path: Path) -> Checkpoint | None:
    match = _STEP_DIR.match(path.name)
    if match is None or not path.is_dir():
        return None
    if not all((path / name).is_file() for name in (MODEL_FILE, TRAINER_FILE, META_FILE)):
        return None
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("step") != int(match.group(1)):
        return None
    return Checkpoint(path, int(match.group(1)), meta)


def _complete_checkpoints(root: Path) -> list[Checkpoint]:
    found = [c for p in root.iterdir() if (c := _read(p)) is not None] if root.is_dir() else []
    return sorted(found, key=lambda c: c.step)


def load_latest(out_dir: Path, *, clean: bool = True) -> Checkpoint | None:
    """The newest complete checkpoint of a stage, or ``None`` when there is none.

    Follows ``checkpoints/latest``; if it is missing or names no complete checkpoint, falls back
    to the highest-numbered complete ``step-*`` directory. ``clean`` removes leftover ``.tmp-*``
    directories (pass ``False`` on every rank but the main one).
    """
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return None
    if clean:
        for leftover in root.glob(".tmp-*"):
            log.warning("removing the unfinished checkpoint %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        if _STEP_DIR.match(name) and (found := _read(root / name)) is not None:
            return found
        log.warning("%s names no complete checkpoint (%r); scanning", pointer, name)
    complete = _complete_checkpoints(root)
    return complete[-1] if complete else None
