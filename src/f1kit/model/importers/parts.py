"""Which part of F1 each state-dict tensor belongs to: an expert, or the frozen tokenizer.

Imports are partial by nature (PaliGemma has only the Understanding expert, pi0 has no
Generation expert), so a model directory records the parts it holds, and starting a model from
one names the parts that stay random (`f1kit.model.importers.model_dir.init_from`). The split
follows `F1.expert_parameters`: an expert's trunk slice plus the modules that only feed or read
it.
"""

import re
from collections.abc import Iterable

from attention import ACTION, GENERATION, UNDERSTANDING

TOKENIZER = "tokenizer"
PARTS = (UNDERSTANDING, GENERATION, ACTION, TOKENIZER)

_OWN_MODULES = {
    UNDERSTANDING: ("understanding",),
    GENERATION: ("aggregator", "generator"),
    ACTION: ("action_head",),
    TOKENIZER: ("tokenizer",),
}
_TRUNK = re.compile(r"trunk\.(?:layers\.\d+\.experts|final_norms)\.([a-z_]+)\.")


def part_of(key: str) -> str:
    """The part that owns state-dict tensor ``key`` (ValueError for a key of no part)."""
    trunk = _TRUNK.match(key)
    if trunk is not None and trunk[1] in PARTS:
        return trunk[1]
    head = key.split(".", 1)[0]
    for part, modules in _OWN_MODULES.items():
        if head in modules:
            return part
    raise ValueError(f"{key}: belongs to no part of F1 {PARTS}")


def parts_of(keys: Iterable[str]) -> set[str]:
    """The parts that own any of ``keys``."""
    return {part_of(key) for key in keys}


def keys_of(keys: Iterable[str], parts: Iterable[str]) -> list[str]:
    """The ``keys`` owned by ``parts``, in order."""
    chosen = set(parts)
    return [key for key in keys if part_of(key) in chosen]
