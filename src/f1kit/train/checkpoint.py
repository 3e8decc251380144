"""Atomic, verified, resumable training checkpoints.

Layout under a stage's output directory::

    checkpoints/
      step-0000100/
        model.safetensors   full model state dict (trainable and frozen); tied tensors stored once
        trainer.pt          optimizer, scheduler, sampler position, step, RNG states (torch.save;
                            tensors and plain containers only, read with weights_only=True)
        meta.json           step, settings, loss, elapsed seconds, versions
        manifest.json       size and sha256 of each file above
      step-0000200/
      latest                the name of the newest complete checkpoint ("step-0000200")

A sharded stage (FSDP / HSDP, `f1kit.train.parallel`) writes ``state/`` instead: the model and
optimizer state as `torch.distributed.checkpoint` (DCP) shards, every rank writing its own, which
any world size reads back (DCP reshards on load); ``trainer.pt`` then holds no optimizer, and
``model.safetensors`` (the whole model, gathered) is written only where it is read: at the last
step and at evaluations. The manifest lists every file, those under ``state/`` included.

A checkpoint is written into ``checkpoints/.tmp-step-XXXXXXX``, every file fsynced, then renamed
onto its final name with ``os.replace`` and only then published by atomically replacing
``latest``. A kill at any moment leaves either the previous checkpoint or the new one as latest;
a half-written ``.tmp-*`` directory is ignored and removed by :func:`load_latest`.

Nothing is trusted on resume: :func:`load_latest` checks a checkpoint against its manifest
(sizes, then sha256) and falls back to the next newest, warning with the bad file and why; when
none is valid it raises :class:`NoValidCheckpointError`, one line naming each. Hashing costs
about 1 s per GiB (a core per file, from the page cache), a quarter of what writing the
checkpoint takes and about what reading it back from disk takes, so it is on at every save and
resume (``hashes=False`` checks sizes only: the other ranks, after the main one verified).
Checkpoints from before manifests get structural checks only (files present, the safetensors
header, trainer.pt's zip directory) and load errors that name the file.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from f1kit.train.model_weights import load_model_weights, save_model_weights

log = logging.getLogger(__name__)

MODEL_FILE, TRAINER_FILE, META_FILE, MANIFEST_FILE, LATEST, STATE_DIR = (
    "model.safetensors",
    "trainer.pt",
    "meta.json",
    "manifest.json",
    "latest",
    "state",
)
_FILES = (MODEL_FILE, TRAINER_FILE, META_FILE)
_STATE_METADATA = f"{STATE_DIR}/.metadata"  # DCP's index of the shards
_STEP_DIR = re.compile(r"^step-(\d{7,})$")
_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, altered or unreadable."""


class NoValidCheckpointError(CheckpointError):
    """A stage holds checkpoints, and none of them can be resumed."""


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


def _sha256s(paths: list[Path]) -> list[str]:
    """sha256 of each file, the files in parallel (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, len(paths))) as pool:
        return list(pool.map(_sha256, paths))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(buffer[:n])
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint directory."""

    path: Path
    step: int
    meta: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def sharded(self) -> bool:
        """Written by a sharded stage: model and optimizer state in DCP shards under ``state/``."""
        return (self.path / _STATE_METADATA).is_file()

    def load_model(self, model: nn.Module, strict: bool = True) -> None:
        """Copy the saved weights into ``model`` (on the model's device)."""
        device = next(iter(model.state_dict().values()), torch.empty(0)).device
        state = load_model_weights(self.model_path, device, model=model)
        model.load_state_dict(state, strict=strict)

    def trainer_state(self) -> dict:
        """Optimizer, scheduler, sampler and RNG state (CPU tensors), read without pickle code."""
        path = self.path / TRAINER_FILE
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError...
            raise CheckpointError(f"{path}: unreadable ({_first_line(err)})") from err


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
    tmp = begin_checkpoint(out_dir, step)
    save_model_weights(model_state, tmp / MODEL_FILE)
    return publish_checkpoint(out_dir, step, trainer_state, meta, keep)


def pending_dir(out_dir: Path, step: int) -> Path:
    """``checkpoints/.tmp-step-XXXXXXX``: where checkpoint ``step`` is written before it is
    published (`begin_checkpoint` makes it, `publish_checkpoint` renames it into place)."""
    return Path(out_dir) / "checkpoints" / f".tmp-{step_name(step)}"


def begin_checkpoint(out_dir: Path, step: int) -> Path:
    """The empty `pending_dir` checkpoint ``step`` is written into."""
    tmp = pending_dir(out_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def publish_checkpoint(
    out_dir: Path, step: int, trainer_state: dict, meta: dict, keep: int = 2
) -> Checkpoint:
    """Finish the checkpoint whose weights are in ``.tmp-step-XXXXXXX`` (``model.safetensors``,
    ``state/`` or both): write ``trainer.pt`` and ``meta.json``, the manifest of every file,
    fsync, rename it into place, publish it as latest, and keep the newest ``keep``."""
    if keep < 1:
        raise ValueError(f"keep: expected >= 1 checkpoints to keep, got {keep}")
    tmp = pending_dir(out_dir, step)
    root, final = tmp.parent, tmp.parent / step_name(step)
    meta = {**meta, "step": step, "format": 1, "torch": torch.__version__}
    torch.save(trainer_state, tmp / TRAINER_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    names = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    # Hashed as read back: the manifest describes the bytes the filesystem holds.
    digests = dict(zip(names, _sha256s([tmp / n for n in names]), strict=True))
    files = {n: {"size": (tmp / n).stat().st_size, "sha256": digests[n]} for n in names}
    (tmp / MANIFEST_FILE).write_text(json.dumps({"format": 1, "files": files}, indent=2))
    for name in (*names, MANIFEST_FILE):
        _fsync_file(tmp / name)
    for folder in {(tmp / n).parent for n in names}:
        _fsync_dir(folder)
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
    # Newer directories are left from a killed run that is now being redone (or were found
    # corrupt and skipped); they are stale.
    steps = _step_dirs(root)
    older = [s for s in steps if s < step]
    stale_steps = [s for s in steps if s > step] + older[: max(0, len(older) - (keep - 1))]
    for old in stale_steps:
        shutil.rmtree(root / step_name(old), ignore_errors=True)
    log.info("checkpoint %s written", final)
    return Checkpoint(final, step, meta)


def _step_dirs(root: Path) -> list[int]:
    """The steps of the ``step-*`` directories under ``root``, ascending, valid or not."""
    if not root.is_dir():
        return []
    found = [int(m.group(1)) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(s for s in found if (root / step_name(s)).is_dir())


def verify_checkpoint(path: Path, *, hashes: bool = True) -> Checkpoint:
    """The checkpoint in ``path`` once its files match its manifest (sizes, and sha256 unless
    ``hashes`` is False); raises :class:`CheckpointError` naming the first bad file and why.

    A directory without a manifest (written before manifests) gets structural checks only."""
    path = Path(path)
    match = _STEP_DIR.match(path.name)
    if match is None or not path.is_dir():
        raise CheckpointError(f"{path}: not a step-XXXXXXX checkpoint directory")
    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        _check_manifest(manifest, hashes)
    else:
        _check_structure(path)
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_path}: unreadable ({_first_line(err)})") from err
    step = int(match.group(1))
    if not isinstance(meta, dict) or meta.get("step") != step:
        found = meta.get("step") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{meta_path}: step {found!r}, expected {step}")
    return Checkpoint(path, step, meta)


def _check_manifest(manifest: Path, hashes: bool) -> None:
    """Every file the manifest lists matches it; trainer.pt and meta.json are listed, and the
    weights: model.safetensors, or DCP's state/ (whose index lists its shards)."""
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = {
            str(name): (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()
        }
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{manifest}: unreadable ({_first_line(err)})") from err
    weights = MODEL_FILE in entries or _STATE_METADATA in entries
    required = [n for n in (TRAINER_FILE, META_FILE) if n not in entries]
    if required or not weights:
        lacking = required + ([] if weights else [f"{MODEL_FILE} or {STATE_DIR}/"])
        raise CheckpointError(f"{manifest}: lists no {', '.join(lacking)}")
    for name in entries:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{manifest}: names a file outside the checkpoint: {name!r}")
    for name, (size, _) in entries.items():  # sizes of all before the slow hashes
        file = manifest.parent / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if (actual := file.stat().st_size) != size:
            raise CheckpointError(f"{file}: {actual} bytes, the manifest says {size}")
    if hashes:
        paths = [manifest.parent / name for name in entries]
        actual = _sha256s(paths)
        for file, (_, digest), found in zip(paths, entries.values(), actual, strict=True):
            if found != digest:
                raise CheckpointError(f"{file}: sha256 differs from the manifest's")


def _check_structure(path: Path) -> None:
    """What can be checked without a manifest: files present, the safetensors header covers the
    file exactly, trainer.pt's zip directory (at its end) is intact."""
    for name in _FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing")
    try:
        with safe_open(str(path / MODEL_FILE), framework="pt") as f:
            f.metadata()
    except Exception as err:
        raise CheckpointError(f"{path / MODEL_FILE}: unreadable ({_first_line(err)})") from err
    try:
        with zipfile.ZipFile(path / TRAINER_FILE) as z:
            z.infolist()
    except (OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path / TRAINER_FILE}: unreadable ({_first_line(err)})") from err
    log.info("%s: no %s (an older checkpoint): checked its structure only", path, MANIFEST_FILE)


def load_checkpoint(out_dir: Path, step: int, *, hashes: bool = True) -> Checkpoint:
    """Checkpoint ``step`` of a stage, verified (:func:`verify_checkpoint`)."""
    return verify_checkpoint(Path(out_dir) / "checkpoints" / step_name(step), hashes=hashes)


def load_latest(out_dir: Path, *, clean: bool = True, hashes: bool = True) -> Checkpoint | None:
    """The newest valid checkpoint of a stage, or ``None`` when there is none.

    Tries the one ``checkpoints/latest`` names, then every other ``step-*`` directory from the
    newest down, verifying each (:func:`verify_checkpoint`); one that fails is skipped with a
    warning naming the file. Raises :class:`NoValidCheckpointError` when checkpoints exist but
    none is valid. ``clean`` removes leftover ``.tmp-*`` directories (pass ``False`` on every
    rank but the main one).
    """
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return None
    if clean:
        for leftover in root.glob(".tmp-*"):
            log.warning("removing the unfinished checkpoint %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    order = sorted(_step_dirs(root), reverse=True)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        named = int(m.group(1)) if (m := _STEP_DIR.match(name)) else None
        if named in order:
            order.remove(named)
            order.insert(0, named)
        else:
            log.warning("%s names no checkpoint directory (%r); scanning", pointer, name)
    problems = []
    for step in order:
        try:
            return verify_checkpoint(root / step_name(step), hashes=hashes)
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("skipping checkpoint %s: %s", step_name(step), err)
    if problems:
        raise NoValidCheckpointError(f"{root}: no valid checkpoint: {'; '.join(problems)}")
    return None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
