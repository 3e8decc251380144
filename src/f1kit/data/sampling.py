"""Weighted sampling across tasks or datasets: uniform, proportional, or n^alpha (pi0, alpha 0.43).

A group (task or dataset) with ``n_g`` samples is drawn with probability ``n_g^alpha / sum n^alpha``
(``uniform``: alpha = 0, ``proportional``: alpha = 1); within a group, samples are equally likely.
"""

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch.utils.data import Sampler

Mode = Literal["uniform", "proportional", "power"]
PI0_ALPHA = 0.43


def group_weights(
    counts: Int[np.ndarray, " k"], mode: Mode = "power", alpha: float = PI0_ALPHA
) -> Float[np.ndarray, " k"]:
    """Probability of drawing each of ``k`` groups of sizes ``counts`` (groups of size 0 get 0)."""
    if mode not in ("uniform", "proportional", "power"):
        raise ValueError(f"mode: expected uniform, proportional or power, got {mode!r}")
    if mode == "power" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    counts = np.asarray(counts, dtype=np.float64)
    if (counts < 0).any() or counts.sum() == 0:
        raise ValueError(f"counts: expected non-negative sizes with a positive total, got {counts}")
    exponent = {"uniform": 0.0, "proportional": 1.0, "power": alpha}[mode]
    w = np.where(counts > 0, counts**exponent, 0.0)
    return w / w.sum()


class WeightedGroupSampler(Sampler[int]):
    """Draws ``num_samples`` sample indices (with replacement) with group-balanced weights.

    ``groups`` holds the group id of every sample (e.g. ``WindowedDataset.groups("task")``).
    Deterministic for a ``seed`` / ``generator``; each ``iter`` continues the generator.
    """

    def __init__(
        self,
        groups: Int[np.ndarray, " n"],
        mode: Mode = "power",
        alpha: float = PI0_ALPHA,
        num_samples: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        groups = np.asarray(groups)
        if groups.size == 0:
            raise ValueError("groups: expected at least one sample, got none")
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        self.group_probs = group_weights(counts, mode, alpha)
        # Two stages (group, then a uniform member) keep multinomial's input at k groups, not n.
        self._members = torch.from_numpy(np.argsort(inverse, kind="stable"))
        self._starts = torch.from_numpy(np.r_[0, np.cumsum(counts)[:-1]])
        self._counts = torch.from_numpy(counts)
        self.num_samples = len(groups) if num_samples is None else num_samples
        if self.num_samples < 1:
            raise ValueError(f"num_samples: expected >= 1, got {self.num_samples}")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        probs = torch.from_numpy(self.group_probs)
        g = torch.multinomial(probs, self.num_samples, True, generator=self.generator)
        u = torch.rand(self.num_samples, generator=self.generator, dtype=torch.float64)
        offset = (u * self._counts[g]).long().clamp_max(self._counts[g] - 1)
        return iter(self._members[self._starts[g] + offset].tolist())
