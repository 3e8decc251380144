"""The optimisation sub-sections of a stage: AdamW's numbers and the learning-rate schedule."""

from typing import Annotated, Literal

from pydantic import Field

from f1kit.recipe.fields import NonNegative, Real, Section, Weight


class OptimizerConfig(Section):
    """AdamW's betas and decoupled weight decay (DESIGN.md s5: betas 0.9, 0.95)."""

    betas: tuple[Annotated[Real, Field(ge=0, lt=1)], Annotated[Real, Field(ge=0, lt=1)]] = (
        0.9,
        0.95,
    )
    weight_decay: Weight = 0.0


class ScheduleConfig(Section):
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the base lr (or constant)."""

    warmup_steps: NonNegative = 0
    kind: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: Annotated[Real, Field(ge=0, le=1)] = 0.1
