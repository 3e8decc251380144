"""`Objective`: what one F1 training step optimises (a recipe stage's losses, scales, foresight).

L = generation * CE(foresight codes) + action * flow-matching MSE (DESIGN.md s4-s5): stage I is
``Objective(generation=1, action=0)`` over all scales, stages II/III
``Objective(generation=0.1, action=1, scales=4)`` (docs/contract.md: how each pass is built).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    """What one training step optimises (a recipe stage's losses, scales and foresight mode).

    generation / action: loss weights (0 leaves that loss out of the total; an action weight of
    0 also leaves the A tokens out of the pass). scales: foresight scales (None = all of the
    tokenizer's without actions, stage I; with actions only ``model.generation.scales`` is
    allowed, None meaning those).
    """

    generation: float = 0.0
    action: float = 1.0
    scales: int | None = None

    def __post_init__(self) -> None:
        for name in ("generation", "action"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: loss weight must be >= 0, got {getattr(self, name)}")
        if self.generation == 0 and self.action == 0:
            raise ValueError("objective: at least one of generation/action needs a weight > 0")
