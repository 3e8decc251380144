"""The kernel forms of one mask (bool, additive bias, FlexAttention) and the attend() backends."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from torch.nn.attention.flex_attention import create_mask

from attention import BACKENDS, attend, mask_to_bias, uga_layout
from tests.attention.test_uga import uga_cases


def qkv(b: int, h: int, g: int, n: int, e: int, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, e, generator=gen, dtype=dtype)
    k = torch.randn(b, g, n, e, generator=gen, dtype=dtype)
    v = torch.randn(b, g, n, e, generator=gen, dtype=dtype)
    return q, k, v


@given(uga_cases())
def test_bool_bias_and_flex_forms_are_the_same_mask(case) -> None:
    layout, _, _, valid = case
    mask = layout.mask(valid)
    bias = layout.bias(valid, dtype=torch.bfloat16)
    assert torch.equal(bias == 0, mask)
    assert (bias[~mask] == torch.finfo(torch.bfloat16).min).all()
    dense = create_mask(layout.mask_mod(valid), valid.shape[0], 1, layout.n, layout.n, "cpu")
    assert torch.equal(dense[:, 0], mask)
    dense_unpadded = create_mask(layout.mask_mod(), None, None, layout.n, layout.n, "cpu")
    assert torch.equal(dense_unpadded[0, 0], layout.mask())


DENSE_BACKENDS = [name for name in BACKENDS if name != "flex"]


@given(uga_cases(), st.sampled_from([(1, 1), (2, 1), (4, 2)]))
def test_backends_agree_and_padded_rows_are_zero(case, heads) -> None:
    layout, _, _, valid = case
    h, g = heads
    q, k, v = qkv(valid.shape[0], h, g, layout.n, 8)
    mask = layout.mask(valid)
    outs = {name: attend(q, k, v, mask, backend=name) for name in DENSE_BACKENDS}
    for name, out in outs.items():
        assert torch.isfinite(out).all(), name
        torch.testing.assert_close(out, outs["eager"], atol=2e-6, rtol=1e-5, msg=name)
        # fully padded query rows return exactly zero
        assert (out.transpose(1, 2)[~valid] == 0).all(), name


# Un-compiled FlexAttention costs ~0.1 s a call on CPU (more on each new shape), so its outputs
# are checked on fixed layouts; its mask_mod is checked against the mask over random layouts above.
@pytest.mark.parametrize(
    "counts",
    [
        {"prefix": 3, "history": 2, "scales": (1, 2, 3), "state": 1, "actions": 4},
        {"prefix": 5, "scales": (), "state": 1, "actions": 3},
        {"prefix": 2, "history": 1, "scales": (1, 2), "state": 0, "actions": 0},
    ],
)
def test_flex_backend_agrees_with_eager(counts: dict) -> None:
    layout = uga_layout(**counts)
    valid = torch.ones(2, layout.n, dtype=torch.bool)
    valid[1, 1] = valid[1, -1] = False
    q, k, v = qkv(2, 4, 2, layout.n, 8, seed=5)
    mask = layout.mask(valid)
    expected = attend(q, k, v, mask, backend="eager")
    from_mask = attend(q, k, v, mask, backend="flex")
    torch.testing.assert_close(from_mask, expected, atol=2e-6, rtol=1e-5)
    from_layout = attend(q, k, v, None, backend="flex", block_mask=layout.block_mask(valid))
    rows = valid.unsqueeze(1).expand(-1, 4, -1)
    torch.testing.assert_close(from_layout[rows], expected[rows], atol=2e-6, rtol=1e-5)


def test_attend_matches_a_hand_written_softmax_with_grouped_heads() -> None:
    layout = uga_layout(3, history=1, scales=(1, 2), state=1, actions=2)
    q, k, v = qkv(2, 4, 2, layout.n, 8, seed=3)
    mask = layout.mask()
    k_full = k.repeat_interleave(2, dim=1)  # query head j reads KV head j // 2
    v_full = v.repeat_interleave(2, dim=1)
    scores = (q @ k_full.transpose(-1, -2)) / 8**0.5
    expected = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v_full
    for name in BACKENDS:
        torch.testing.assert_close(attend(q, k, v, mask[None], backend=name), expected)
    unmasked = scores.softmax(-1) @ v_full
    torch.testing.assert_close(attend(q, k, v, None, backend="sdpa"), unmasked)


GRAD_BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name == "flex" and not torch.cuda.is_available(),
            reason="FlexAttention has no CPU backward in torch",
        ),
    )
    for name in BACKENDS
]


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_fully_padded_rows_give_finite_gradients(backend: str) -> None:
    layout = uga_layout(2, scales=(1, 2), state=1, actions=2)
    valid = torch.ones(2, layout.n, dtype=torch.bool)
    valid[1, :] = False  # a completely padded sample
    valid[0, -1] = False
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, 1, layout.n, 4, seed=1))
    out = attend(q, k, v, layout.mask(valid), backend=backend)
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[1] == 0).all() and (out[1] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_later_stage_inputs_cannot_reach_earlier_outputs(backend: str) -> None:
    layout = uga_layout(4, history=2, scales=(1, 2, 3), state=1, actions=3)
    q, k, v = qkv(1, 2, 1, layout.n, 8, seed=2)
    later = slice(layout.slice("foresight").start + 5, layout.n)  # scale 3 onwards
    earlier = slice(0, later.start)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, later] += 3.0
    v2[:, :, later] -= 2.0
    mask = layout.mask()[None]
    base = attend(q, k, v, mask, backend=backend)
    moved = attend(q, k2, v2, mask, backend=backend)
    assert torch.equal(base[:, :, earlier], moved[:, :, earlier])
    assert not torch.allclose(base[:, :, later], moved[:, :, later])
    # the counter-case: without the mask the perturbation leaks into every row
    free = attend(q, k, v, None, backend=backend)
    free_moved = attend(q, k2, v2, None, backend=backend)
    assert not torch.allclose(free[:, :, earlier], free_moved[:, :, earlier])


def test_bad_arguments_are_named() -> None:
    q, k, v = qkv(1, 3, 2, 4, 8)
    with pytest.raises(ValueError, match=r"query heads \(3\) must be a multiple of KV heads \(2\)"):
        attend(q, k, v, None)
    q, k, v = qkv(1, 2, 1, 4, 8)
    # the runtime checker (tests) or attend's own check (production) names the argument
    with pytest.raises((ValueError, TypeCheckError), match="backend"):
        attend(q, k, v, None, backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating dtype"):
        mask_to_bias(torch.ones(2, 2, dtype=torch.bool), torch.int32)


@pytest.mark.cuda
def test_compiled_flex_matches_sdpa_on_cuda() -> None:
    layout = uga_layout(40, history=24, scales=(1, 2, 3, 4), state=1, actions=10)
    valid = torch.ones(2, layout.n, dtype=torch.bool, device="cuda")
    valid[1, 30:40] = False
    q, k, v = (t.cuda() for t in qkv(2, 8, 1, layout.n, 64, dtype=torch.float32))
    block_mask = layout.block_mask(valid)
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention)
    out = compiled(q, k, v, block_mask=block_mask, enable_gqa=True)
    ref = attend(q, k, v, layout.mask(valid), backend="sdpa")
    rows = valid.unsqueeze(1).expand(-1, 8, -1)
    torch.testing.assert_close(out[rows], ref[rows], atol=2e-3, rtol=2e-3)
    assert torch.equal(
        create_mask(layout.mask_mod(valid), 2, 1, layout.n, layout.n, "cuda")[:, 0],
        layout.mask(valid),
    )
