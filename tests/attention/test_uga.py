"""Property tests of F1's UGA layout against DESIGN.md s2, over random counts and padding."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attention import ACTION, GENERATION, UNDERSTANDING, LayoutError, uga_layout
from tests.attention.reference import uga_mask_loop, uga_stage_keys


@st.composite
def uga_cases(draw):
    counts = {
        "prefix": draw(st.integers(1, 6)),
        "history": draw(st.integers(0, 4)),
        "scales": tuple(range(1, draw(st.integers(0, 4)) + 1)),
        "state": draw(st.integers(0, 2)),
        "actions": draw(st.integers(0, 5)),
    }
    merged = draw(st.booleans())
    layout = uga_layout(**counts, history_in_prefix=merged)
    b = draw(st.integers(1, 2))
    valid = torch.tensor(
        [draw(st.lists(st.booleans(), min_size=layout.n, max_size=layout.n)) for _ in range(b)]
    )
    return layout, counts, merged, valid


def stage_of(layout, merged: bool) -> torch.Tensor:
    """0 for understanding (and merged history), 1 generation, 2 action, per token."""
    stage = torch.tensor([{UNDERSTANDING: 0, GENERATION: 1, ACTION: 2}[e] for e in layout.experts])
    stage = stage[layout.expert_ids]
    if merged and "history" in layout:
        stage[layout.slice("history")] = 0
    return stage


@given(uga_cases())
def test_mask_equals_the_uga_block_rule(case) -> None:
    layout, counts, merged, valid = case
    keys = uga_stage_keys(**counts, merged=merged)
    assert len(keys) == layout.n
    assert torch.equal(layout.mask(), uga_mask_loop(keys, [True] * layout.n))
    got = layout.mask(valid)
    for r in range(valid.shape[0]):
        assert torch.equal(got[r], uga_mask_loop(keys, valid[r].tolist()))


@given(uga_cases())
def test_no_edge_from_a_later_stage_to_an_earlier_one(case) -> None:
    layout, _, merged, valid = case
    stage = stage_of(layout, merged)
    later_key = stage.unsqueeze(0) > stage.unsqueeze(1)  # [query, key]: key in a later stage
    assert not (layout.mask() & later_key).any()
    assert not (layout.mask(valid) & later_key).any()


@given(uga_cases())
def test_foresight_scales_are_block_causal(case) -> None:
    layout, counts, _, valid = case
    if "foresight" not in layout:
        return
    mask = layout.mask(valid)
    start = layout.slice("foresight").start
    spans = []
    for s in counts["scales"]:
        spans.append(slice(start, start + s * s))
        start += s * s
    for r in range(valid.shape[0]):
        for i, rows in enumerate(spans):
            for j, cols in enumerate(spans):
                sub = mask[r, rows, cols]
                expected = valid[r, rows].unsqueeze(1) & valid[r, cols].unsqueeze(0) & (j <= i)
                assert torch.equal(sub, expected)


@given(uga_cases())
def test_actions_see_everything_valid_before_them_and_each_other(case) -> None:
    layout, _, _, valid = case
    if "actions" not in layout:
        return
    rows = layout.slice("actions")
    mask = layout.mask(valid)
    for r in range(valid.shape[0]):
        expected = valid[r, rows].unsqueeze(1) & valid[r].unsqueeze(0)
        assert torch.equal(mask[r, rows], expected)


@given(uga_cases())
def test_padding_rows_and_columns_are_empty(case) -> None:
    layout, _, _, valid = case
    mask = layout.mask(valid)
    for r in range(valid.shape[0]):
        assert not mask[r][~valid[r]].any()
        assert not mask[r][:, ~valid[r]].any()
        # every valid token sees at least itself
        assert mask[r].diagonal()[valid[r]].all()


def test_history_flag_decides_whether_the_prefix_sees_history() -> None:
    merged = uga_layout(3, history=2, scales=(1, 2), state=1, actions=2)
    separate = uga_layout(3, history=2, scales=(1, 2), state=1, actions=2, history_in_prefix=False)
    pre, hist = merged.slice("prefix"), merged.slice("history")
    assert merged.mask()[pre, hist].all()
    assert not separate.mask()[pre, hist].any()
    assert separate.mask()[hist, pre].all()
    assert merged.num_blocks == separate.num_blocks - 1


def test_paper_layout_sizes() -> None:
    layout = uga_layout(8, history=4, scales=(1, 2, 3, 4), state=1, actions=4)
    assert layout.segment("foresight").blocks == (1, 4, 9, 16)
    assert layout.n == 8 + 4 + 30 + 1 + 4
    assert layout.experts == (UNDERSTANDING, GENERATION, ACTION)
    no_gen = uga_layout(8, scales=(), state=1, actions=4)
    assert no_gen.names == ("prefix", "state", "actions")
    assert no_gen.experts == (UNDERSTANDING, ACTION)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": 0}, "prefix: expected at least one"),
        ({"prefix": 2, "history": -1}, "history: expected a non-negative int"),
        ({"prefix": 2, "scales": (2, 3)}, r"scales\[0\] == 1"),
        ({"prefix": 2, "scales": (1, 3, 3)}, "strictly increasing"),
        ({"prefix": 2, "scales": (1, 0)}, "positive ints"),
        ({"prefix": 2, "actions": True}, "actions: expected a non-negative int"),
    ],
)
def test_bad_counts_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        uga_layout(**kwargs)
