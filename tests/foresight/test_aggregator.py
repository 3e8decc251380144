"""TemporalAggregator: per-token temporal conv, time mixing, token independence, errors."""

import pytest
import torch
from einops import einsum
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight.aggregator import TemporalAggregator


def test_output_is_the_per_token_conv_formula() -> None:
    """y_i = W (sum_j C_j x_{j,i} + c) + w + p_i, computed independently with einsum."""
    torch.manual_seed(0)
    agg = TemporalAggregator(frames=4, tokens=5, latent_dim=3, width=8).double()
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    conv_w = agg.temporal.weight  # [z_out, z_in, t]
    mixed = einsum(x, conv_w, "b t n zi, zo zi t -> b n zo") + agg.temporal.bias
    expected = mixed @ agg.proj.weight.T + agg.proj.bias + agg.position
    torch.testing.assert_close(agg(x), expected)


@settings(max_examples=50)  # a module per example
@given(
    frames=st.integers(1, 4),
    tokens=st.integers(1, 6),
    frame=st.integers(0, 3),
    token=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_mixes_time_and_keeps_tokens_independent(frames, tokens, frame, token, seed) -> None:
    """Changing frame j of token i changes output token i and no other token."""
    frame, token = frame % frames, token % tokens
    torch.manual_seed(seed)
    agg = TemporalAggregator(frames, tokens, latent_dim=3, width=4).double()
    x = torch.randn(2, frames, tokens, 3, dtype=torch.float64)
    y = agg(x)
    moved = x.clone()
    moved[:, frame, token] += 1.0
    z = agg(moved)
    others = [i for i in range(tokens) if i != token]
    assert torch.equal(z[:, others], y[:, others])
    assert not torch.allclose(z[:, token], y[:, token])


def test_jacobian_is_block_diagonal_over_tokens_and_dense_over_time() -> None:
    torch.manual_seed(1)
    agg = TemporalAggregator(frames=3, tokens=4, latent_dim=2, width=5).double()
    x = torch.randn(1, 3, 4, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda h: agg(h), x)  # [1, 4, 5, 1, 3, 4, 2]
    per_pair = jac.abs().sum(dim=(0, 2, 3, 6))  # [out token, frame, in token]
    for i in range(4):
        for j in range(4):
            if i == j:
                assert bool((per_pair[i, :, j] > 0).all())  # every frame reaches token i
            else:
                assert bool((per_pair[i, :, j] == 0).all())


def test_position_embedding_distinguishes_tokens() -> None:
    agg = TemporalAggregator(frames=2, tokens=3, latent_dim=2, width=4)
    y = agg(torch.zeros(1, 2, 3, 2))
    assert not torch.allclose(y[0, 0], y[0, 1])
    y.sum().backward()
    assert agg.position.grad is not None and agg.temporal.weight.grad is not None


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 3, 5, 4), "history frames: expected 4, got 3"),
        ((2, 5, 5, 4), "history frames: expected 4, got 5"),
        ((2, 4, 6, 4), "history tokens: expected 5"),
        ((2, 4, 5, 3), "history latent_dim: expected 4"),
    ],
)
def test_wrong_history_shapes_are_rejected(shape, message) -> None:
    agg = TemporalAggregator(frames=4, tokens=5, latent_dim=4, width=8)
    with pytest.raises(ValueError, match=message):
        agg(torch.randn(*shape))


@pytest.mark.parametrize("field", ["frames", "tokens", "latent_dim", "width"])
def test_bad_sizes_are_rejected(field) -> None:
    sizes = {"frames": 4, "tokens": 5, "latent_dim": 4, "width": 8, field: 0}
    with pytest.raises(ValueError, match=field):
        TemporalAggregator(**sizes)
