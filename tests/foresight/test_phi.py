"""phi: the tick lookup that picks a conv per scale, and the residual mixing."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from foresight import PhiBank, phi_index, phi_ticks


def test_ticks_of_released_tokenizer():
    # Four convs: VAR places them at 1/12 .. 11/12 (not 1/8 .. 7/8 as for other counts).
    assert phi_ticks(4).tolist() == pytest.approx([1 / 12, 13 / 36, 23 / 36, 11 / 12])
    assert phi_ticks(2).tolist() == pytest.approx([1 / 4, 3 / 4])
    assert phi_ticks(1).tolist() == pytest.approx([0.5])


def test_released_schedule_lookup():
    # Ten scales at k/9 against ticks 3/36, 13/36, 23/36, 33/36. k = 2 and k = 7 sit exactly
    # halfway in exact arithmetic (5/36 either side); float64 rounding decides, as in VAR.
    table = [phi_index(k, 10, 4) for k in range(10)]
    assert table[:2] == [0, 0] and table[3:7] == [1, 1, 2, 2] and table[8:] == [3, 3]
    assert table[2] in (0, 1) and table[7] in (2, 3)
    assert table == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


@given(num_scales=st.integers(1, 16), count=st.integers(1, 16))
def test_lookup_is_monotone_and_covers_ends(num_scales, count):
    table = [phi_index(k, num_scales, count) for k in range(num_scales)]
    assert table == sorted(table)
    assert table[0] == 0
    if num_scales > 1:
        assert table[-1] == count - 1
    if count == num_scales:  # one conv per scale: the identity map
        assert table == list(range(num_scales))
    if count == 1:
        assert set(table) == {0}


def test_lookup_rejects_out_of_range():
    with pytest.raises(ValueError, match="scale"):
        phi_index(5, 5, 2)
    with pytest.raises(ValueError, match="phi count"):
        phi_ticks(0)


@given(ratio=st.floats(0.05, 1.0), k=st.integers(0, 3))
def test_phi_mixes_input_and_conv(ratio, k):
    torch.manual_seed(0)
    bank = PhiBank(dim=3, count=2, ratio=ratio)
    h = torch.randn(2, 3, 5, 5)
    conv = bank.convs[phi_index(k, 4, 2)]
    expected = (1 - ratio) * h + ratio * conv(h)
    torch.testing.assert_close(bank(h, k, 4), expected)
    other = bank.convs[1 - phi_index(k, 4, 2)]
    assert not torch.allclose(bank(h, k, 4), (1 - ratio) * h + ratio * other(h))


def test_phi_rejects_bad_ratio():
    with pytest.raises(ValueError, match="phi ratio"):
        PhiBank(dim=3, count=1, ratio=0.0)
