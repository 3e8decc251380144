"""A foreign checkpoint read lazily from safetensors: a file, or a directory holding one file or
a sharded set (``model.safetensors.index.json``). Shapes and dtypes come from the headers, so an
importer can check a 3.5 B-parameter mapping completely before reading a byte of data; each
tensor is then read only when it is converted.

Pickle checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused: loading one runs code.
Convert them once with their own project's tools into safetensors.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from f1kit.model.importers.safetensors_stream import DTYPES

NAMED_DTYPES = {name: dtype for dtype, name in DTYPES.items()}  # safetensors' names
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX = "model.safetensors.index.json"


class SourceError(ValueError):
    """A checkpoint that cannot be read: missing, pickled, or a broken shard index."""


class SourceTensors:
    """The tensors of a safetensors checkpoint by name, read on demand.

    path: a ``.safetensors`` file, or a directory with a shard index, ``model.safetensors``
    (other safetensors files beside it, such as lerobot's processor statistics, are not
    weights) or exactly one ``.safetensors`` file
    (``config.json`` and the other files beside the weights are reachable with `read_json`).

    Example:
        >>> src = SourceTensors("/models/paligemma-3b-pt-224")
        >>> src.shape("model.language_model.norm.weight")
        (2048,)
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self.root = path if path.is_dir() else path.parent
        self._files = self._weight_files(path)
        self._owner: dict[str, Path] = {}
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self.metadata: dict[str, str] = {}
        for file in self._files:
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as err:  # safetensors raises its own error type for a bad header
                raise SourceError(
                    f"{file}: not a readable safetensors file ({err}); a git-lfs pointer or an "
                    "interrupted download looks like this"
                ) from err
            with handle:
                self.metadata.update(handle.metadata() or {})
                for key in handle.keys():  # noqa: SIM118 (not iterable)
                    if key in self._owner:
                        raise SourceError(f"{file}: tensor {key!r} is also in {self._owner[key]}")
                    view = handle.get_slice(key)
                    self._owner[key] = file
                    self._meta[key] = (tuple(view.get_shape()), _dtype(view.get_dtype(), file))
        self._handles: dict[Path, Any] = {}

    @staticmethod
    def _weight_files(path: Path) -> list[Path]:
        if not path.exists():
            raise SourceError(f"{path}: not found (weights are only read from local paths)")
        if path.is_file():
            if path.suffix in PICKLE_SUFFIXES:
                raise SourceError(
                    f"{path}: a pickle checkpoint; f1kit reads weights only from safetensors "
                    "(a pickle runs code when loaded): convert it with its project's tools first"
                )
            if path.suffix != ".safetensors":
                raise SourceError(f"{path}: expected a .safetensors file or a directory")
            return [path]
        index = path / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as err:
                raise SourceError(f"{index}: not a shard index with a weight_map ({err})") from err
            files = sorted({path / name for name in weight_map.values()})
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise SourceError(f"{index}: shards not found: {', '.join(missing)}")
            return files
        if (path / "model.safetensors").is_file():  # beside e.g. lerobot's processor stats
            return [path / "model.safetensors"]
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1:
            return files
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not files and pickles:
            raise SourceError(
                f"{path}: only pickle checkpoints ({', '.join(pickles)}); f1kit reads weights "
                "only from safetensors: convert them with their project's tools first"
            )
        found = ", ".join(f.name for f in files) or "none"
        raise SourceError(f"{path}: expected one .safetensors file or {INDEX}, found {found}")

    def keys(self) -> list[str]:
        return list(self._owner)

    def __contains__(self, key: object) -> bool:
        return key in self._owner

    def shape(self, key: str) -> tuple[int, ...]:
        return self._meta[key][0]

    def dtype(self, key: str) -> torch.dtype:
        return self._meta[key][1]

    def meta(self, key: str) -> Tensor:
        """An empty tensor with ``key``'s shape and dtype on the meta device (shape algebra)."""
        shape, dtype = self._meta[key]
        return torch.empty(shape, dtype=dtype, device="meta")

    def get(self, key: str) -> Tensor:
        """The tensor ``key`` on the CPU (read from its file when asked, one at a time)."""
        file = self._owner[key]
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file].get_tensor(key)

    def read_json(self, name: str = "config.json", *, required: bool = True) -> dict | None:
        """A JSON object stored beside the weights (e.g. ``config.json``)."""
        file = self.root / name
        if not file.is_file():
            if required:
                raise SourceError(f"{file}: not found (the importer needs the source's {name})")
            return None
        try:
            data = json.loads(file.read_text())
        except ValueError as err:
            raise SourceError(f"{file}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise SourceError(f"{file}: expected a JSON object, got {type(data).__name__}")
        return data


def _dtype(name: str, file: Path) -> torch.dtype:
    dtype = NAMED_DTYPES.get(name)
    if dtype is None:
        raise SourceError(f"{file}: unsupported tensor dtype {name}")
    return dtype
