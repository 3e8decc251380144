"""Zero-padding to a shared max dim and the mask of real features."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flow import pad_to_dim, unpad


@given(a=st.integers(1, 6), extra=st.integers(0, 4), lead=st.integers(1, 3))
def test_pad_then_unpad_round_trips_with_an_exact_mask(a: int, extra: int, lead: int):
    x = torch.randn(lead, 2, a)
    padded, mask = pad_to_dim(x, a + extra)
    assert padded.shape == (lead, 2, a + extra)
    assert mask.tolist() == [True] * a + [False] * extra
    assert torch.equal(padded[..., ~mask], torch.zeros(lead, 2, extra))
    assert torch.equal(unpad(padded, a), x)


def test_padding_errors():
    with pytest.raises(ValueError, match="do not fit"):
        pad_to_dim(torch.zeros(2, 5), 4)
    with pytest.raises(ValueError, match="dim"):
        unpad(torch.zeros(2, 5), 6)
