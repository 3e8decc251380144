"""RMSNorm: Gemma's formula (eps inside the root, float32 math), learned gain."""

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from mot import RMSNorm


@given(d=st.integers(1, 16), scale=st.floats(1e-3, 1e3), eps=st.sampled_from([1e-6, 1e-2]))
def test_rmsnorm_matches_formula(d: int, scale: float, eps: float) -> None:
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(2, 3, d, generator=gen, dtype=torch.float64) * scale
    norm = RMSNorm(d, eps).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d, generator=gen, dtype=torch.float64))
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_eps_is_inside_the_root() -> None:
    """With tiny inputs eps dominates: the output is x/sqrt(eps), not a unit-RMS vector."""
    x = torch.full((1, 4), 1e-4)
    out = RMSNorm(4, eps=1e-2)(x)
    torch.testing.assert_close(out, x / torch.sqrt(torch.tensor(1e-8 + 1e-2)))
    # F.normalize-style RMSNorm (x-transformers) would return ~1 here: the difference is real.
    assert not torch.allclose(out, F.normalize(x, dim=-1) * 2.0)


def test_zero_input_gives_zero_not_nan() -> None:
    out = RMSNorm(4)(torch.zeros(2, 4))
    assert torch.equal(out, torch.zeros(2, 4))


def test_bfloat16_input_keeps_dtype() -> None:
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    out = RMSNorm(8)(x)
    assert out.dtype == torch.bfloat16
    expected = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)
