"""Default velocity networks: adaptive norms, chunk positions, prefix context, per-step MLP."""

import pytest
import torch

from flow import AdaptiveLayerNorm, MLPVelocityNet, TransformerVelocityNet


def test_adaptive_norm_starts_as_layer_norm_and_applies_its_modulation():
    torch.manual_seed(0)
    norm = AdaptiveLayerNorm(8, adaptive=True)
    x, cond = torch.randn(2, 3, 8), torch.randn(2, 8)
    plain = torch.nn.functional.layer_norm(x, (8,))
    torch.testing.assert_close(norm(x, cond), plain)  # zero-initialised modulation
    with torch.no_grad():
        norm.modulation.weight.normal_()
    gamma, beta = norm.modulation(cond).chunk(2, dim=-1)
    torch.testing.assert_close(norm(x, cond), plain * (1 + gamma[:, None]) + beta[:, None])
    with pytest.raises(ValueError, match="cond"):
        norm(x, None)
    assert AdaptiveLayerNorm(8, adaptive=False).norm.weight is not None


def test_transformer_tells_chunk_steps_apart():
    torch.manual_seed(0)
    net = TransformerVelocityNet(16, depth=1, heads=2)
    same = torch.randn(1, 1, 16).expand(1, 5, 16)  # five identical tokens
    out = net(same)
    assert (out[:, 1:] - out[:, :1]).abs().amax() > 1e-3  # position embeddings break the tie
    with torch.no_grad():
        net.position.zero_()
    out = net(same)  # counter-case: without them attention is permutation-equivariant
    torch.testing.assert_close(out[:, 1:], out[:, :1].expand(1, 4, 16))


def test_context_is_a_prefix_the_chunk_reads():
    torch.manual_seed(0)
    net = TransformerVelocityNet(16, depth=2, heads=2)
    tokens, context = torch.randn(2, 3, 16), torch.randn(2, 2, 16)
    out = net(tokens, context=context)
    assert out.shape == tokens.shape
    # (A random change: a constant shift of every feature would vanish in the first LayerNorm.)
    assert (out - net(tokens, context=torch.randn(2, 2, 16))).abs().amax() > 1e-3
    # Context tokens carry no positions and attend bidirectionally: their order is irrelevant.
    torch.testing.assert_close(net(tokens, context=context.flip(1)), out, rtol=1e-5, atol=1e-5)


def test_chunk_longer_than_the_position_table_is_refused():
    net = TransformerVelocityNet(8, depth=1, heads=2, max_chunk=4)
    with pytest.raises(ValueError, match="max_chunk"):
        net(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="width % heads"):
        TransformerVelocityNet(10, heads=4)


def test_mlp_acts_per_step():
    torch.manual_seed(0)
    net = MLPVelocityNet(8, depth=2)
    x = torch.randn(2, 4, 8)
    y = x.clone()
    y[:, 2] += torch.randn(2, 8)  # not a constant shift, which LayerNorm would erase
    diff = (net(x) - net(y)).abs().amax(dim=(0, 2))
    assert diff[2] > 1e-3 and torch.equal(diff[[0, 1, 3]], torch.zeros(3))
    with pytest.raises(ValueError, match="context"):
        net(x, context=torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="width and depth"):
        MLPVelocityNet(0)
