"""Deterministic, resumable, rank-sharded batches: one global sample order shared by every rank.

The order is an endless stream of epochs. Epoch ``e`` of a dataset of ``n`` samples is a
permutation of ``range(n)`` (or, with sample weights, ``n`` weighted draws with replacement) from a
generator seeded with ``(seed, e)``. The global batch of each step is the next ``B`` entries of the
stream (a batch may straddle two epochs, so no sample is ever dropped), and rank ``r`` of ``w``
takes the contiguous part ``[r B/w, (r+1) B/w)`` of it. The state is ``(epoch, position)``: where
in the stream the next batch starts; it depends on nothing but the samples consumed, so a run
resumed from it sees exactly the batches the uninterrupted run would have seen, for any world size.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int
from torch.utils.data import Sampler


@dataclass(frozen=True)
class SamplerState:
    """Where the next global batch starts: ``position`` in epoch ``epoch`` of ``num_samples``."""

    epoch: int = 0
    position: int = 0
    num_samples: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"epoch": self.epoch, "position": self.position, "num_samples": self.num_samples}


def epoch_order(
    num_samples: int, epoch: int, seed: int, weights: Float[np.ndarray, " n"] | None = None
) -> Int[np.ndarray, " n"]:
    """The ``num_samples`` indices of epoch ``epoch``: a permutation, or weighted draws."""
    # Seeding with the pair, not seed + epoch, keeps (seed 1, epoch 0) apart from (seed 0, epoch 1).
    rng = np.random.default_rng([seed, epoch])
    if weights is None:
        return rng.permutation(num_samples)
    return rng.choice(num_samples, size=num_samples, replace=True, p=weights)


def normalized_weights(
    weights: Float[np.ndarray, " n"], num_samples: int
) -> Float[np.ndarray, " n"]:
    """Sample weights as probabilities; errors name ``sample_weights``."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_samples,):
        raise ValueError(
            f"sample_weights: expected shape ({num_samples},), one per sample, got {w.shape}"
        )
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sample_weights: expected finite weights >= 0 with a positive sum")
    return w / w.sum()


class ShardedBatchSampler(Sampler[list[int]]):
    """Yields this rank's index lists for ``num_batches`` consecutive global batches.

    Iterating does not change the sampler (a DataLoader may prefetch ahead of training); the state
    after ``k`` consumed batches is :meth:`state_after`.

    Example::

        sampler = ShardedBatchSampler(len(ds), 8, num_batches=100, world_size=2, rank=1, seed=0)
        loader = DataLoader(ds, batch_sampler=sampler)
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        num_batches: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        weights: Float[np.ndarray, " n"] | None = None,
        state: SamplerState | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"dataset: expected at least one sample, got {num_samples}")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"batch_size: expected a positive multiple of the world size {world_size},"
                f" got {batch_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < {world_size}, got {rank}")
        if num_batches < 0:
            raise ValueError(f"num_batches: expected >= 0, got {num_batches}")
        state = state or SamplerState(num_samples=num_samples)
        if state.num_samples is not None and state.num_samples != num_samples:
            raise ValueError(
                f"sampler state: taken over {state.num_samples} samples, but the dataset has"
                f" {num_samples}; resuming would not continue the same order"
            )
        if not (0 <= state.position < num_samples and state.epoch >= 0):
            raise ValueError(f"sampler state: position out of range for {num_samples}: {state}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.num_batches = num_batches
        self.rank = rank
        self.seed = seed
        self.weights = None if weights is None else normalized_weights(weights, num_samples)
        self.state = SamplerState(state.epoch, state.position, num_samples)

    def __len__(self) -> int:
        return self.num_batches

    def state_after(self, batches: int) -> SamplerState:
        """Where the stream stands once ``batches`` global batches from :attr:`state` are used."""
        absolute = self.state.epoch * self.num_samples + self.state.position
        absolute += batches * self.batch_size
        epoch, position = divmod(absolute, self.num_samples)
        return SamplerState(epoch, position, self.num_samples)

    def global_batches(self) -> Iterator[Int[np.ndarray, " b"]]:
        """The full global batches (every rank's samples), in order."""
        epoch, position = self.state.epoch, self.state.position
        order = epoch_order(self.num_samples, epoch, self.seed, self.weights)
        for _ in range(self.num_batches):
            parts, need = [], self.batch_size
            while need:
                take = order[position : position + need]
                parts.append(take)
                need -= len(take)
                position += len(take)
                if position == self.num_samples:
                    epoch, position = epoch + 1, 0
                    order = epoch_order(self.num_samples, epoch, self.seed, self.weights)
            yield np.concatenate(parts)

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.local_batch
        for batch in self.global_batches():
            yield batch[lo : lo + self.local_batch].tolist()
