"""Adaptive RMSNorm experts (pi0.5's adaRMS) in the MoT: the formula, their exact equivalence to
plain experts where one exists, the gate, the cache, the UGA leak rule, and the named errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention import ACTION, GENERATION, UNDERSTANDING, uga_layout
from mot import AdaptiveRMSNorm, ExpertSpec, MoTConfig, MoTConfigError, MoTStack, step_inputs
from tests.mot.helpers import expert_inputs, random_stack

A_WIDTH = 12


def config(action_norm: str = "adaptive") -> MoTConfig:
    return MoTConfig(
        experts=(
            ExpertSpec(UNDERSTANDING, 24, 48, "geglu"),
            ExpertSpec(GENERATION, 16, 40, "swiglu"),
            ExpertSpec(ACTION, A_WIDTH, 20, "geglu", norm=action_norm),
        ),
        depth=2,
        heads=4,
        kv_heads=2,
        head_dim=8,
    )


def adaptive_twin(plain: MoTStack, seed: int = 5) -> MoTStack:
    """An adaptive-A stack with every other weight copied from ``plain``; its dense layers random
    (so scale, shift and gate all depend on the conditioning vector)."""
    stack = MoTStack(config())
    own = stack.state_dict()
    copied = {k: v for k, v in plain.state_dict().items() if k in own}
    g = torch.Generator().manual_seed(seed)
    for key, value in own.items():
        if ".dense." in key:
            copied[key] = 0.3 * torch.randn(value.shape, generator=g)
    stack.load_state_dict(copied, strict=True)
    return stack


def sample(batch: int = 2, seed: int = 1):
    layout = uga_layout(prefix=4, history=1, scales=(1, 2), state=1, actions=3)
    mask, positions = step_inputs(layout)
    xs = expert_inputs(layout, config(), batch, seed=seed)
    cond = torch.randn(batch, A_WIDTH, generator=torch.Generator().manual_seed(seed + 10))
    return layout, mask, positions, xs, cond


def test_norm_formula_with_scale_shift_and_gate() -> None:
    norm = AdaptiveRMSNorm(8, 6, eps=1e-6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.dense.weight.copy_(torch.randn(24, 6, generator=g))
        norm.dense.bias.copy_(torch.randn(24, generator=g))
    x, cond = torch.randn(3, 5, 8, generator=g), torch.randn(3, 6, generator=g)
    y, gate = norm(x, cond)
    mod = cond @ norm.dense.weight.T + norm.dense.bias
    scale, shift, expected_gate = mod[:, None, :8], mod[:, None, 8:16], mod[:, None, 16:]
    normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(y, normed * (1 + scale) + shift, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gate, expected_gate)
    # bf16 inputs: computed in float32, returned in bf16
    y16, gate16 = norm(x.bfloat16(), cond)
    assert y16.dtype == gate16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y, atol=3e-2, rtol=2e-2)


def test_fresh_adaptive_expert_computes_what_a_fresh_plain_one_does() -> None:
    """Init: dense weight 0, bias (scale 0, shift 0, gate 1): gain 1, ungated branches, for any
    conditioning vector; the state dicts differ only by the norms."""
    plain = random_stack(config("rms"), seed=0)
    with torch.no_grad():  # A's gains as a fresh plain expert has them
        for name, p in plain.named_parameters():
            if "norm" in name and ACTION in name:
                p.fill_(1.0)
    adaptive = MoTStack(config())
    own = adaptive.state_dict()
    adaptive.load_state_dict({**own, **{k: v for k, v in plain.state_dict().items() if k in own}})
    _, mask, positions, xs, cond = sample()
    with torch.no_grad():
        for a, p in zip(
            plain(xs, positions, mask),
            adaptive(xs, positions, mask, conds={ACTION: cond}),
            strict=True,
        ):
            assert torch.equal(a, p)
    only_plain = set(plain.state_dict()) - set(adaptive.state_dict())
    assert all("norm" in k and k.endswith(".weight") for k in only_plain)


def test_constant_scale_unit_gate_equals_a_plain_expert_with_gain_one_plus_scale() -> None:
    """dense weight 0, bias = (s, 0, 1): exactly a plain RMSNorm of gain 1 + s; a gate other than
    1 (counter-case) or a shift changes the output."""
    plain = random_stack(config("rms"), seed=2)
    adaptive = adaptive_twin(plain)
    w = A_WIDTH
    with torch.no_grad():
        for name, module in adaptive.named_modules():
            if isinstance(module, AdaptiveRMSNorm):
                plain_norm = plain.get_submodule(name)
                module.dense.weight.zero_()
                module.dense.bias[:w] = plain_norm.weight - 1
                module.dense.bias[w:] = torch.tensor([0.0, 1.0]).repeat_interleave(w)
    _, mask, positions, xs, cond = sample()
    with torch.no_grad():
        expected = plain(xs, positions, mask)
        got = adaptive(xs, positions, mask, conds={ACTION: cond})
        for e, o in zip(expected, got, strict=True):
            torch.testing.assert_close(o, e, atol=1e-6, rtol=1e-6)
        gate = adaptive.layers[0].experts[ACTION].mlp_norm.dense.bias
        gate[2 * w :] = 0.5
        halved = adaptive(xs, positions, mask, conds={ACTION: cond})[2]
        assert (halved - expected[2]).abs().max() > 1e-2
        gate[2 * w :] = 1.0
        adaptive.final_norms[ACTION].dense.bias[w : 2 * w] = 0.25
        shifted = adaptive(xs, positions, mask, conds={ACTION: cond})[2]
        torch.testing.assert_close(shifted, expected[2] + 0.25, atol=1e-6, rtol=1e-6)


def test_conditioning_reaches_the_adaptive_expert_only() -> None:
    """A new cond changes every A output and no U or G output (bit-identical); a zero gate on
    both branches of every layer leaves A's residual stream at its input."""
    adaptive = adaptive_twin(random_stack(config("rms"), seed=3))
    _, mask, positions, xs, cond = sample()
    with torch.no_grad():
        before = adaptive(xs, positions, mask, conds={ACTION: cond})
        after = adaptive(xs, positions, mask, conds={ACTION: cond + 1})
        assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
        assert ((before[2] - after[2]).abs().amax(-1) > 1e-3).all()
        for layer in adaptive.layers:
            block = layer.experts[ACTION]
            for norm in (block.attn_norm, block.mlp_norm):
                norm.dense.weight[2 * A_WIDTH :] = 0
                norm.dense.bias[2 * A_WIDTH :] = 0
        final = adaptive.final_norms[ACTION]
        out = adaptive(xs, positions, mask, conds={ACTION: cond})[2]
        expected, _ = final(xs[2], cond)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 50), batch=st.integers(1, 2))
def test_later_stage_perturbation_leaves_earlier_outputs_bit_identical(seed: int, batch: int):
    """The UGA leak rule holds with adaptive A: perturbing A's tokens or cond moves no U / G row."""
    adaptive = adaptive_twin(random_stack(config("rms"), seed=seed), seed=seed)
    _, mask, positions, xs, cond = sample(batch, seed)
    perturbed = [x.clone() for x in xs]
    perturbed[2] += torch.randn(perturbed[2].shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        before = adaptive(xs, positions, mask, conds={ACTION: cond})
        after = adaptive(perturbed, positions, mask, conds={ACTION: 2 * cond})
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.equal(before[2], after[2])


def test_cached_action_steps_equal_the_uncached_pass() -> None:
    """Prefix + G into the cache, then the A rows alone with their cond (read-only, twice with
    different conds): the same outputs as the uncached joint pass."""
    adaptive = adaptive_twin(random_stack(config("rms"), seed=4))
    layout, mask, positions, xs, cond = sample()
    split = layout.slice("state").start
    with torch.no_grad():
        cache = adaptive.new_cache(2, layout.n)
        adaptive([xs[0], xs[1], None], positions[:split], mask[:split, :split], cache=cache)
        for c in (cond, -cond):
            full = adaptive(xs, positions, mask, conds={ACTION: c})[2]
            step = adaptive(
                [None, None, xs[2]], positions[split:], mask[split:], cache=cache,
                update_cache=False, conds={ACTION: c},
            )[2]  # fmt: skip
            torch.testing.assert_close(step, full, atol=1e-6, rtol=1e-6)


def test_bad_conditioning_is_named() -> None:
    adaptive = MoTStack(config())
    _, mask, positions, xs, cond = sample()
    with pytest.raises(
        ValueError, match=r"expert 'action' has adaptive norms .* conds\['action'\]"
    ):
        adaptive(xs, positions, mask)
    with pytest.raises(ValueError, match=r"\['understanding'\] have plain norms"):
        adaptive(xs, positions, mask, conds={ACTION: cond, UNDERSTANDING: torch.zeros(2, 24)})
    with pytest.raises(ValueError, match=r"\['vision'\] are not in this stack"):
        adaptive(xs, positions, mask, conds={ACTION: cond, "vision": cond})
    with pytest.raises(ValueError, match=r"cond: expected \[2, 12\]"):
        adaptive(xs, positions, mask, conds={ACTION: cond[:, :5]})
    # an adaptive expert without tokens in the call needs no cond (the prefix pass)
    n_u, n_g = xs[0].shape[1], xs[1].shape[1]
    adaptive([xs[0], xs[1], None], positions[: n_u + n_g], mask[: n_u + n_g, : n_u + n_g])
    with pytest.raises(MoTConfigError, match=r"expert 'a' norm: expected one of \('rms', "):
        ExpertSpec("a", 8, 16, norm="ada")
