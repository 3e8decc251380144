"""Time samplers: seeded, in range, and distributed as specified (KS distances, moments)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from flow import (
    BetaTime,
    Convention,
    LogitNormalTime,
    UniformTime,
    convert_time,
    make_time_sampler,
)

N = 20_000
# Kolmogorov-Smirnov critical distance at the 0.1 % level for N samples: 1.95 / sqrt(N).
KS = 1.95 / math.sqrt(N)


def ks_distance(samples: Tensor, cdf) -> float:
    x = samples.double().sort().values
    n = x.numel()
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pi0_beta_time_has_the_closed_form_law_and_mass_toward_noise():
    tau = BetaTime()(N, generator=gen())
    # tau = 0.999 (1 - s), s ~ Beta(1.5, 1): P(tau <= x) = 1 - (1 - x / 0.999)^1.5.
    cdf = lambda x: 1 - (1 - (x / 0.999).clamp(max=1)) ** 1.5  # noqa: E731
    assert ks_distance(tau, cdf) < KS
    assert tau.min() >= 0.0 and tau.max() <= 0.999
    # Mass toward the noise end, tau = 0 in the paper convention: E[tau] = 0.999 * 0.4.
    assert tau.mean().item() == pytest.approx(0.3996, abs=0.01)
    assert (tau < 0.5).float().mean().item() > 0.6
    # In pi0's own time t = 1 - tau this is openpi's draw: t = 0.001 + 0.999 * s in [0.001, 1].
    t = convert_time(tau, Convention.PAPER, Convention.PI0)
    assert t.min() >= 0.001 - 1e-6 and t.max() <= 1.0
    # Counter-case: the mirrored law (pi0's own t) fails the same KS test.
    assert ks_distance(1 - tau, cdf) > 10 * KS


def test_beta_with_alpha_one_uses_its_closed_form():
    tau = BetaTime(alpha=1.0, beta=3.0, scale=1.0)(N, generator=gen())
    # s ~ Beta(1, 3), CDF 1 - (1 - s)^3; tau = 1 - s -> P(tau <= x) = x^3.
    assert ks_distance(tau, lambda x: x**3) < KS


def test_general_beta_through_seeded_gammas_has_the_right_moments():
    a, b = 2.0, 3.0
    s = 1 - BetaTime(alpha=a, beta=b, scale=1.0)(N, generator=gen(), dtype=torch.float64)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert s.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(var / N))
    assert s.var().item() == pytest.approx(var, rel=0.05)
    assert ks_distance(s, _beta23_cdf) < KS


def _beta23_cdf(x: Tensor) -> Tensor:
    # Beta(2, 3): density 12 x (1 - x)^2, CDF 6x^2 - 8x^3 + 3x^4.
    return 6 * x**2 - 8 * x**3 + 3 * x**4


def test_uniform_and_logit_normal_laws():
    u = UniformTime(0.2, 0.6)(N, generator=gen())
    assert ks_distance(u, lambda x: ((x - 0.2) / 0.4).clamp(0, 1)) < KS
    ln = LogitNormalTime(mean=0.5, std=0.8)(N, generator=gen(), dtype=torch.float64)
    z = torch.logit(ln)
    assert ks_distance(z, lambda x: 0.5 * (1 + torch.erf((x - 0.5) / (0.8 * math.sqrt(2))))) < KS
    assert ln.min() > 0 and ln.max() < 1


@given(
    kind=st.sampled_from(["uniform", "beta", "logit_normal"]),
    seed=st.integers(0, 2**31),
    n=st.integers(1, 50),
)
def test_seeded_reproducible_and_seed_sensitive(kind: str, seed: int, n: int):
    sampler = make_time_sampler(kind)
    a = sampler(n, generator=gen(seed))
    b = sampler(n, generator=gen(seed))
    c = sampler(n, generator=gen(seed + 1))
    assert torch.equal(a, b)
    assert a.shape == (n,) and a.dtype == torch.float32
    assert not torch.equal(a, c)  # a full tie of n float draws across seeds: ~impossible
    assert ((a >= 0) & (a <= 1)).all()


def test_dtype_and_device_follow_the_arguments():
    out = BetaTime()(4, generator=gen(), dtype=torch.bfloat16, device="cpu")
    assert out.dtype == torch.bfloat16 and out.device.type == "cpu"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: UniformTime(0.5, 0.5), "low < high"),
        (lambda: BetaTime(alpha=0.0), "alpha"),
        (lambda: BetaTime(scale=1.5), "scale"),
        (lambda: LogitNormalTime(std=0.0), "std"),
        (lambda: make_time_sampler("cosine"), "time sampler"),
    ],
)
def test_bad_parameters_are_named(build, match: str):
    with pytest.raises(ValueError, match=match):
        build()


def test_zero_draws_is_an_error():
    with pytest.raises(ValueError, match="n:"):
        UniformTime()(0)
