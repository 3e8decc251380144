"""KV-cached forwards: prefix, then foresight scales one by one, then repeated read-only action
steps equal the full forward, in place and without copying the cache."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention import uga_layout
from mot import KVCache, KVCacheError, step_inputs
from tests.mot.helpers import expert_inputs, random_stack, tiny_config, valid_masks


def _incremental(stack, layout, u, g, valid, action_inputs):
    """Run ``layout`` as F1 inference does; return outputs per segment and the cache."""
    batch = u.shape[0]
    cache = stack.new_cache(batch, layout.n)
    outs = {}
    # 1) prefix + history + SOS in one pass, appended.
    sos_stop = layout.slice("foresight").start + 1
    g_first = sos_stop - layout.expert_slice("generation").start
    mask, pos = step_inputs(layout, valid, queries=slice(0, sos_stop))
    outs["prefix"], outs["g0"], _ = stack([u, g[:, :g_first], None], pos, mask, cache=cache)
    # 2) each further scale appends its tokens (only the generation expert runs).
    start, pieces = sos_stop, [outs["g0"]]
    for size in layout.segment("foresight").blocks[1:]:
        mask, pos = step_inputs(layout, valid, queries=slice(start, start + size))
        rows = slice(start - layout.expert_slice("generation").start, None)
        g_k = g[:, rows][:, :size]
        _, out, _ = stack([None, g_k, None], pos, mask, cache=cache)
        pieces.append(out)
        start += size
    outs["generation"] = torch.cat(pieces, dim=1)
    # 3) state + actions, read-only, once per flow step.
    mask, pos = step_inputs(layout, valid, queries=layout.expert_slice("action"))
    outs["action"] = [
        stack([None, None, a_step], pos, mask, cache=cache, update_cache=False)[2]
        for a_step in action_inputs
    ]
    return outs, cache


@pytest.mark.parametrize("padded", [False, True])
def test_cached_inference_equals_full_forward(padded: bool) -> None:
    cfg = tiny_config()
    stack = random_stack(cfg, seed=2)
    layout = uga_layout(prefix=5, history=3, scales=(1, 2, 3), state=1, actions=4)
    u, g, a = expert_inputs(layout, cfg, batch=2, seed=3)
    valid = torch.ones(2, layout.n, dtype=torch.bool)
    if padded:
        valid[1, 3:5] = False  # second sample: two padded prefix tokens
    action_steps = [a + 0.5 * k for k in range(3)]  # the flow steps change the action tokens
    with torch.no_grad():
        outs, cache = _incremental(stack, layout, u, g, valid, action_steps)
        mask, pos = step_inputs(layout, valid)
        for k, a_step in enumerate(action_steps):
            full_u, full_g, full_a = stack([u, g, a_step], pos, mask)
            torch.testing.assert_close(outs["action"][k], full_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["prefix"], full_u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["generation"], full_g, atol=1e-5, rtol=1e-5)
    assert cache.length == layout.n - layout.expert_lengths()["action"]
    # Counter-case: the steps differ from each other, so equality is not a constant output.
    assert not torch.allclose(outs["action"][0], outs["action"][1], atol=1e-3)


def test_read_only_steps_neither_copy_nor_grow_the_cache() -> None:
    cfg = tiny_config()
    stack = random_stack(cfg)
    layout = uga_layout(prefix=4, scales=(1, 2), state=1, actions=3)
    u, g, a = expert_inputs(layout, cfg, batch=1)
    cache = stack.new_cache(1, layout.n)
    k_ptr, v_ptr = cache.k.untyped_storage().data_ptr(), cache.v.untyped_storage().data_ptr()
    with torch.no_grad():
        mask, pos = step_inputs(layout, queries=slice(0, 9))
        stack([u, g, None], pos, mask, cache=cache)
        prefix_k = cache.k[:, :, :, :9].clone()
        assert prefix_k.abs().sum() > 0  # the cached part is real data, not zeros
        mask, pos = step_inputs(layout, queries=slice(9, 13))
        for step in range(10):
            stack([None, None, a + step], pos, mask, cache=cache, update_cache=False)
            assert cache.length == 9
    k0, v0 = cache.kv(0)
    assert v0.data_ptr() == cache.v.data_ptr()
    assert k0.shape == (1, cfg.kv_heads, 9, cfg.head_dim) and k0.data_ptr() == cache.k.data_ptr()
    assert cache.k.untyped_storage().data_ptr() == k_ptr
    assert cache.v.untyped_storage().data_ptr() == v_ptr
    assert torch.equal(cache.k[:, :, :, :9], prefix_k)
    # The scratch slots after the pointer hold the last step's K, written in place.
    assert cache.k[:, :, :, 9:13].abs().sum() > 0


@settings(max_examples=100)  # each example runs the stack ~8 times (~0.05 s single-threaded)
@given(
    data=st.data(),
    prefix=st.integers(1, 3),
    history=st.integers(0, 2),
    scales=st.sampled_from([(1,), (1, 2), (1, 2, 3)]),
    actions=st.integers(1, 3),
    batch=st.integers(1, 2),
)
def test_cached_equals_full_property(data, prefix, history, scales, actions, batch) -> None:
    cfg = tiny_config(depth=1, heads=2, kv_heads=1)
    stack = random_stack(cfg, seed=prefix + actions)
    layout = uga_layout(prefix=prefix, history=history, scales=scales, state=1, actions=actions)
    valid = data.draw(valid_masks(layout, batch))
    u, g, a = expert_inputs(layout, cfg, batch, seed=history)
    with torch.no_grad():
        outs, _ = _incremental(stack, layout, u, g, valid, [a])
        mask, pos = step_inputs(layout, valid)
        full = stack([u, g, a], pos, mask)
    torch.testing.assert_close(outs["prefix"], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["generation"], full[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["action"][0], full[2], atol=1e-5, rtol=1e-5)


def test_cache_errors_are_named() -> None:
    cfg = tiny_config()
    stack = random_stack(cfg)
    cache = stack.new_cache(1, 4)
    x = [torch.randn(1, 3, 24), None, None]
    mask = torch.ones(3, 3, dtype=torch.bool)
    with torch.no_grad():
        stack(x, torch.arange(3), mask, cache=cache)
        with pytest.raises(KVCacheError, match="3 new tokens do not fit, 3 of 4 slots"):
            stack(x, torch.arange(3), torch.ones(3, 6, dtype=torch.bool), cache=cache)
        with pytest.raises(KVCacheError, match="cache holds 1 samples, input has 2"):
            stack([torch.randn(2, 1, 24), None, None], torch.arange(1), None, cache=cache)
        with pytest.raises(ValueError, match="mask: expected \\[1, 4\\]"):
            stack([torch.randn(1, 1, 24), None, None], torch.arange(1), mask[:1, :1], cache=cache)
    with pytest.raises(KVCacheError, match="inference-only"):
        stack([torch.randn(1, 1, 24), None, None], torch.arange(1), None, cache=cache)
    with pytest.raises(KVCacheError, match=r"truncate: expected 0\.\.3"):
        cache.truncate(5)
    with pytest.raises(KVCacheError, match=r"layer: expected 0\.\.1, got 2"):
        cache.kv(2)
    with pytest.raises(KVCacheError, match="capacity: expected a positive int"):
        KVCache(1, 1, 1, 0, 8)


def test_truncate_lets_a_new_foresight_reuse_the_prefix() -> None:
    cfg = tiny_config()
    stack = random_stack(cfg)
    layout = uga_layout(prefix=3, scales=(1, 2), actions=0, state=0)
    u, g, _ = expert_inputs(layout, cfg, batch=1)
    cache = stack.new_cache(1, layout.n)
    with torch.no_grad():
        mask, pos = step_inputs(layout, queries=slice(0, 4))
        stack([u, g[:, :1], None], pos, mask, cache=cache)
        mask, pos = step_inputs(layout, queries=slice(4, 8))
        first = stack([None, g[:, 1:], None], pos, mask, cache=cache)[1]
        cache.truncate(4)
        again = stack([None, g[:, 1:], None], pos, mask, cache=cache)[1]
        assert cache.length == 8
        cache.truncate(4)
        other = stack([None, g[:, 1:] + 1, None], pos, mask, cache=cache)[1]
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)  # counter-case: other scale inputs, other outputs


def test_a_read_only_step_can_be_differentiated_without_touching_the_cache() -> None:
    """Real-time chunking's vector-Jacobian product: a read-only action step with autograd on
    equals the no-grad step, gives input gradients, and writes nothing into the cache."""
    cfg = tiny_config()
    stack = random_stack(cfg, 0)
    layout = uga_layout(prefix=5, history=2, scales=(1, 2), state=1, actions=3)
    u, g, a = expert_inputs(layout, cfg, 2)
    with torch.no_grad():
        outs, cache = _incremental(stack, layout, u, g, None, [a])
    before = (cache.k.clone(), cache.v.clone(), cache.length)
    mask, pos = step_inputs(layout, None, queries=layout.expert_slice("action"))
    x = a.clone().requires_grad_(True)
    out = stack([None, None, x], pos, mask, cache=cache, update_cache=False)[2]
    torch.testing.assert_close(out, outs["action"][0], rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert grad.abs().sum() > 0
    assert torch.equal(cache.k, before[0]) and torch.equal(cache.v, before[1])
    assert cache.length == before[2]
    with pytest.raises(KVCacheError, match="inference-only"):  # keeping a graph is refused
        stack([None, None, x], pos, mask, cache=cache)
    with torch.no_grad():  # and the refusal left the cache usable
        again = stack([None, None, a], pos, mask, cache=cache, update_cache=False)[2]
    torch.testing.assert_close(again, outs["action"][0], rtol=0, atol=0)
