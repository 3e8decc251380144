"""The MoT layer and stack against an independent dense transformer, across backends, and with
experts that have no tokens."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from x_transformers import Encoder

from attention import uga_layout
from mot import ExpertSpec, MoTConfig, MoTLayer, MoTStack, rope_angles, step_inputs
from tests.mot.helpers import expert_inputs, random_stack, small_uga_layouts, tiny_config


def _dense_reference(stack: MoTStack, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """An ordinary pre-norm GQA transformer in plain torch ops, reading the stack's weights.

    Written independently of mot: RMSNorm by its formula, RoPE as a complex rotation of
    (x_i, x_{i+e/2}), KV heads repeated for their query groups, softmax over -inf-masked scores.
    """
    cfg = stack.config
    (name,) = cfg.expert_names
    h, g, e, eps = cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.norm_eps
    b, n, _ = x.shape
    theta = cfg.rope_base ** (-torch.arange(0, e, 2, dtype=torch.float64) / e)
    rotation = torch.polar(
        torch.ones(n, e // 2, dtype=torch.float64), torch.arange(n)[:, None] * theta
    )

    def rms(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(t: torch.Tensor) -> torch.Tensor:
        z = torch.complex(t[..., : e // 2].double(), t[..., e // 2 :].double()) * rotation
        return torch.cat((z.real, z.imag), -1).float()

    for layer in stack.layers:
        p = layer.experts[name]
        wq, wk, wv = p.qkv_weights()
        a = rms(x, p.attn_norm.weight)
        q = rope((a @ wq.T).view(b, n, h, e).transpose(1, 2))
        k = rope((a @ wk.T).view(b, n, g, e).transpose(1, 2))
        v = (a @ wv.T).view(b, n, g, e).transpose(1, 2)
        k, v = k.repeat_interleave(h // g, dim=1), v.repeat_interleave(h // g, dim=1)
        scores = (q @ k.transpose(-1, -2)) / e**0.5
        attn = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + attn.transpose(1, 2).reshape(b, n, h * e) @ p.o.weight.T
        m = rms(x, p.mlp_norm.weight)
        gated = F.gelu(m @ p.mlp.gate.weight.T, approximate="tanh") * (m @ p.mlp.up.weight.T)
        x = x + gated @ p.mlp.down.weight.T
    return rms(x, stack.final_norms[name].weight)


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("causal", [True, False])
def test_single_expert_equals_dense_prenorm_transformer(heads: int, kv_heads: int, causal: bool):
    cfg = MoTConfig((ExpertSpec("solo", 32, 64, "geglu"),), 3, heads, kv_heads, head_dim=8)
    stack = random_stack(cfg, seed=heads + kv_heads)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(7, 7, dtype=torch.bool)
    mask = torch.tril(mask) if causal else mask
    (out,) = stack([x], torch.arange(7), mask)
    expected = _dense_reference(stack, x, mask)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
    # The layers do work: the output is far from the normalised input.
    assert not torch.allclose(out, x / x.pow(2).mean(-1, keepdim=True).sqrt(), atol=1e-1)


def _xtransformers_encoder(stack: MoTStack) -> Encoder:
    """An x-transformers Encoder carrying the single-expert stack's weights, converted for its
    conventions: norm gains stored as gain - 1 (unit offset), interleaved RoPE pairs (2j, 2j+1)
    instead of (j, j + e/2), KV heads shared by query heads j % g instead of j // (h / g), and
    the GLU's fused [up, gate] projection with a zero bias."""
    cfg = stack.config
    (spec,) = cfg.experts
    h, g, e, d = cfg.heads, cfg.kv_heads, cfg.head_dim, spec.width
    encoder = Encoder(
        dim=d,
        depth=cfg.depth,
        heads=h,
        attn_dim_head=e,
        attn_kv_heads=g,
        ff_glu=True,
        ff_mult=spec.mlp_width / d,
        ff_no_bias=True,
        ff_custom_activation=torch.nn.GELU(approximate="tanh"),
        rotary_pos_emb=True,
        rotary_emb_dim=e,
        use_rmsnorm=True,
    )
    pairs = torch.stack((torch.arange(e // 2), torch.arange(e // 2) + e // 2), -1).reshape(e)
    r = h // g
    head_order = torch.tensor([kv * r + ri for ri in range(r) for kv in range(g)])

    def interleave(w: torch.Tensor, heads: int) -> torch.Tensor:
        return w.view(heads, e, d)[:, pairs]

    state = {"rotary_pos_emb.inv_freq": encoder.rotary_pos_emb.inv_freq}
    for i, layer in enumerate(stack.layers):
        p, a, f = layer.experts[spec.name], f"layers.{2 * i}", f"layers.{2 * i + 1}"
        wq, wk, wv = p.qkv_weights()
        state[f"{a}.0.0.g"] = p.attn_norm.weight - 1
        state[f"{a}.1.to_q.weight"] = interleave(wq, h)[head_order].reshape(h * e, d)
        state[f"{a}.1.to_k.weight"] = interleave(wk, g).reshape(g * e, d)
        state[f"{a}.1.to_v.weight"] = wv
        state[f"{a}.1.to_out.weight"] = p.o.weight.view(d, h, e)[:, head_order].reshape(d, h * e)
        state[f"{f}.0.0.g"] = p.mlp_norm.weight - 1
        state[f"{f}.1.ff.0.proj.weight"] = torch.cat((p.mlp.up.weight, p.mlp.gate.weight))
        state[f"{f}.1.ff.0.proj.bias"] = torch.zeros(2 * spec.mlp_width)
        state[f"{f}.1.ff.2.weight"] = p.mlp.down.weight
    state["final_norm.g"] = stack.final_norms[spec.name].weight - 1
    encoder.load_state_dict(state, strict=True)
    return encoder


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (4, 1)])
def test_single_expert_equals_xtransformers_encoder_with_copied_weights(heads, kv_heads) -> None:
    cfg = MoTConfig((ExpertSpec("solo", 32, 48, "geglu"),), 2, heads, kv_heads, head_dim=8)
    stack = random_stack(cfg, seed=kv_heads)
    encoder = _xtransformers_encoder(stack)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    mask = torch.tril(torch.ones(7, 7, dtype=torch.bool))
    with torch.no_grad():
        (out,) = stack([x], torch.arange(7), mask)
        expected = encoder(x, attn_mask=mask)
        # x-transformers' RMSNorm has no eps inside the root: differences of ~1e-6 remain.
        torch.testing.assert_close(out, expected, atol=5e-5, rtol=5e-5)
        # Counter-case: the same encoder without the causal mask disagrees: the test can fail.
        assert not torch.allclose(out, encoder(x), atol=1e-3)


def test_dense_reference_detects_a_wrong_rope_convention() -> None:
    """Counter-case: the same comparison fails when the stack's q/k halves are swapped."""
    cfg = MoTConfig((ExpertSpec("solo", 16, 32),), 1, 2, 1, head_dim=8)
    stack = random_stack(cfg, seed=3)
    x = torch.randn(1, 6, 16)
    mask = torch.ones(6, 6, dtype=torch.bool)
    expected = _dense_reference(stack, x, mask)
    with torch.no_grad():  # rotate pairs (i, i + e/2) the other way round: a different model
        w = stack.layers[0].experts["solo"].qkv_weights()[0].view(2, 2, 4, 16)
        w.copy_(w.flip(1))
    (out,) = stack([x], torch.arange(6), mask)
    assert not torch.allclose(out, expected, atol=1e-3)


def _padded(layout, batch: int) -> torch.Tensor:
    valid = torch.ones(batch, layout.n, dtype=torch.bool)
    valid[-1, -1] = layout.n == 1  # pad the last token of the last sample when there are others
    return valid


@given(layout=small_uga_layouts(), batch=st.integers(1, 2), seed=st.integers(0, 3))
def test_sdpa_backends_agree_with_eager(layout, batch: int, seed: int) -> None:
    cfg = tiny_config()
    stack = random_stack(cfg, seed)
    xs = expert_inputs(layout, cfg, batch, seed)
    mask, positions = step_inputs(layout, _padded(layout, batch))
    with torch.no_grad():
        reference = stack(xs, positions, mask, backend="eager")
        for backend in ("sdpa", "sdpa_bias"):
            outs = stack(xs, positions, mask, backend=backend)
            for out, ref in zip(outs, reference, strict=True):
                torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# Uncompiled FlexAttention on CPU is slow (and warns about it): a few fixed layouts only.
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(
    "layout",
    [
        uga_layout(prefix=3, history=2, scales=(1, 2), state=1, actions=3),
        uga_layout(prefix=2, scales=(1, 2, 3), state=0, actions=4, history_in_prefix=False),
        uga_layout(prefix=5),
    ],
)
def test_flex_backend_agrees_with_eager(layout) -> None:
    cfg = tiny_config()
    stack = random_stack(cfg, 1)
    xs = expert_inputs(layout, cfg, 2, 1)
    valid = _padded(layout, 2)
    mask, positions = step_inputs(layout, valid)
    with torch.no_grad():
        reference = stack(xs, positions, mask, backend="eager")
        outs = stack(xs, positions, mask, backend="flex", block_mask=layout.block_mask(valid))
        for out, ref in zip(outs, reference, strict=True):
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        # Without a precomputed BlockMask attend builds one from the dense mask: same result.
        outs = stack(xs, positions, mask, backend="flex")
        for out, ref in zip(outs, reference, strict=True):
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backends_agree_on_cuda(dtype: torch.dtype) -> None:
    """SDPA and FlexAttention (compiled by torch on CUDA) against eager, on the GPU."""
    layout = uga_layout(prefix=40, history=8, scales=(1, 2, 3, 4), state=1, actions=8)
    cfg = tiny_config()
    stack = random_stack(cfg, 0).to("cuda", dtype)
    xs = [x.to("cuda", dtype) for x in expert_inputs(layout, cfg, 2)]
    valid = _padded(layout, 2).cuda()
    mask, positions = step_inputs(layout, valid)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    with torch.no_grad():
        reference = stack(xs, positions, mask, backend="eager")
        for backend in ("sdpa", "sdpa_bias", "flex"):
            block_mask = layout.block_mask(valid) if backend == "flex" else None
            outs = stack(xs, positions, mask, backend=backend, block_mask=block_mask)
            for out, ref in zip(outs, reference, strict=True):
                torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


def test_bfloat16_stack_tracks_float32() -> None:
    """Dtypes come from the parameters/inputs: a bf16 stack runs and stays near the fp32 one."""
    cfg = tiny_config()
    stack = random_stack(cfg, 5)
    layout = uga_layout(prefix=4, history=1, scales=(1, 2), state=1, actions=2)
    xs = expert_inputs(layout, cfg, 1, 5)
    mask, positions = step_inputs(layout)
    with torch.no_grad():
        ref = stack(xs, positions, mask)
        outs = stack.to(torch.bfloat16)([x.bfloat16() for x in xs], positions, mask)
        cache = stack.new_cache(1, layout.n)
    assert cache.k.dtype == torch.bfloat16
    for out, r in zip(outs, ref, strict=True):
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), r, atol=0.1, rtol=0.05)


def test_expert_without_tokens_is_untouched() -> None:
    """Only the action expert runs: U and G pass through, get no gradients, and no NaN appears."""
    cfg = tiny_config()
    stack = random_stack(cfg)
    empty_u, empty_g = torch.zeros(2, 0, 24), None
    actions = torch.randn(2, 3, 12, requires_grad=True)
    u, g, a = stack([empty_u, empty_g, actions], torch.arange(3), None)
    assert u is empty_u and g is None
    assert torch.isfinite(a).all()
    a.square().sum().backward()
    for name in ("understanding", "generation"):
        assert all(p.grad is None for p in stack.expert_parameters(name))
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in stack.expert_parameters("action")
    )


def test_zero_token_expert_matches_a_stack_without_that_expert() -> None:
    """An empty G changes nothing for U and A: same as a config that has no G at all."""
    full = tiny_config()
    stack = random_stack(full)
    no_gen = MoTConfig(
        (full.experts[0], full.experts[2]), full.depth, full.heads, full.kv_heads, full.head_dim
    )
    small = MoTStack(no_gen)
    small.load_state_dict({k: v for k, v in stack.state_dict().items() if "generation" not in k})
    layout = uga_layout(prefix=3, state=1, actions=2)
    mask, positions = step_inputs(layout)
    u, a = torch.randn(1, 3, 24), torch.randn(1, 3, 12)
    with torch.no_grad():
        out_full = stack([u, torch.zeros(1, 0, 16), a], positions, mask)
        out_small = small([u, a], positions, mask)
    assert torch.equal(out_full[0], out_small[0]) and torch.equal(out_full[2], out_small[1])


@pytest.mark.parametrize(
    ("xs", "message"),
    [
        ([torch.zeros(1, 2, 24)], "one entry per expert"),
        (
            [torch.zeros(1, 2, 23), None, None],
            "inputs\\['understanding'\\]: expected \\[b, n, 24\\]",
        ),
        ([torch.zeros(1, 2, 24), torch.zeros(2, 1, 16), None], "batch 2 differs"),
        ([None, torch.zeros(1, 0, 16), None], "every expert .* is empty"),
    ],
)
def test_bad_inputs_are_named(xs: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        random_stack(tiny_config())(xs, torch.arange(2), None)


def test_bad_mask_and_positions_are_named() -> None:
    stack = random_stack(tiny_config())
    xs = [torch.zeros(1, 2, 24), None, torch.zeros(1, 1, 12)]
    with pytest.raises(ValueError, match="mask: expected \\[3, 3\\]"):
        stack(xs, torch.arange(3), torch.ones(3, 4, dtype=torch.bool))
    # ValueError without the test-suite's jaxtyping hook; the hook's TypeError fires first here.
    with pytest.raises((ValueError, TypeError), match="mask"):
        stack(xs, torch.arange(3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="positions: expected 3 entries"):
        stack(xs, torch.arange(4), None)


def test_layer_runs_standalone_with_precomputed_angles() -> None:
    cfg = tiny_config(depth=1)
    layer = MoTLayer(cfg)
    cos, sin = rope_angles(torch.arange(4), cfg.head_dim)
    u, g, a = layer(
        [torch.randn(1, 2, 24), torch.randn(1, 1, 16), torch.randn(1, 1, 12)], cos, sin, None
    )
    assert (u.shape, g.shape, a.shape) == ((1, 2, 24), (1, 1, 16), (1, 1, 12))
    with pytest.raises(ValueError, match="cos/sin: expected"):
        layer([torch.randn(1, 2, 24), None, None], cos, sin, None)
