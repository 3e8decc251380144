import torch
from hypothesis import given
from hypothesis import strategies as st

from attention import block_ids_from_starts, block_rule_mask
from tests.attention.reference import block_ids_loop, rule_mask_loop

bools = st.lists(st.booleans(), min_size=0, max_size=24)


@given(bools)
def test_block_ids_are_the_running_count_of_starts(starts: list[bool]) -> None:
    ids = block_ids_from_starts(torch.tensor(starts, dtype=torch.bool))
    assert ids.tolist() == block_ids_loop(starts)


@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=12),
    st.lists(st.integers(0, 5), min_size=1, max_size=12),
    st.data(),
)
def test_rule_mask_is_the_block_rule(q_blocks: list[int], kv_blocks: list[int], data) -> None:
    q_valid = data.draw(st.lists(st.booleans(), min_size=len(q_blocks), max_size=len(q_blocks)))
    kv_valid = data.draw(st.lists(st.booleans(), min_size=len(kv_blocks), max_size=len(kv_blocks)))
    got = block_rule_mask(
        torch.tensor(q_blocks),
        torch.tensor(kv_blocks),
        torch.tensor(q_valid),
        torch.tensor(kv_valid),
    )
    assert torch.equal(got, rule_mask_loop(q_blocks, kv_blocks, q_valid, kv_valid))
    unpadded = block_rule_mask(torch.tensor(q_blocks), torch.tensor(kv_blocks))
    all_valid = rule_mask_loop(q_blocks, kv_blocks, [True] * len(q_blocks), [True] * len(kv_blocks))
    assert torch.equal(unpadded, all_valid)


def test_batched_block_ids_and_masks() -> None:
    starts = torch.tensor([[True, False, True], [False, True, True]])
    ids = block_ids_from_starts(starts)
    assert ids.tolist() == [[0, 0, 1], [0, 1, 2]]
    mask = block_rule_mask(ids, ids)
    assert mask.shape == (2, 3, 3)
    assert mask[0].tolist() == [[True, True, False], [True, True, False], [True, True, True]]
    assert mask[1].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
