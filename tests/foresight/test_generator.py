"""NextScaleGenerator: config checks, block causality, teacher forcing, loss, sampling, cache."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight.generator import NextScaleConfig, NextScaleGenerator
from tests.foresight.generator_helpers import QuantizerTokenizer, tiny_generator


@st.composite
def schedules(draw, max_scales: int = 4, max_side: int = 5) -> tuple[int, ...]:
    """Scale schedules starting at the 1x1 SOS scale, strictly increasing, tiny."""
    rest = draw(st.sets(st.integers(2, max_side), max_size=max_scales - 1))
    return (1, *sorted(rest))


def inputs_for(tok: QuantizerTokenizer, pyramid: list[torch.Tensor], k: int) -> torch.Tensor:
    """Teacher-forcing inputs of scales 2..k (float64)."""
    if k == 1:
        return torch.zeros(pyramid[0].shape[0], 0, tok.quantizer.dim, dtype=torch.float64)
    return tok.teacher_forcing_inputs(pyramid[: k - 1]).double()


class WithoutMask(torch.nn.Module):
    """The same network with the mask dropped: full attention, the counter-case of causality."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens, mask, positions, cache=None):
        return self.net(tokens, None, positions, cache)

    def new_cache(self, batch, capacity, *, device=None, dtype=None):
        return self.net.new_cache(batch, capacity, device=device, dtype=dtype)


# ---- configuration and input errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"scales": (2, 3)}, "scales"),
        ({"scales": (1, 3, 3)}, "scales"),
        ({"scales": ()}, "scales"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"width": -4}, "width"),
        ({"cond_drop_prob": 1.0}, "cond_drop_prob"),
    ],
)
def test_config_rejects_bad_fields(overrides: dict, field: str) -> None:
    base = {"scales": (1, 2), "vocab_size": 8, "latent_dim": 4, "width": 16}
    with pytest.raises(ValueError, match=field):
        NextScaleConfig(**{**base, **overrides})


def test_generator_rejects_wrong_network_and_inputs() -> None:
    gen = tiny_generator((1, 2, 3))
    cfg = gen.config
    with pytest.raises(TypeError, match="network"):
        NextScaleGenerator(cfg, torch.nn.Linear(16, 16))
    with pytest.raises(ValueError, match="network width"):
        NextScaleGenerator(NextScaleConfig((1, 2), 8, 4, width=32), gen.network)
    ctx = torch.randn(2, 3, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="inputs: 5 tokens match no prefix"):
        gen(ctx, torch.randn(2, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="context"):
        gen(torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="context_valid: every sample"):
        gen(ctx, torch.randn(2, 4, 4, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool))
    targets = [torch.zeros(2, 1, dtype=torch.long), torch.full((2, 4), 16)]
    with pytest.raises(ValueError, match=r"targets\[1\]: expected codes in \[0, 16\)"):
        gen.loss(ctx, torch.randn(2, 4, 4, dtype=torch.float64), targets)
    targets[1] = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected the inputs of scales 2\.\.2"):
        gen.loss(ctx, torch.randn(2, 13, 4, dtype=torch.float64), targets)
    with pytest.raises(ValueError, match="scale_weights"):
        gen.loss(
            ctx,
            torch.randn(2, 4, 4, dtype=torch.float64),
            targets,
            scale_weights=torch.tensor([1.0, -1.0]),
        )
    with pytest.raises(ValueError, match="num_scales"):
        gen.generate(ctx, QuantizerTokenizer((1, 2, 3), 16, 4, 0), num_scales=4)
    with pytest.raises(ValueError, match="tokenizer scales"):
        gen.generate(ctx, QuantizerTokenizer((1, 2, 4), 16, 4, 0))
    with pytest.raises(TypeError, match="tokenizer"):
        gen.generate(ctx, object())
    with pytest.raises(ValueError, match="top_p"):
        gen.generate(ctx, QuantizerTokenizer((1, 2, 3), 16, 4, 0), top_p=0.0)


# ---- block causality ------------------------------------------------------------------------


@settings(max_examples=60)  # each example builds a generator and a quantizer
@given(scales=schedules(), n_ctx=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_logits_of_a_scale_ignore_later_scales_inputs(scales, n_ctx, seed) -> None:
    """Perturbing the inputs of scales > s leaves the logits of scales <= s bit-identical;
    without the mask the same perturbation reaches them (the test can fail)."""
    gen = tiny_generator(scales, seed=seed % 7)
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(2, n_ctx, 16, generator=g, dtype=torch.float64)
    n_in = gen.tokens_upto(len(scales)) - 1
    inputs = torch.randn(2, n_in, 4, generator=g, dtype=torch.float64)
    logits = gen(ctx, inputs)
    for s in range(1, len(scales)):  # scales 1..s fixed, scales s+1.. perturbed
        keep = gen.tokens_upto(s)  # logits of scales 1..s
        perturbed = inputs.clone()
        perturbed[:, keep - 1 :] += torch.randn(2, n_in - keep + 1, 4, generator=g).double()
        assert torch.equal(gen(ctx, perturbed)[:, :keep], logits[:, :keep])
        assert not torch.equal(gen(ctx, perturbed)[:, keep:], logits[:, keep:])

    if len(scales) > 1:
        leaky = NextScaleGenerator(gen.config, WithoutMask(gen.network)).double()
        own = {k: v for k, v in gen.state_dict().items() if not k.startswith("network.")}
        leaky.load_state_dict(own, strict=False)  # the network itself is shared
        perturbed = inputs.clone()
        perturbed[:, -1] += 1.0
        base = leaky(ctx, inputs)
        assert not torch.allclose(leaky(ctx, perturbed)[:, :1], base[:, :1])


def test_padded_context_tokens_are_invisible() -> None:
    """Changing a padded context token changes nothing; changing a valid one does."""
    gen = tiny_generator((1, 2, 3))
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(2, 3, 16, generator=g, dtype=torch.float64)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    inputs = torch.randn(2, 13, 4, generator=g, dtype=torch.float64)
    base = gen(ctx, inputs, valid)
    moved = ctx.clone()
    moved[0, 2] += 5.0
    moved[1, 1:] -= 3.0
    assert torch.equal(gen(moved, inputs, valid), base)
    moved[0, 0] += 1.0
    assert not torch.allclose(gen(moved, inputs, valid)[0], base[0])


# ---- teacher forcing and loss --------------------------------------------------------------


def test_loss_is_cross_entropy_of_the_logits_with_scale_weights() -> None:
    scales = (1, 2, 3)
    gen = tiny_generator(scales)
    tok = QuantizerTokenizer(scales, 16, 4, seed=1)
    g = torch.Generator().manual_seed(1)
    pyramid = tok.random_pyramid(3, g)
    ctx = torch.randn(3, 2, 16, generator=g, dtype=torch.float64)
    inputs = inputs_for(tok, pyramid, 3)
    logits = gen(ctx, inputs)
    target = torch.cat(pyramid, 1)
    out = gen.loss(ctx, inputs, pyramid)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits.flatten(0, 1), target.flatten()))
    for k, (a, b) in enumerate(zip(logits.split((1, 4, 9), 1), pyramid, strict=True)):
        torch.testing.assert_close(out.per_scale[k], F.cross_entropy(a.flatten(0, 1), b.flatten()))
        assert float(out.accuracy[k]) == pytest.approx(float((a.argmax(-1) == b).double().mean()))
    weighted = gen.loss(ctx, inputs, pyramid, scale_weights=torch.tensor([0.0, 2.0, 0.0]))
    torch.testing.assert_close(weighted.loss, out.per_scale[1])
    # The first K scales only: the loss of K = 2 is the CE over the first 5 tokens.
    first2 = gen.loss(ctx, inputs_for(tok, pyramid, 2), pyramid[:2])
    torch.testing.assert_close(
        first2.loss, F.cross_entropy(logits[:, :5].flatten(0, 1), target[:, :5].flatten())
    )
    out.loss.backward()
    assert gen.input_proj.weight.grad.abs().sum() > 0 and gen.sos.grad.abs().sum() > 0


def test_first_k_scales_teacher_forcing_is_a_prefix_of_all_scales() -> None:
    scales = (1, 2, 3, 4)
    gen, tok = tiny_generator(scales), QuantizerTokenizer(scales, 16, 4, seed=2)
    pyramid = tok.random_pyramid(2, torch.Generator().manual_seed(2))
    ctx = torch.randn(2, 1, 16, dtype=torch.float64)
    full = gen(ctx, inputs_for(tok, pyramid, 4))
    for k in (1, 2, 3):
        part = gen(ctx, inputs_for(tok, pyramid, k))
        assert part.shape[1] == gen.tokens_upto(k)
        torch.testing.assert_close(part, full[:, : gen.tokens_upto(k)], rtol=1e-12, atol=1e-12)


def test_condition_dropout_replaces_context_by_the_null_context() -> None:
    scales = (1, 2)
    gen = tiny_generator(scales, cond_drop_prob=0.5)
    tok = QuantizerTokenizer(scales, 16, 4, seed=3)
    g = torch.Generator().manual_seed(3)
    pyramid = tok.random_pyramid(8, g)
    ctx = torch.randn(8, 2, 16, generator=g, dtype=torch.float64)
    inputs = inputs_for(tok, pyramid, 2)
    gen.train()
    dropped = gen.loss(ctx, inputs, pyramid, generator=torch.Generator().manual_seed(9))
    drop = torch.rand(8, 1, 1, generator=torch.Generator().manual_seed(9)) < 0.5
    assert 0 < int(drop.sum()) < 8  # both kinds of sample are present
    gen.eval()
    expected = gen.loss(ctx.where(~drop, gen.null_context_like(ctx)), inputs, pyramid)
    torch.testing.assert_close(dropped.loss, expected.loss)
    assert not torch.allclose(gen.loss(ctx, inputs, pyramid).loss, expected.loss)


# ---- generation ------------------------------------------------------------------------------


@settings(max_examples=40)  # each example samples twice through a transformer per scale
@given(
    scales=schedules(),
    seed=st.integers(0, 2**16),
    cfg_scale=st.sampled_from([1.0, 0.0, 2.5]),
    padded=st.booleans(),
    top_k=st.sampled_from([None, 1, 5]),
    top_p=st.sampled_from([None, 0.6]),
)
def test_cached_generation_equals_full_sequence_generation(
    scales, seed, cfg_scale, padded, top_k, top_p
) -> None:
    gen = tiny_generator(scales, seed=seed % 5, cond_drop_prob=0.1)
    tok = QuantizerTokenizer(scales, 16, 4, seed=seed % 3)
    ctx = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(seed)).double()
    valid = torch.tensor([[True, False], [True, True], [False, True]]) if padded else None
    kwargs = dict(context_valid=valid, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p)
    cached = gen.generate(ctx, tok, generator=seed, **kwargs)
    full = gen.generate(ctx, tok, generator=seed, use_cache=False, **kwargs)
    assert [t.shape[1] for t in cached.tokens] == [s * s for s in scales]
    for a, b in zip(cached.tokens, full.tokens, strict=True):
        assert torch.equal(a, b)


def test_greedy_generation_is_the_argmax_of_teacher_forcing_on_its_own_tokens() -> None:
    """Generation and training agree: feeding the sampled pyramid back as teacher-forcing inputs
    gives logits whose argmax is the greedy sample, at every scale."""
    scales = (1, 2, 3, 4)
    gen, tok = tiny_generator(scales, seed=4), QuantizerTokenizer(scales, 16, 4, seed=4)
    ctx = torch.randn(4, 3, 16, dtype=torch.float64)
    tokens = gen.generate(ctx, tok, temperature=0.0).tokens
    logits = gen(ctx, inputs_for(tok, tokens, 4))
    assert torch.equal(logits.argmax(-1), torch.cat(tokens, 1))
    assert len({int(t) for t in torch.cat(tokens, 1).flatten()}) > 2  # not a constant sample


def test_sampling_is_seeded_and_the_first_k_scales_are_a_prefix() -> None:
    scales = (1, 2, 3, 4)
    gen, tok = tiny_generator(scales, seed=5), QuantizerTokenizer(scales, 16, 4, seed=5)
    ctx = torch.randn(4, 2, 16, dtype=torch.float64)
    a = gen.generate(ctx, tok, generator=torch.Generator().manual_seed(11)).tokens
    b = gen.generate(ctx, tok, generator=11).tokens
    c = gen.generate(ctx, tok, generator=12).tokens
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    first2 = gen.generate(ctx, tok, generator=11, num_scales=2).tokens
    assert len(first2) == 2 and all(torch.equal(x, y) for x, y in zip(first2, a, strict=False))


def test_guidance_scale_zero_samples_the_unconditional_model_and_decode_uses_tokenizer() -> None:
    scales = (1, 2, 3)
    gen = tiny_generator(scales, seed=6, cond_drop_prob=0.1)
    tok = QuantizerTokenizer(scales, 16, 4, seed=6)
    ctx = torch.randn(2, 2, 16, dtype=torch.float64)
    uncond = gen.generate(ctx, tok, cfg_scale=0.0, generator=3, decode=True)
    null = gen.generate(gen.null_context_like(ctx), tok, generator=3)
    assert all(torch.equal(x, y) for x, y in zip(uncond.tokens, null.tokens, strict=True))
    cond = gen.generate(ctx, tok, generator=3).tokens
    assert not all(torch.equal(x, y) for x, y in zip(uncond.tokens, cond, strict=True))
    assert torch.equal(uncond.image, tok.decode(uncond.tokens))
    assert gen.generate(ctx, tok, generator=3).image is None


def test_no_null_context_without_condition_dropout_and_no_network_without_one() -> None:
    """Nothing trains a null context when cond_drop_prob is 0, so none is built (F1's case) and
    guidance asks for it by name; a generator built without a network asks for one per call."""
    scales = (1, 2)
    gen, tok = tiny_generator(scales), QuantizerTokenizer(scales, 16, 4, seed=1)
    assert gen.null_context is None and "null_context" not in gen.state_dict()
    ctx = torch.randn(2, 2, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="cond_drop_prob"):
        gen.generate(ctx, tok, cfg_scale=2.0)
    bare = NextScaleGenerator(gen.config).double()
    with pytest.raises(ValueError, match="network="):
        bare.generate(ctx, tok)
    own = {k: v for k, v in gen.state_dict().items() if not k.startswith("network.")}
    bare.load_state_dict(own)  # the same weights, minus the network's
    assert torch.equal(
        torch.cat(bare.generate(ctx, tok, generator=2, network=gen.network).tokens, 1),
        torch.cat(gen.generate(ctx, tok, generator=2).tokens, 1),
    )


def test_generate_restores_training_mode_and_needs_no_grad() -> None:
    gen, tok = tiny_generator((1, 2)), QuantizerTokenizer((1, 2), 16, 4, seed=0)
    gen.train()
    out = gen.generate(torch.randn(1, 1, 16, dtype=torch.float64), tok, generator=0)
    assert gen.training and not out.tokens[0].requires_grad
