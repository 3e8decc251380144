"""DefaultTransformer: cached calls equal one full masked call; cache and input errors."""

import itertools

import pytest
import torch

from attention import uga_layout
from foresight.default_network import CacheError, DefaultTransformer, TransformerConfig


def test_cached_steps_equal_the_full_block_causal_forward() -> None:
    torch.manual_seed(0)
    net = DefaultTransformer(TransformerConfig(width=16, depth=2, heads=2)).double().eval()
    layout = uga_layout(prefix=3, scales=(1, 2, 3), state=0)
    x = torch.randn(2, layout.n, 16, dtype=torch.float64)
    mask, positions = layout.mask()[None], torch.arange(layout.n)[None]
    full = net(x, mask, positions)
    cache = net.new_cache(2, layout.n)
    bounds = [0, 4, 8, layout.n]
    with torch.no_grad():
        steps = [
            net(x[:, a:b], mask[:, a:b, :b], positions[:, a:b], cache)
            for a, b in itertools.pairwise(bounds)
        ]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)
    assert cache.length == layout.n
    # Counter-case: the same steps without the mask let the prefix see later tokens.
    assert not torch.allclose(net(x, None, positions)[:, :3], full[:, :3])


def test_errors_name_the_problem() -> None:
    net = DefaultTransformer(TransformerConfig(width=8, depth=1, heads=2))
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(width=8, heads=3)
    with pytest.raises(ValueError, match="width"):
        net(torch.randn(1, 2, 4), None, torch.arange(2)[None])
    cache = net.new_cache(1, 3)
    with pytest.raises(CacheError, match="inference-only"):
        net(torch.randn(1, 2, 8), None, torch.arange(2)[None], cache)
    with torch.no_grad(), pytest.raises(CacheError, match="capacity"):
        net(torch.randn(1, 4, 8), None, torch.arange(4)[None], cache)
    with torch.no_grad(), pytest.raises(ValueError, match="mask"):
        net(torch.randn(1, 2, 8), torch.ones(1, 2, 5, dtype=torch.bool), torch.arange(2)[None])
