"""Running means of the loss, the gradient norm and the loss function's metrics between records.

Values stay on the device between records (no host sync per step); a record all-reduces the sums
and counts over ranks once, so every rank gets the same means. Metric names may differ between
ranks or steps: each metric is averaged over the (rank, step) pairs that reported it.
"""

import math

import torch
from torch import Tensor

from f1kit.train.distributed import all_gather_objects, all_reduce_sum, world_size


class StepStats:
    """Accumulates per-step values; :meth:`reduce` returns the means and resets."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        # MPS has no float64; elsewhere the sums keep full precision over long intervals.
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, Tensor | float] = {}
        self._counts: dict[str, int] = {}

    def _add(self, key: str, value: Tensor | float) -> None:
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"loss_fn metric {key!r}: expected a scalar, got {tuple(value.shape)}"
                )
            value = value.detach().reshape(()).to(self.device, self.dtype)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"loss_fn metric {key!r}: expected a number, got {type(value).__name__}"
            )
        self._sums[key] = self._sums.get(key, 0.0) + value
        self._counts[key] = self._counts.get(key, 0) + 1

    def add(self, loss: Tensor, metrics: dict, grad_norm: Tensor) -> None:
        self._add("loss", loss)
        self._add("grad_norm", grad_norm)
        for key, value in metrics.items():
            if key in ("loss", "grad_norm", "step"):
                raise ValueError(f"loss_fn metric {key!r}: the name is reserved by the trainer")
            self._add(str(key), value)

    def reduce(self, step: int) -> dict[str, float]:
        """Means over steps and ranks since the last call (a collective: every rank calls it)."""
        keys = set(self._sums)
        if world_size() > 1:
            keys = set().union(*all_gather_objects(sorted(keys)))
        keys = sorted(keys)
        values = torch.zeros(2 * len(keys), dtype=self.dtype, device=self.device)
        for i, key in enumerate(keys):
            if key in self._sums:
                values[2 * i] = self._sums[key]
                values[2 * i + 1] = self._counts[key]
        values = all_reduce_sum(values).tolist()
        self._reset()
        out = {k: values[2 * i] / values[2 * i + 1] for i, k in enumerate(keys)}
        if not (math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"])):
            raise FloatingPointError(
                f"step {step}: non-finite loss ({out['loss']}) or gradient norm"
                f" ({out['grad_norm']}); lower the lr, clip gradients, or check the data"
            )
        return out
