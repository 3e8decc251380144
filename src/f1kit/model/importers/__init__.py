"""Importers of published checkpoints into f1kit model directories (docs/weights.md).

One module per foreign layout registers itself in `IMPORTERS`; `convert_checkpoint` writes the
result; `init_from` starts a model from a model directory (or a saved policy).
"""

from f1kit.model.importers import f1_vla, paligemma, pi0, pi05, var  # noqa: F401  (registers)
from f1kit.model.importers.convert import convert_checkpoint
from f1kit.model.importers.mapping import Rule, WeightImportError, check_plan
from f1kit.model.importers.model_dir import (
    ModelDir,
    ModelDirError,
    init_from,
    part_problems,
    read_model_dir,
    write_model_dir,
)
from f1kit.model.importers.parts import PARTS, TOKENIZER, part_of
from f1kit.model.importers.registry import IMPORTERS, Imported, importer
from f1kit.model.importers.source import SourceError, SourceTensors

__all__ = [
    "IMPORTERS",
    "PARTS",
    "TOKENIZER",
    "Imported",
    "ModelDir",
    "ModelDirError",
    "Rule",
    "SourceError",
    "SourceTensors",
    "WeightImportError",
    "check_plan",
    "convert_checkpoint",
    "importer",
    "init_from",
    "part_of",
    "part_problems",
    "read_model_dir",
    "write_model_dir",
]
