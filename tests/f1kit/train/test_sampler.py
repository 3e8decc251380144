import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from f1kit.train import SamplerState, ShardedBatchSampler, epoch_order


def rank_batches(n: int, local: int, world: int, batches: int, **kw) -> list[list[list[int]]]:
    """``out[r][i]``: rank r's indices at step i."""
    return [
        list(
            ShardedBatchSampler(
                n, local * world, num_batches=batches, world_size=world, rank=r, **kw
            )
        )
        for r in range(world)
    ]


def global_stream(per_rank: list[list[list[int]]]) -> list[int]:
    return [i for step in zip(*per_rank, strict=True) for part in step for i in part]


@given(
    epochs=st.integers(1, 3),
    batches_per_epoch=st.integers(1, 4),
    local=st.integers(1, 3),
    world=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**31),
)
def test_every_index_once_per_epoch_across_ranks(
    epochs: int, batches_per_epoch: int, local: int, world: int, seed: int
) -> None:
    n = batches_per_epoch * local * world
    per_rank = rank_batches(n, local, world, epochs * batches_per_epoch, seed=seed)
    for epoch in range(epochs):
        steps = range(epoch * batches_per_epoch, (epoch + 1) * batches_per_epoch)
        seen = [i for r in range(world) for s in steps for i in per_rank[r][s]]
        assert sorted(seen) == list(range(n))
        # Ranks never share a sample within an epoch.
        sets = [{i for s in steps for i in per_rank[r][s]} for r in range(world)]
        assert sum(map(len, sets)) == n


@given(
    n=st.integers(1, 20),
    local=st.integers(1, 4),
    world=st.sampled_from([1, 2, 3]),
    batches=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_stream_is_the_epoch_orders_back_to_back(
    n: int, local: int, world: int, batches: int, seed: int
) -> None:
    # Batches that straddle epochs drop nothing: the stream is epoch 0, epoch 1, ... concatenated.
    stream = global_stream(rank_batches(n, local, world, batches, seed=seed))
    epochs = -(-len(stream) // n)
    expected = np.concatenate([epoch_order(n, e, seed) for e in range(epochs)])
    assert stream == expected[: len(stream)].tolist()
    assert len(stream) == batches * local * world


@given(
    n=st.integers(1, 15),
    local=st.integers(1, 3),
    world=st.sampled_from([1, 2, 3]),
    new_world=st.sampled_from([1, 2, 3]),
    total=st.integers(1, 10),
    data=st.data(),
)
def test_resume_at_any_position_continues_the_same_order(
    n: int, local: int, world: int, new_world: int, total: int, data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, total))
    batch = local * world
    full = global_stream(rank_batches(n, local, world, total, seed=7))
    head = ShardedBatchSampler(n, batch, num_batches=split, world_size=world, seed=7)
    state = head.state_after(split)
    assert state.epoch * n + state.position == split * batch
    # The state is global: resuming with another world size (same global batch) is still exact.
    if batch % new_world:
        return
    tail = rank_batches(n, batch // new_world, new_world, total - split, seed=7, state=state)
    assert full[split * batch :] == global_stream(tail)


def test_weighted_draws_follow_the_weights_and_the_seed() -> None:
    weights = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    draws = np.concatenate(
        list(ShardedBatchSampler(5, 10, num_batches=2000, seed=3, weights=weights).global_batches())
    )
    freq = np.bincount(draws, minlength=5) / len(draws)
    assert freq[0] == 0.0
    # 20000 draws: the standard error of each frequency is below 0.0035.
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.015)
    again = ShardedBatchSampler(5, 10, num_batches=20, seed=3, weights=weights)
    other = ShardedBatchSampler(5, 10, num_batches=20, seed=4, weights=weights)
    assert list(again) == [b.tolist() for b in np.split(draws[:200], 20)]
    assert list(other) != list(again)


def test_seeds_and_epochs_give_different_orders() -> None:
    orders = {tuple(epoch_order(50, e, s)) for e in range(3) for s in range(3)}
    assert len(orders) == 9
    assert epoch_order(50, 1, 0).tolist() == epoch_order(50, 1, 0).tolist()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ShardedBatchSampler(10, 5, num_batches=1, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        ShardedBatchSampler(10, 4, num_batches=1, world_size=2, rank=2)
    with pytest.raises(ValueError, match="sample_weights"):
        ShardedBatchSampler(10, 4, num_batches=1, weights=np.ones(9))
    with pytest.raises(ValueError, match="sample_weights"):
        ShardedBatchSampler(3, 4, num_batches=1, weights=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="taken over 12 samples"):
        ShardedBatchSampler(10, 4, num_batches=1, state=SamplerState(0, 3, 12))
