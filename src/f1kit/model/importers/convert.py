"""``f1kit convert``: a foreign checkpoint -> an f1kit model directory (`model_dir`)."""

import logging
from pathlib import Path
from typing import Any

import torch

from f1kit.model.importers.model_dir import ModelDir, read_model_dir, write_model_dir
from f1kit.model.importers.registry import IMPORTERS
from f1kit.model.importers.source import SourceTensors

log = logging.getLogger(__name__)


def convert_checkpoint(
    kind: str,
    source: str | Path,
    destination: str | Path,
    *,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> ModelDir:
    """Import ``source`` with the importer ``kind`` and write the model directory
    ``destination`` (replaced if it exists). dtype: cast floating weights (None: keep the
    source's). options: the importer's own (e.g. ``generation=False`` for a No-Gen target).

    Example:
        >>> convert_checkpoint("pi0", "/models/pi0_base", "weights/pi0-f1kit")
    """
    if kind not in IMPORTERS:
        raise ValueError(f"--from: unknown source {kind!r}; known: {sorted(IMPORTERS)}")
    src = Path(source)
    imported = IMPORTERS[kind](src if kind == "var" else SourceTensors(src), **options)
    info = {"kind": kind, "path": str(src), **imported.info}
    if imported.dropped:
        log.info("%s: %d source tensors dropped on purpose", src, len(imported.dropped))
    write_model_dir(
        destination,
        imported.config,
        imported.tensors(dtype),
        source=info,
        dropped=imported.dropped,
        files=imported.files,
    )
    return read_model_dir(destination)
