"""Property tests of `Twin`: each view of the twinned sequence is exactly the layout's own."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attention import LayoutError, Twin, uga_layout


@st.composite
def twin_cases(draw):
    k = draw(st.integers(2, 4))
    layout = uga_layout(
        prefix=draw(st.integers(1, 5)),
        history=draw(st.integers(0, 3)),
        scales=tuple(range(1, k + 1)),
        state=draw(st.integers(0, 1)),
        actions=draw(st.integers(0, 3)),
        history_in_prefix=draw(st.booleans()),
    )
    fore = layout.slice("foresight")
    first = draw(st.integers(1, k - 1))  # twin scales first+1..last (SOS block kept shared)
    starts = [fore.start + sum(s * s for s in range(1, j + 1)) for j in range(k + 1)]
    last = draw(st.integers(first + 1, k))
    twin = Twin(layout, starts[first], starts[last])
    b = draw(st.integers(1, 2))
    valid = torch.tensor(
        [draw(st.lists(st.booleans(), min_size=layout.n, max_size=layout.n)) for _ in range(b)]
    )
    return twin, valid


@given(twin_cases())
def test_rows_outside_the_twin_see_exactly_the_layout(case) -> None:
    twin, valid = case
    layout, outside = twin.layout, ~twin.in_twin
    for got, want in ((twin.mask(), layout.mask()), (twin.mask(valid), layout.mask(valid))):
        rows = got[..., outside, :]
        assert not rows[..., twin.in_twin].any()  # nobody else sees the twin
        assert torch.equal(rows[..., outside], want)  # and sees the rest as the layout says
    assert torch.equal(twin.positions(valid)[..., outside], layout.positions(valid))


@given(twin_cases())
def test_twin_rows_see_what_the_range_rows_see_with_the_twin_in_its_place(case) -> None:
    twin, valid = case
    layout = twin.layout
    # The twin's view: the sequence with the range's tokens replaced by the twin's.
    view = torch.nonzero(~twin.in_range).squeeze(1)
    assert torch.equal(twin.index[view], torch.arange(layout.n))
    for got, want in ((twin.mask(), layout.mask()), (twin.mask(valid), layout.mask(valid))):
        rows = got[..., twin.twin, :]
        assert torch.equal(rows[..., view], want[..., twin.start : twin.stop, :])
        assert not rows[..., twin.in_range].any()
    assert torch.equal(twin.positions(valid)[..., view], layout.positions(valid))
    assert torch.equal(twin.valid(valid)[:, view], valid)


def test_the_twin_hides_what_the_plain_layout_would_show() -> None:
    # Counter-case: indexing the layout's mask alone (no privacy rule) lets the action rows
    # see the twin, which the twin's mask must forbid.
    layout = uga_layout(prefix=2, history=1, scales=(1, 2, 3), state=1, actions=2)
    fore = layout.slice("foresight")
    twin = Twin(layout, fore.start + 1, fore.stop)
    plain = layout.mask()[twin.index][:, twin.index]
    actions = slice(twin.n - 2, twin.n)
    assert plain[actions, twin.twin].all()
    assert not twin.mask()[actions, twin.twin].any()


def test_bad_ranges_are_refused() -> None:
    layout = uga_layout(prefix=2, history=1, scales=(1, 2), state=1, actions=2)
    fore = layout.slice("foresight")
    with pytest.raises(LayoutError, match="block boundaries"):
        Twin(layout, fore.start + 1, fore.start + 3)  # cuts scale 2's block
    with pytest.raises(LayoutError, match="one expert"):
        Twin(layout, fore.start + 1, fore.stop + 1)  # takes the state token along
    with pytest.raises(LayoutError, match="start < stop"):
        Twin(layout, 3, 3)
