import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attention import Layout, LayoutError, Segment
from tests.attention.reference import block_ids_loop, rule_mask_loop


@st.composite
def layouts(draw) -> Layout:
    """Random layouts: 1-5 segments, 1-3 experts in contiguous runs, random blocks and joins."""
    count = draw(st.integers(1, 5))
    expert_runs = sorted(draw(st.lists(st.integers(0, count - 1), min_size=count, max_size=count)))
    segments = []
    for i in range(count):
        blocks = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        joins = i > 0 and draw(st.booleans())
        segments.append(Segment(f"s{i}", f"e{expert_runs[i]}", blocks, joins_previous=joins))
    return Layout(tuple(segments))


def starts_of(layout: Layout) -> list[bool]:
    flags = []
    for seg in layout.segments:
        for i, length in enumerate(seg.blocks):
            flags += [not (i == 0 and seg.joins_previous)] + [False] * (length - 1)
    return flags


@given(layouts(), st.data())
def test_mask_is_the_block_rule_with_padding(layout: Layout, data) -> None:
    b = data.draw(st.integers(1, 3))
    valid = torch.tensor(
        [data.draw(st.lists(st.booleans(), min_size=layout.n, max_size=layout.n)) for _ in range(b)]
    )
    blocks = block_ids_loop(starts_of(layout))
    assert layout.block_ids.tolist() == blocks
    full = layout.mask()
    assert torch.equal(full, rule_mask_loop(blocks, blocks, [True] * layout.n, [True] * layout.n))
    padded = layout.mask(valid)
    for r in range(b):
        row_valid = valid[r].tolist()
        assert torch.equal(padded[r], rule_mask_loop(blocks, blocks, row_valid, row_valid))
        # padding neither attends nor is attended to
        assert not padded[r][~valid[r]].any()
        assert not padded[r][:, ~valid[r]].any()


@given(layouts(), st.data())
def test_query_rows_are_rows_of_the_full_mask(layout: Layout, data) -> None:
    name = data.draw(st.sampled_from(layout.names))
    span = layout.slice(name)
    assert torch.equal(layout.mask(queries=name), layout.mask()[span])
    start = data.draw(st.integers(0, layout.n - 1))
    assert torch.equal(layout.mask(queries=slice(start, None)), layout.mask()[start:])


@given(layouts())
def test_tables_describe_the_segments(layout: Layout) -> None:
    assert layout.n == sum(s.length for s in layout.segments) == len(layout)
    for seg in layout.segments:
        span = layout.slice(seg.name)
        assert span.stop - span.start == seg.length
        owner = layout.experts.index(seg.expert)
        assert (layout.expert_ids[span] == owner).all()
    for expert, count in layout.expert_lengths().items():
        span = layout.expert_slice(expert)
        assert (layout.expert_ids[span] == layout.experts.index(expert)).sum() == count
    assert sum(layout.expert_lengths().values()) == layout.n
    # block ids never decrease along the sequence, so no block sees a later one
    assert (layout.block_ids.diff() >= 0).all()


def test_positions_count_valid_tokens() -> None:
    layout = Layout((Segment("a", "x", (3,)), Segment("b", "y", (2,))))
    valid = torch.tensor([[True, False, True, True, False], [False, True, True, True, True]])
    assert layout.positions(valid).tolist() == [[0, 0, 1, 2, 2], [0, 0, 1, 2, 3]]
    assert layout.positions().tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ((), "at least one segment"),
        ((Segment("a", "x", (1,)), Segment("a", "y", (1,))), "unique"),
        ((Segment("a", "x", (1,), joins_previous=True),), "no previous block"),
        (
            (Segment("a", "x", (1,)), Segment("b", "y", (1,)), Segment("c", "x", (1,))),
            "contiguous",
        ),
    ],
)
def test_bad_layouts_are_rejected(segments: tuple[Segment, ...], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        Layout(segments)


def test_bad_segments_and_lookups_are_named() -> None:
    with pytest.raises(LayoutError, match="'a' blocks"):
        Segment("a", "x", (2, 0))
    with pytest.raises(LayoutError, match="at least one block"):
        Segment("a", "x", ())
    layout = Layout((Segment("a", "x", (2,)),))
    with pytest.raises(LayoutError, match="'zz': not in this layout"):
        layout.slice("zz")
    with pytest.raises(LayoutError, match="expert 'q'"):
        layout.expert_slice("q")
    with pytest.raises(LayoutError, match=r"valid: expected shape \[b, 2\]"):
        layout.mask(torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(LayoutError, match="valid: expected a bool tensor"):
        layout.check_valid(torch.ones(1, 2))
    with pytest.raises(LayoutError, match="contiguous slice"):
        layout.mask(queries=slice(0, 2, 2))
