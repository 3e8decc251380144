"""The ``parallel:`` section: how every training stage spreads over the ranks torchrun starts.

Maps 1:1 onto `f1kit.train.ParallelSettings` (which holds the rules: hsdp needs a shard size,
only hsdp takes one); without torchrun (one process) it changes nothing but the checkpoint
format (a sharded strategy writes DCP shards, which any world size resumes). See docs/scale.md.

Example::

    parallel: {strategy: fsdp, activation_checkpointing: true}
"""

from typing import Literal

from pydantic import model_validator

from f1kit.recipe.fields import Count, Section
from f1kit.train import ParallelSettings


class ParallelConfig(Section):
    """``strategy``: ddp (default) | fsdp | hsdp; ``shard_size``: hsdp's ranks per shard group
    (a node's GPUs); ``activation_checkpointing``: recompute each MoT layer in the backward;
    ``reshard_after_forward``: free gathered parameters after each unit's forward."""

    strategy: Literal["ddp", "fsdp", "hsdp"] = "ddp"
    shard_size: Count | None = None
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> "ParallelConfig":
        self.settings()  # ParallelSettings' own rules, one copy of them
        return self

    def settings(self) -> ParallelSettings:
        return ParallelSettings(**self.model_dump())
