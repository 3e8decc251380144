"""The paper convention and the mirrored pi0/openpi one, and the exact adapter between them."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from flow import Convention, ODESolver, adapt_velocity, convert_time, convert_velocity

PAPER, PI0 = Convention.PAPER, Convention.PI0

# Dyadic numbers with few bits: every product and sum below is exact in float32, so the
# conventions must agree bit for bit, not just to a tolerance.
dyadic = st.integers(-64, 64).map(lambda k: k / 16)
dyadic_time = st.integers(0, 16).map(lambda k: k / 16)


@given(
    eps=st.lists(dyadic, min_size=6, max_size=6),
    act=st.lists(dyadic, min_size=6, max_size=6),
    tau=st.lists(dyadic_time, min_size=2, max_size=2),
)
def test_same_point_of_the_path_is_bit_identical(eps, act, tau):
    noise = torch.tensor(eps).reshape(2, 3)
    data = torch.tensor(act).reshape(2, 3)
    tau_t = torch.tensor(tau)
    ours = PAPER.interpolate(noise, data, tau_t)
    theirs = PI0.interpolate(noise, data, convert_time(tau_t, PAPER, PI0))
    assert torch.equal(ours, theirs)
    assert torch.equal(
        PAPER.target(noise, data), convert_velocity(PI0.target(noise, data), PI0, PAPER)
    )


def test_endpoints_and_target_is_the_path_derivative():
    g = torch.Generator().manual_seed(0)
    noise, data = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    for conv in Convention:

        def at(t: float, conv: Convention = conv) -> Tensor:
            return conv.interpolate(noise, data, torch.full((2,), t))

        assert torch.equal(at(conv.noise_time), noise)
        assert torch.equal(at(conv.data_time), data)
        # Straight path: finite difference in time equals the target velocity.
        torch.testing.assert_close((at(0.75) - at(0.25)) / 0.5, conv.target(noise, data))
    assert PAPER.noise_time == 0.0 and PI0.noise_time == 1.0


def test_conventions_really_differ():
    # Counter-case: using one convention's formulas for the other is wrong, not a no-op.
    noise, data, tau = torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.25])
    assert not torch.equal(PAPER.interpolate(noise, data, tau), PI0.interpolate(noise, data, tau))
    assert torch.equal(PAPER.target(noise, data), -PI0.target(noise, data))


@given(t=st.floats(0, 1))
def test_conversions_are_involutions(t: float):
    x = torch.tensor([t], dtype=torch.float64)
    assert torch.equal(convert_time(convert_time(x, PAPER, PI0), PI0, PAPER), 1 - (1 - x))
    assert torch.equal(convert_velocity(convert_velocity(x, PI0, PAPER), PAPER, PI0), x)
    assert convert_time(x, PAPER, PAPER) is x and convert_velocity(x, PI0, PI0) is x


def _openpi_style_sampler(net, noise: Tensor, steps: int) -> Tensor:
    """The mirrored sampler as the official code writes it: t from 1 down, x += dt * v, dt < 0."""
    dt = -1.0 / steps
    x, t = noise, 1.0
    for _ in range(steps):
        x = x + dt * net(x, torch.tensor(t))
        t = t + dt
    return x


@pytest.mark.parametrize("steps", [1, 4, 8, 16])
def test_imported_pi0_network_integrates_bit_identically(steps: int):
    torch.manual_seed(steps)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.SiLU(), torch.nn.Linear(32, 3))

    def pi0_net(x: Tensor, t: Tensor) -> Tensor:  # velocity eps - a, time t = 1 - tau
        return mlp(torch.cat([x, t.reshape(1, 1).expand(x.shape[0], 1).to(x.dtype)], dim=-1))

    noise = torch.randn(5, 3)
    with torch.no_grad():
        theirs = _openpi_style_sampler(pi0_net, noise, steps)
        ours = ODESolver("euler", steps)(adapt_velocity(pi0_net, PI0, PAPER), noise).sample
        unadapted = ODESolver("euler", steps)(pi0_net, noise).sample
    assert torch.equal(ours, theirs)  # powers of two: every time and step is exact
    assert not torch.allclose(unadapted, theirs, atol=1e-3)  # forgetting the adapter shows


def test_adapted_oracle_field_reaches_the_data():
    # For a single data point a, the pi0-convention field is v(x, t) = (x - a) / t.
    a = torch.tensor([[1.5, -2.0]], dtype=torch.float64)

    def pi0_oracle(x: Tensor, t: Tensor) -> Tensor:
        return (x - a) / t

    noise = torch.randn(1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ODESolver("euler", 10)(adapt_velocity(pi0_oracle, PI0, PAPER), noise).sample
    torch.testing.assert_close(out, a)  # straight paths: Euler is exact
    back = ODESolver("euler", 10, t0=1.0, t1=0.0)(pi0_oracle, noise).sample
    torch.testing.assert_close(back, a)  # and the native solver runs their direction too
    assert adapt_velocity(pi0_oracle, PI0, PI0) is pi0_oracle
