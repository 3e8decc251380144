"""Per-dimension normalisation of states and actions, fitted on data and stored with the model.

Every mode is an affine map y = (x - center) / scale per feature, so the inverse is exact:

    mean_std   center = mean,                 scale = std          (pi0 / openpi default)
    min_max    center = (max + min) / 2,      scale = (max - min) / 2     -> data in [-1, 1]
    quantile   center = (q_hi + q_lo) / 2,    scale = (q_hi - q_lo) / 2   -> bulk in [-1, 1]

``quantile`` (openpi's choice for pi0-FAST and pi0.5; q_lo = 1 %, q_hi = 99 %) is robust to
outliers that would squash min_max. A scale below ``eps`` (a constant dim, e.g. a joint that never
moves) is replaced by 1, so that dim maps to 0 instead of exploding.
The stats are float32 buffers (they ride along in ``state_dict`` and safetensors checkpoints,
and stay float32 when the model is cast to bf16), and
:meth:`Normalizer.save` / :meth:`Normalizer.load` write them as a standalone safetensors file.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
from jaxtyping import Bool, Float
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

NormMode = Literal["mean_std", "min_max", "quantile"]
NORM_MODES: tuple[str, ...] = get_args(NormMode)


class Normalizer(nn.Module):
    """y = (x - center) / scale over the last axis; ``fit`` computes the stats from data.

    Example::

        norm = Normalizer.fit(actions, "quantile")   # actions [..., a]
        y = norm(actions); x = norm.inverse(y)        # x == actions up to rounding
    """

    center: Tensor
    scale: Tensor

    def __init__(self, center: Float[Tensor, " a"], scale: Float[Tensor, " a"], mode: str) -> None:
        super().__init__()
        if mode not in NORM_MODES:
            raise ValueError(f"mode: expected one of {NORM_MODES}, got {mode!r}")
        if center.shape != scale.shape:
            raise ValueError(
                f"stats: center {tuple(center.shape)} and scale {tuple(scale.shape)} differ"
            )
        if not bool(torch.isfinite(center).all() and torch.isfinite(scale).all()):
            raise ValueError("center/scale: NaN or inf in the stats")
        if not bool((scale > 0).all()):
            raise ValueError("scale: every entry must be > 0")
        self.mode = mode
        self.register_buffer("center", center.detach().clone().float())
        self.register_buffer("scale", scale.detach().clone().float())

    def _apply(self, fn, recurse: bool = True) -> "Normalizer":
        # `model.to(torch.bfloat16)` must not round the stats (bf16 holds 200.3 as 200): keep
        # them float32 and follow only device moves.
        center, scale = self.center, self.scale
        super()._apply(fn, recurse)
        self.center = center.to(device=self.center.device)
        self.scale = scale.to(device=self.scale.device)
        return self

    @property
    def dim(self) -> int:
        return self.center.shape[0]

    @classmethod
    def fit(
        cls,
        data: Float[Tensor, "*batch a"],
        mode: NormMode = "mean_std",
        *,
        valid: Bool[Tensor, "*batch"] | None = None,
        quantiles: tuple[float, float] = (0.01, 0.99),
        eps: float = 1e-6,
    ) -> "Normalizer":
        """Stats over every leading axis of ``data``, skipping rows where ``valid`` is False
        (padded chunk steps, ended episodes). Computed in float64."""
        if mode not in NORM_MODES:
            raise ValueError(f"mode: expected one of {NORM_MODES}, got {mode!r}")
        lo_q, hi_q = quantiles
        if not 0.0 <= lo_q < hi_q <= 1.0:
            raise ValueError(f"quantiles: need 0 <= low < high <= 1, got {quantiles}")
        rows = data.reshape(-1, data.shape[-1]).double()
        if valid is not None:
            rows = rows[valid.reshape(-1)]
        if rows.shape[0] < 2:
            raise ValueError(f"data: need at least 2 valid rows to fit stats, got {rows.shape[0]}")
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("data: contains NaN or inf")
        if mode == "mean_std":
            center, scale = rows.mean(0), rows.std(0)
        else:
            if mode == "min_max":
                lo, hi = rows.min(0).values, rows.max(0).values
            else:
                lo, hi = _quantile(rows, lo_q), _quantile(rows, hi_q)
            center, scale = (hi + lo) / 2, (hi - lo) / 2
        # A (near-)constant dim carries no information: map it to center -> 0 with unit scale.
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))
        return cls(center, scale, mode)

    @classmethod
    def from_stats(
        cls, stats: Mapping[str, Sequence[float] | Tensor], mode: NormMode, *, eps: float = 1e-6
    ) -> "Normalizer":
        """From precomputed per-feature stats, as LeRobot's ``meta/stats.json`` and openpi's
        ``norm_stats.json`` store them: ``mean``/``std``, ``min``/``max`` or ``q01``/``q99``."""
        if mode not in NORM_MODES:
            raise ValueError(f"mode: expected one of {NORM_MODES}, got {mode!r}")
        keys = {"mean_std": ("mean", "std"), "min_max": ("min", "max"), "quantile": ("q01", "q99")}
        missing = [k for k in keys[mode] if k not in stats]
        if missing:
            raise ValueError(f"stats: mode {mode!r} needs keys {keys[mode]}, missing {missing}")
        first, second = (torch.as_tensor(stats[k], dtype=torch.float64) for k in keys[mode])
        for name, value in zip(keys[mode], (first, second), strict=True):
            bad = (~torch.isfinite(value)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(f"stats: {name!r} holds NaN or inf at dims {bad}")
        if first.ndim != 1 or first.shape != second.shape:
            raise ValueError(
                f"stats: {keys[mode]} must be 1-D of equal length, "
                f"got {tuple(first.shape)} and {tuple(second.shape)}"
            )
        if mode == "mean_std":
            center, scale = first, second
        else:
            center, scale = (second + first) / 2, (second - first) / 2
        if bool((scale < 0).any()):
            raise ValueError(f"stats: {keys[mode][1]} must not be below {keys[mode][0]}")
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))
        return cls(center, scale, mode)

    def forward(self, x: Float[Tensor, "*batch a"]) -> Float[Tensor, "*batch a"]:
        """Normalise: (x - center) / scale."""
        self._check(x)
        return ((x - self.center) / self.scale).to(x.dtype)

    def inverse(self, y: Float[Tensor, "*batch a"]) -> Float[Tensor, "*batch a"]:
        """Undo ``forward``: y * scale + center (applied to sampled actions at inference)."""
        self._check(y)
        return (y * self.scale + self.center).to(y.dtype)

    def stats(self) -> dict[str, Tensor]:
        return {"center": self.center.detach().cpu(), "scale": self.scale.detach().cpu()}

    def save(self, path: str | Path) -> None:
        """Write the stats to a safetensors file (mode in its metadata)."""
        save_file(self.stats(), str(path), metadata={"mode": self.mode})

    @classmethod
    def load(cls, path: str | Path) -> "Normalizer":
        with safe_open(str(path), framework="pt") as f:
            mode = (f.metadata() or {}).get("mode")
        if mode is None:
            raise ValueError(
                f"{path}: no 'mode' in the safetensors metadata; not a Normalizer file"
            )
        stats = load_file(str(path))
        return cls(stats["center"], stats["scale"], mode)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}"

    def _check(self, x: Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"last axis: expected {self.dim} features, got {x.shape[-1]}")


def _quantile(rows: Tensor, q: float) -> Tensor:
    """Per-column q-quantile with linear interpolation (torch.quantile's default), from two
    order statistics: torch.quantile refuses inputs over 2^24 rows, a robot dataset is not."""
    pos = q * (rows.shape[0] - 1)
    below, frac = int(pos), pos - int(pos)
    lo = rows.kthvalue(below + 1, dim=0).values
    if frac == 0.0:
        return lo
    hi = rows.kthvalue(below + 2, dim=0).values
    return lo + frac * (hi - lo)
