"""``f1kit convert``: a foreign checkpoint -> an f1kit model directory (`model_dir`)."""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from f1kit.model.importers.model_dir import ModelDir, ModelDirError, read_model_dir, write_model_dir
from f1kit.model.importers.registry import IMPORTERS
from f1kit.model.importers.source import SourceTensors

log = logging.getLogger(__name__)


def convert_checkpoint(
    kind: str,
    source: str | Path,
    destination: str | Path,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **options: Any,
) -> ModelDir:
    """Import ``source`` with the importer ``kind`` and write the model directory
    ``destination`` (an existing model directory is replaced only with ``overwrite``; anything
    else there is never touched: `check_destination`). dtype: cast floating weights (None: keep
    the source's; the tokenizer and Gemma gains stay float32). progress: a bar over the
    tensors. options: the importer's own (e.g. ``generation=False`` for a No-Gen target).

    Example:
        >>> convert_checkpoint("pi0", "/models/pi0_base", "weights/pi0-f1kit")
    """
    if kind not in IMPORTERS:
        raise ValueError(f"--from: unknown source {kind!r}; known: {sorted(IMPORTERS)}")
    src = Path(source)
    check_destination(src, Path(destination), overwrite)
    imported = IMPORTERS[kind](src if kind == "var" else SourceTensors(src), **options)
    info = {"kind": kind, "path": str(src), **imported.info}
    if imported.dropped:
        log.info("%s: %d source tensors dropped on purpose", src, len(imported.dropped))
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"converting {kind}", total=imported.count)

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for item in imported.tensors(dtype):
                yield item
                bar.advance(task)

        write_model_dir(
            destination,
            imported.config,
            tensors(),
            source=info,
            dropped=imported.dropped,
            files=imported.files,
        )
    return read_model_dir(destination)


def check_destination(source: Path, destination: Path, overwrite: bool) -> None:
    """Refuse a destination that would destroy anything but an f1kit model directory: the
    source itself, a folder holding it or inside it, a non-empty folder of other files."""
    src, dst = source.resolve(), destination.resolve()
    if dst == src or dst in src.parents or src in dst.parents:
        raise ValueError(
            f"{destination}: is, holds or lies inside the source {source}; write the model "
            "directory somewhere else"
        )
    if not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        return
    try:
        read_model_dir(dst)
    except (ModelDirError, ValueError) as err:
        raise ValueError(
            f"{destination}: exists and is not an f1kit model directory ({err}); f1kit will not "
            "replace it: choose another destination or remove it yourself"
        ) from None
    if not overwrite:
        raise ValueError(
            f"{destination}: already an f1kit model directory; pass --overwrite to replace it"
        )
