"""Token sampling: top-k / top-p sets, temperature, greedy, seeded frequencies, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight.sampling import filter_logits, sample_tokens, token_uniforms


@settings(max_examples=100)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 12), p=st.floats(0.05, 1.0))
def test_filter_keeps_the_smallest_top_k_set_reaching_mass_p(seed, k, p) -> None:
    logits = torch.randn(12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    kept = torch.isfinite(filter_logits(logits, top_k=k, top_p=p))
    order = logits.argsort(descending=True)
    top = torch.zeros(12, dtype=torch.bool)
    top[order[:k]] = True
    assert bool((kept <= top).all())  # never outside the top k
    probs = logits.masked_fill(~top, float("-inf")).softmax(-1)[order]
    m = int(kept.sum())  # kept = the m most likely: the first m reach p, the first m-1 do not
    assert bool(kept[order[:m]].all())
    assert m == k or float(probs[:m].sum()) >= p - 1e-12
    assert m == 1 or float(probs[: m - 1].sum()) < p


def test_greedy_temperature_and_seeded_frequencies() -> None:
    logits = torch.tensor([[[0.0, 1.0, 2.0, -1.0]]])
    assert sample_tokens(logits, None, temperature=0.0).item() == 2
    g = torch.Generator().manual_seed(0)
    draws = sample_tokens(logits.expand(1, 20000, 4).contiguous(), g)
    freq = torch.bincount(draws.flatten(), minlength=4).double() / 20000
    torch.testing.assert_close(freq, logits[0, 0].double().softmax(-1), atol=0.015, rtol=0)
    hot = sample_tokens(logits.expand(1, 20000, 4).contiguous(), g, temperature=0.25)
    assert (hot == 2).double().mean() > 0.95  # low temperature sharpens toward the argmax
    only = sample_tokens(logits.expand(1, 500, 4).contiguous(), g, top_k=2)
    assert set(only.flatten().tolist()) == {1, 2}
    a = sample_tokens(logits.expand(1, 50, 4), torch.Generator().manual_seed(5))
    b = sample_tokens(logits.expand(1, 50, 4), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature")],
)
def test_bad_settings_are_rejected(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        sample_tokens(torch.randn(1, 2, 5), None, **kwargs)


def test_inverse_cdf_reads_its_uniforms_and_never_returns_a_filtered_token() -> None:
    """One uniform per token, given or drawn: u picks the first token whose cumulative mass
    exceeds u; filtered tokens (probability 0, here the trailing ones) are never returned, not
    even for u at the top of [0, 1) where u * total may round up to the total."""
    logits = torch.tensor([[[2.0, 1.0, 0.0, -9.0, -9.0]]]).expand(1, 5, 5)
    probs = filter_logits(logits[0, 0], top_k=3).softmax(-1)
    cdf = probs.cumsum(-1)
    below_one = 1.0 - 2.0**-24  # the largest float32 below 1 (torch.rand's maximum)
    u = torch.tensor([[0.0, float(cdf[0]) - 1e-6, float(cdf[0]) + 1e-6, 0.999, below_one]])
    got = sample_tokens(logits, None, top_k=3, uniforms=u)
    assert got.tolist() == [[0, 0, 1, 2, 2]]
    g = torch.Generator().manual_seed(4)
    drawn = sample_tokens(logits, g, top_k=3)
    given_u = token_uniforms(1, 5, torch.Generator().manual_seed(4))
    assert torch.equal(drawn, sample_tokens(logits, None, top_k=3, uniforms=given_u))
    with pytest.raises((ValueError, TypeError), match="uniforms"):  # TypeError: the shape hook
        sample_tokens(logits, None, uniforms=torch.zeros(1, 4))


def test_filtered_tokens_between_kept_ones_are_skipped_and_non_finite_rows_are_refused() -> None:
    logits = torch.tensor([[[1.0, 3.0, 0.5, 2.0]]]).expand(1, 4, 4)  # top 2: tokens 1 and 3
    p1 = float(filter_logits(logits[0, 0], top_k=2).softmax(-1)[1])
    u = torch.tensor([[0.0, p1 - 1e-6, p1, 0.9999]])  # u = p1 exactly: past token 1 and 2
    assert sample_tokens(logits, None, top_k=2, uniforms=u).tolist() == [[1, 1, 3, 3]]
    broken = torch.tensor([[[float("nan"), 0.0, 1.0], [float("inf"), 0.0, 1.0], [0.0, 1.0, 2.0]]])
    got = sample_tokens(broken, torch.Generator().manual_seed(0))
    assert got[0, :2].tolist() == [3, 3] and 0 <= int(got[0, 2]) < 3  # v = 3: out of range
