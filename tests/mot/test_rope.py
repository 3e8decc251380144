"""RoPE: half-split pairing, relative-position property, and agreement with a complex rotation."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mot import apply_rope, rope_angles


def _complex_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Independent reference: (x_i, x_{i+e/2}) as a complex number times exp(i pos theta_i)."""
    e = x.shape[-1]
    theta = base ** (-torch.arange(0, e, 2, dtype=torch.float64) / e)
    z = torch.complex(x[..., : e // 2].double(), x[..., e // 2 :].double())
    z = z * torch.polar(torch.ones_like(theta), positions.double()[:, None] * theta)
    return torch.cat((z.real, z.imag), dim=-1).float()


@given(
    n=st.integers(1, 6),
    half=st.integers(1, 8),
    offset=st.integers(0, 500),
    base=st.sampled_from([100.0, 10000.0]),
)
def test_rope_equals_complex_rotation(n: int, half: int, offset: int, base: float) -> None:
    e = 2 * half
    gen = torch.Generator().manual_seed(n * 1000 + e)
    x = torch.randn(1, 2, n, e, generator=gen)
    positions = torch.arange(n) + offset
    cos, sin = rope_angles(positions, e, base)
    expected = _complex_rope(x, positions, base)
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, atol=1e-4, rtol=1e-4)


def test_rope_is_not_the_interleaved_convention() -> None:
    """Pins the pairing: rotating (x_0, x_1) as a pair (interleaved) gives another answer."""
    x = torch.randn(1, 1, 3, 8)
    positions = torch.tensor([1, 2, 3])
    cos, sin = rope_angles(positions, 8)
    interleaved = x.reshape(1, 1, 3, 4, 2)[..., [0, 1]]
    z = torch.complex(interleaved[..., 0], interleaved[..., 1])
    theta = 10000.0 ** (-torch.arange(0, 8, 2) / 8)
    z = z * torch.polar(torch.ones(4), positions[:, None].float() * theta)
    as_interleaved = torch.stack((z.real, z.imag), dim=-1).reshape(1, 1, 3, 8)
    assert not torch.allclose(apply_rope(x, cos, sin), as_interleaved, atol=1e-3)


@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(-100, 100))
def test_scores_depend_only_on_relative_position(m: int, n: int, shift: int) -> None:
    gen = torch.Generator().manual_seed(m + 7 * n)
    q, k = torch.randn(2, 1, 1, 1, 16, generator=gen)
    shift = max(shift, -min(m, n))

    def score(pq: int, pk: int) -> torch.Tensor:
        cq, sq = rope_angles(torch.tensor([pq]), 16)
        ck, sk = rope_angles(torch.tensor([pk]), 16)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-4, rtol=1e-4)


def test_position_zero_is_identity_and_others_are_not() -> None:
    x = torch.randn(1, 2, 2, 8)
    cos, sin = rope_angles(torch.tensor([0, 5]), 8)
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0])
    assert not torch.allclose(out[:, :, 1], x[:, :, 1])


def test_per_sample_positions_broadcast_over_heads() -> None:
    x = torch.randn(2, 3, 4, 8)
    positions = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 2]])  # second sample: a padded slot
    cos, sin = rope_angles(positions, 8)
    out = apply_rope(x, cos, sin)
    for b in range(2):
        cb, sb = rope_angles(positions[b], 8)
        torch.testing.assert_close(out[b : b + 1], apply_rope(x[b : b + 1], cb, sb))


def test_odd_head_dim_is_rejected() -> None:
    with pytest.raises(ValueError, match="head_dim: RoPE needs an even size, got 7"):
        rope_angles(torch.arange(3), 7)
