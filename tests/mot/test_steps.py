"""step_inputs: the rows/columns and positions a (cached) step sees are the full layout's."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attention import LayoutError, uga_layout
from mot import step_inputs
from tests.mot.helpers import small_uga_layouts, valid_masks


@given(data=st.data(), layout=small_uga_layouts())
def test_step_is_a_block_of_the_full_mask(data, layout) -> None:
    valid = data.draw(valid_masks(layout, 2))
    boundaries = [i for i in range(1, layout.n + 1) if i == layout.n or layout.block_starts[i]]
    stop = data.draw(st.sampled_from(boundaries))
    start = data.draw(st.integers(0, stop - 1))
    full_mask, full_pos = step_inputs(layout, valid)
    mask, pos = step_inputs(layout, valid, queries=slice(start, stop))
    assert torch.equal(mask, full_mask[:, start:stop, :stop])
    assert torch.equal(pos, full_pos[:, start:stop])
    # Keys after the step's last query are never needed: no row of the step may see them.
    assert not full_mask[:, start:stop, stop:].any()


def test_named_segment_and_unpadded_forms() -> None:
    layout = uga_layout(prefix=4, scales=(1, 2), state=1, actions=3)
    mask, pos = step_inputs(layout, queries="actions")
    assert mask.shape == (3, 13) and pos.tolist() == [10, 11, 12]
    assert mask[:, :10].all() and mask[:, 10:].all()
    mask, _ = step_inputs(layout, queries="foresight")
    assert mask.shape == (5, 9)
    assert mask[0, :5].all() and not mask[0, 5:].any()  # SOS: prefix and itself
    assert mask[1:, :].all()  # scale 2: prefix, SOS and its own block


def test_bad_queries_are_rejected() -> None:
    layout = uga_layout(prefix=4, actions=2)
    with pytest.raises(LayoutError, match="non-empty contiguous slice"):
        step_inputs(layout, queries=slice(3, 3))
    with pytest.raises(LayoutError, match="non-empty contiguous slice"):
        step_inputs(layout, queries=slice(0, 4, 2))
    with pytest.raises(LayoutError, match="must end at a block boundary, 2 cuts block 0"):
        step_inputs(layout, queries=slice(0, 2))
    with pytest.raises(LayoutError, match="segment 'foresight': not in this layout"):
        step_inputs(layout, queries="foresight")
