"""Training-time distributions p(tau) for flow matching, all in the paper convention, all seeded.

``torch.distributions`` cannot take a ``torch.Generator``, so each sampler draws from the
generator directly: uniform and logit-normal from ``rand``/``randn``, Beta through its inverse
CDF when one parameter is 1 (closed form) and otherwise through seeded Gamma draws.

pi0 (and F1) sample s ~ Beta(1.5, 1) and set tau = 0.999 * (1 - s) (DESIGN.md section 4): the
Beta(1.5, 1) density grows toward s = 1, i.e. toward tau = 0, the *noise* end in our convention,
and tau never reaches 1 (the pure-data point carries no signal to learn).
"""

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


def _uniform(
    n: int, generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    # Drawn in float64 on the generator's device so results do not depend on the caller's dtype.
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, dtype=torch.float64, device=gen_device)


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"n: expected a positive number of times to draw, got {n}")


@dataclass(frozen=True)
class UniformTime:
    """tau ~ U[low, high]."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"UniformTime: need 0 <= low < high <= 1, got {self.low}, {self.high}")

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Float[Tensor, " n"]:
        _check_n(n)
        u = _uniform(n, generator, device)
        return (self.low + (self.high - self.low) * u).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class BetaTime:
    """tau = scale * (1 - s), s ~ Beta(alpha, beta); defaults are pi0's (mass toward noise)."""

    alpha: float = 1.5
    beta: float = 1.0
    scale: float = 0.999

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"BetaTime: alpha and beta must be > 0, got {self.alpha}, {self.beta}")
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"BetaTime.scale: expected a value in (0, 1], got {self.scale}")

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Float[Tensor, " n"]:
        _check_n(n)
        s = self._beta(n, generator, device)
        return (self.scale * (1 - s)).to(device=device, dtype=dtype)

    def _beta(
        self, n: int, generator: torch.Generator | None, device: torch.device | str | None
    ) -> Tensor:
        if self.beta == 1.0:  # CDF s^alpha  ->  s = u^(1/alpha)
            return _uniform(n, generator, device) ** (1 / self.alpha)
        if self.alpha == 1.0:  # CDF 1 - (1-s)^beta  ->  s = 1 - u^(1/beta)
            return 1 - _uniform(n, generator, device) ** (1 / self.beta)
        gen_device = generator.device if generator is not None else device
        shape = torch.tensor([self.alpha, self.beta], dtype=torch.float64, device=gen_device)
        g = torch._standard_gamma(shape.expand(n, 2).contiguous(), generator=generator)
        return g[:, 0] / g.sum(dim=1)


@dataclass(frozen=True)
class LogitNormalTime:
    """tau = sigmoid(mean + std * z), z ~ N(0, 1) (the SD3 / rectified-flow choice)."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean) or not self.std > 0:
            raise ValueError(
                f"LogitNormalTime: need finite mean and std > 0, got {self.mean}, {self.std}"
            )

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Float[Tensor, " n"]:
        _check_n(n)
        gen_device = generator.device if generator is not None else device
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=gen_device)
        return torch.sigmoid(self.mean + self.std * z).to(device=device, dtype=dtype)


TimeSampler = UniformTime | BetaTime | LogitNormalTime

TIME_SAMPLERS: dict[str, type[UniformTime] | type[BetaTime] | type[LogitNormalTime]] = {
    "uniform": UniformTime,
    "beta": BetaTime,
    "logit_normal": LogitNormalTime,
}


def make_time_sampler(name: str, **params: float) -> TimeSampler:
    """Build a sampler by name (``uniform``, ``beta``, ``logit_normal``), as recipes do."""
    if name not in TIME_SAMPLERS:
        raise ValueError(f"time sampler: expected one of {sorted(TIME_SAMPLERS)}, got {name!r}")
    return TIME_SAMPLERS[name](**params)
