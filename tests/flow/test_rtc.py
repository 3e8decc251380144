"""Real-time chunking: prefix weights, guidance weight, the guided field and the head option."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from flow import (
    FlowHeadConfig,
    FlowMatchingHead,
    MLPVelocityNet,
    Normalizer,
    ODESolver,
    RTCConfig,
    RTCGuide,
    TransformerVelocityNet,
    guidance_weight,
    guided_velocity,
)

# Bimodal toy: a chunk [C A] is one of two constant plans (+MU or -MU) plus N(0, SIG^2) per entry.
C, A, SIG = 16, 2, 0.1
MU = torch.tensor([[1.0, 0.5], [-1.0, -0.5]])  # [k a]


def bimodal_field(x: Tensor, tau: Tensor) -> Tensor:
    """The exact flow-matching velocity of the toy, v = (E[a | x_tau] - x) / (1 - tau)."""
    t = tau.reshape(*tau.shape, *([1] * (x.ndim - tau.ndim)))
    mu = MU[:, None, None, :]  # [k 1 1 a]
    var = t**2 * SIG**2 + (1 - t) ** 2  # of x_tau given the mode, per entry
    logw = -((x - t * mu) ** 2 / (2 * var)).sum((-1, -2))  # [k b]
    w = torch.softmax(logw, 0)[..., None, None]
    mean = mu + t * SIG**2 / var * (x - t * mu)  # E[a | x_tau, mode]
    return ((w * mean).sum(0) - x) / (1 - t)


def chunks_after(executed: int, delay: int, horizon: int, n: int = 256, **cfg):
    """Previous chunk, the next one plain and with RTC (same noise); inference starts after
    ``executed`` steps of the previous chunk and lasts ``delay`` steps."""
    g = torch.Generator().manual_seed(0)
    solver = ODESolver(steps=10)
    prev = solver(bimodal_field, torch.randn(n, C, A, generator=g)).sample
    noise = torch.randn(n, C, A, generator=g)
    plain = solver(bimodal_field, noise).sample
    remaining = prev[:, executed:]
    config = RTCConfig(delay=delay, horizon=horizon, **cfg)
    weights = config.weights(C, prefix=remaining.shape[1])
    target = F.pad(remaining, (0, 0, 0, executed))
    field = guided_velocity(bimodal_field, target, weights[:, None], config.max_guidance)
    return prev, plain, solver(field, noise).sample


# -- prefix weights and guidance weight ---------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_prefix_weights_shape_of_the_schedule(schedule):
    d, h = 3, 9
    w = RTCConfig(delay=d, horizon=h, schedule=schedule).weights(12)
    assert w.shape == (12,)
    assert torch.equal(w[:d], torch.ones(d)) and torch.equal(w[h:], torch.zeros(12 - h))
    mid = w[d:h]
    assert ((mid > 0) & (mid < 1)).all() and (mid.diff() < 0).all()
    c = (h - torch.arange(d, h, dtype=torch.float64)) / (h - d + 1)
    expected = c if schedule == "linear" else c * torch.expm1(c) / math.expm1(1)
    torch.testing.assert_close(mid, expected.float())


def test_prefix_weights_end_with_the_prefix():
    cfg = RTCConfig(delay=2, horizon=8)
    w = cfg.weights(10, prefix=5)
    assert torch.equal(w, RTCConfig(delay=2, horizon=5).weights(10))
    assert torch.equal(cfg.weights(10, prefix=9), cfg.weights(10))


def test_guidance_weight_matches_the_paper_formula():
    tau = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0])
    r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
    paper = (1 - tau) / (tau * r2)
    g = guidance_weight(tau, 1e6)
    torch.testing.assert_close(g[1:-1], paper[1:-1])
    assert g[3] == pytest.approx(2.0) and g[0] == g[-1] == 1e6  # minimum 2; ends clipped
    clipped = guidance_weight(tau, 5.0)
    torch.testing.assert_close(clipped[1:-1], paper[1:-1].clamp_max(5.0))
    assert clipped[0] == clipped[-1] == 5


# -- the guided field ----------------------------------------------------------------------------


def test_guided_field_is_v_plus_g_jacobian_transpose_error():
    """For an affine field v = x M + b the Jacobian of a_hat is exactly I + (1 - tau) M."""
    g = torch.Generator().manual_seed(1)
    m, b0 = torch.randn(A, A, generator=g), torch.randn(A, generator=g)
    x, y = torch.randn(3, C, A, generator=g), torch.randn(3, C, A, generator=g)
    w = torch.rand(C, 1, generator=g)
    tau = torch.tensor(0.3)

    def affine(x: Tensor, tau: Tensor) -> Tensor:
        return x @ m + b0

    v = affine(x, tau)
    err = w * (y - (x + 0.7 * v))
    jac = torch.eye(A) + 0.7 * m  # d a_hat_j / d x_i = jac[i, j]
    expected = v + guidance_weight(tau, 4.0) * err @ jac.T
    torch.testing.assert_close(guided_velocity(affine, y, w, 4.0)(x, tau), expected)
    # counter-case: the guidance really moves the field
    assert not torch.allclose(guided_velocity(affine, y, w, 4.0)(x, tau), v)


def test_zero_weights_or_zero_guidance_leave_samples_bit_identical():
    g = torch.Generator().manual_seed(2)
    noise, target = torch.randn(8, C, A, generator=g), torch.randn(8, C, A, generator=g)
    solver = ODESolver(steps=10)
    plain = solver(bimodal_field, noise).sample
    zero_w = guided_velocity(bimodal_field, target, torch.zeros(C, 1), 5.0)
    zero_beta = guided_velocity(bimodal_field, target, torch.ones(C, 1), 0.0)
    assert torch.equal(solver(zero_w, noise).sample, plain)
    assert torch.equal(solver(zero_beta, noise).sample, plain)
    guided = guided_velocity(bimodal_field, target, torch.ones(C, 1), 5.0)
    assert (solver(guided, noise).sample - plain).abs().max() > 0.1  # counter-case


# -- the toy where chunks can switch modes ---------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_rtc_joins_chunks_smoothly_where_plain_chunking_jumps(schedule):
    s, d = 4, 3  # executed before inference started, inference delay
    prev, plain, rtc = chunks_after(s, d, horizon=10, schedule=schedule, max_guidance=5.0)

    def joint(nxt: Tensor) -> float:  # the first new action vs the old plan for that step
        return (nxt[:, d] - prev[:, s + d]).abs().mean().item()

    def jerk(nxt: Tensor) -> float:  # third difference of the executed actions across the joint
        executed = torch.cat([prev[:, s + d - 2 : s + d], nxt[:, d : d + 2]], dim=1)
        return executed.diff(n=3, dim=1).abs().mean().item()

    # plain chunking switches mode half the time: a jump of about 2 |MU| / 2 on average
    assert joint(plain) > 0.6 and jerk(plain) > 1.2
    assert joint(rtc) < 0.12 and joint(rtc) < joint(plain) / 5  # measured 0.07 / 0.09 vs 0.76
    assert jerk(rtc) < 0.35 and jerk(rtc) < jerk(plain) / 4  # measured 0.23 / 0.26 vs 1.55
    switched = (rtc[:, d:, 0].mean(1) > 0) != (prev[:, s:, 0].mean(1) > 0)
    assert switched.float().mean() < 0.05  # measured 1.2 / 2.3 % vs 48 % plain


def test_rtc_follows_the_prefix_over_the_delay():
    s, d = 2, 5
    prev, plain, rtc = chunks_after(s, d, horizon=12, max_guidance=10.0)
    follow_rtc = (rtc[:, :d] - prev[:, s : s + d]).abs().mean()
    follow_plain = (plain[:, :d] - prev[:, s : s + d]).abs().mean()
    assert follow_rtc < 0.06 < 0.6 < follow_plain  # within the toy's per-entry noise SIG


# -- the head option -------------------------------------------------------------------------------


def make_head(net: str = "transformer") -> FlowMatchingHead:
    torch.manual_seed(0)
    network = (
        TransformerVelocityNet(32, depth=1, heads=2)
        if net == "transformer"
        else MLPVelocityNet(32, depth=2)
    )
    norm = Normalizer(torch.tensor([3.0, -1.0, 0.5]), torch.tensor([2.0, 0.5, 1.0]), "mean_std")
    return FlowMatchingHead(FlowHeadConfig(action_dim=5, chunk=6, width=32), network, norm)


@pytest.mark.parametrize("net", ["transformer", "mlp"])
def test_head_with_zero_guidance_samples_bit_identically(net):
    head = make_head(net)
    prefix = torch.randn(4, 5, 3)
    plain = head.sample(4, generator=torch.Generator().manual_seed(3)).sample
    off = RTCGuide(prefix, RTCConfig(delay=2, horizon=4, max_guidance=0.0))
    guided = head.sample(4, generator=torch.Generator().manual_seed(3), guide=off).sample
    assert torch.equal(guided, plain)
    on = RTCGuide(prefix, RTCConfig(delay=2, horizon=4, max_guidance=5.0))
    pulled = head.sample(4, generator=torch.Generator().manual_seed(3), guide=on).sample
    assert not torch.allclose(pulled, plain)  # counter-case: the option is wired in
    assert all(p.grad is None for p in head.parameters())  # guidance leaves no .grad behind


@pytest.mark.parametrize(
    "solver", [ODESolver("euler"), ODESolver("midpoint"), ODESolver("rk4", backend="torchdiffeq")]
)
def test_head_pulls_raw_unit_prefix_over_the_delay(solver):
    """The prefix is in raw units: a head that forgot to normalise it would miss by the scale."""
    head = make_head()
    d = 3
    prefix = torch.tensor([4.0, -1.5, 1.0]).expand(8, 4, 3)  # 0.5 std from the centre
    cfg = RTCConfig(delay=d, horizon=4, max_guidance=10.0)
    g = torch.Generator
    plain = head.sample(8, generator=g().manual_seed(4), solver=solver).sample
    guided = head.sample(
        8, generator=g().manual_seed(4), solver=solver, guide=RTCGuide(prefix, cfg)
    ).sample
    scale = head.normalizer.inverse(torch.ones(3)) - head.normalizer.inverse(torch.zeros(3))
    miss_rtc = ((guided[:, :d] - prefix[:, :d]) / scale).abs().mean()
    miss_plain = ((plain[:, :d] - prefix[:, :d]) / scale).abs().mean()
    assert miss_rtc < 0.15 and miss_rtc < miss_plain / 4


# -- argument validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delay": 5, "horizon": 4}, "RTCConfig.delay"),
        ({"delay": -1, "horizon": 4}, "RTCConfig.delay"),
        ({"delay": 0, "horizon": 0}, "RTCConfig.horizon"),
        ({"delay": 1, "horizon": 4, "max_guidance": -1.0}, "RTCConfig.max_guidance"),
        ({"delay": 1, "horizon": 4, "max_guidance": math.inf}, "RTCConfig.max_guidance"),
        ({"delay": 1, "horizon": 4, "schedule": "cosine"}, "RTCConfig.schedule"),
    ],
)
def test_config_refuses_bad_fields(kwargs, field):
    # TypeError: under the test suite's runtime type checker a bad Literal fails the hint first
    with pytest.raises((ValueError, TypeError), match=field.split(".")[-1]):
        RTCConfig(**kwargs)


def test_bad_arguments_are_named():
    cfg = RTCConfig(delay=3, horizon=6)
    with pytest.raises(ValueError, match="chunk"):
        cfg.weights(5)
    with pytest.raises(ValueError, match="prefix"):
        cfg.weights(8, prefix=2)
    with pytest.raises(ValueError, match="max_guidance"):
        guidance_weight(torch.tensor(0.5), -1.0)
    with pytest.raises(ValueError, match="max_guidance"):
        guided_velocity(bimodal_field, torch.zeros(1, C, A), torch.ones(C, 1), -0.5)
    with pytest.raises((ValueError, TypeError), match="prefix"):  # TypeError: jaxtyping's check
        guided_velocity(bimodal_field, torch.zeros(C, A), torch.ones(C, 1), 1.0)
    field = guided_velocity(bimodal_field, torch.zeros(2, C - 1, A), torch.ones(C - 1, 1), 1.0)
    with pytest.raises(ValueError, match="broadcast"):
        field(torch.zeros(2, C, A), torch.tensor(0.5))
    with pytest.raises((ValueError, TypeError), match="prefix"):
        RTCGuide(torch.zeros(4, 3), cfg)
    with pytest.raises((ValueError, TypeError), match="config"):
        RTCGuide(torch.zeros(1, 4, 3), {"delay": 3})
    head = make_head()
    with pytest.raises(ValueError, match=r"guide\.prefix"):
        head.sample(2, guide=RTCGuide(torch.zeros(3, 4, 3), cfg))  # batch
    with pytest.raises(ValueError, match=r"guide\.prefix"):
        head.sample(2, guide=RTCGuide(torch.zeros(2, 7, 3), cfg))  # longer than the chunk
    with pytest.raises(ValueError, match="prefix"):
        head.sample(2, guide=RTCGuide(torch.zeros(2, 2, 3), cfg))  # cannot cover the delay
