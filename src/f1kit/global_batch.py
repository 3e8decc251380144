"""This rank's rows of a training step's global batch: draws made for the whole batch, and
normalisers counted over it.

Why: with ``w`` ranks each holding ``b / w`` samples, two things made a ``w``-rank step differ
from the one-process step by construction:

* each rank drew its own random numbers (its own seed);
* a loss averaged over a *count* that differs between the ranks' parts (the real, unpadded
  action entries) averaged differently: the mean of per-rank means is not the global mean.

Here every rank seeds the same generator from ``(seed, step)``, draws what the *global* batch
needs (flow time, flow noise, the foresight's uniforms) and keeps its own contiguous rows, the
rows the sampler gave it; and a masked mean divides by the global count (`share`). Sample ``i``
of step ``s`` then gets the same numbers on any number of ranks, and the ranks' averaged
gradient is the one-process gradient, up to the order of floating-point sums.

The cost is the global batch's draws on every rank, a few numbers per sample (B floats for the
time, B * c * a for the noise, B * N for N foresight tokens; nothing per vocabulary entry), and
one all-reduce of a scalar per shared count.

Example::

    rows = GlobalBatch(torch.Generator().manual_seed(0), start=4, stop=8, total=8)
    g = rows.generator
    noise = rows.rows(lambda n: torch.randn(n, 10, 7, generator=g))  # rows 4..7: [4, 10, 7]
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from jaxtyping import Float, Shaped
from torch import Tensor


@dataclass(frozen=True)
class GlobalBatch:
    """Rows ``start:stop`` of a global batch of ``total`` samples, drawing with ``generator``.

    ``generator`` must be in the same state on every rank when a draw starts: each `rows` call
    advances it by the global batch's draw on every rank alike. The ranks split the batch into
    equal contiguous parts (`f1kit.train.ShardedBatchSampler`).
    """

    generator: torch.Generator
    start: int
    stop: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop <= self.total:
            raise ValueError(
                f"rows: expected 0 <= start < stop <= total, got {self.start}, {self.stop},"
                f" {self.total}"
            )
        if self.total % self.size:
            raise ValueError(
                f"rows: {self.size} rows do not split a batch of {self.total} into equal parts"
            )

    @classmethod
    def whole(cls, generator: torch.Generator, batch: int) -> "GlobalBatch":
        """A batch that is not split (one process, a notebook call)."""
        return cls(generator, 0, batch, batch)

    @property
    def size(self) -> int:
        """This rank's number of rows."""
        return self.stop - self.start

    def rows(
        self, draw: Callable[[int], Shaped[Tensor, " total *rest"]]
    ) -> Shaped[Tensor, " b *rest"]:
        """``draw(total)[start:stop]``: ``draw(n)`` makes n rows' numbers from ``generator``."""
        drawn = draw(self.total)
        if drawn.ndim == 0 or drawn.shape[0] != self.total:
            raise ValueError(
                f"draw: expected {self.total} rows (the global batch), got shape"
                f" {tuple(drawn.shape)}"
            )
        return drawn[self.start : self.stop]

    def share(self, count: Float[Tensor, ""]) -> Float[Tensor, ""]:
        """This rank's share of a count over the global batch: the sum of ``count`` over the
        ranks, divided by their number (``count`` itself when the batch is not split).

        Dividing this rank's masked sum by it makes the ranks' mean loss (and DDP's or FSDP's
        averaged gradient) the global batch's masked mean. A collective: every rank calls it
        in the same order."""
        if self.size == self.total:
            return count
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"share: rows {self.start}:{self.stop} of {self.total} need the other ranks'"
                " counts, and no process group is initialised"
            )
        summed = count.detach().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed * (self.size / self.total)
