"""The contract between `NextScaleGenerator` and the transformer that runs its tokens.

Next-scale prediction (DESIGN.md s3) is a scheme, not a network: the generator embeds tokens,
builds the block-causal mask and reads logits, while *some* transformer mixes the tokens. Standalone
that is `DefaultTransformer`; inside F1 it is the MoT Generation expert with the shared KV cache.
Anything with these two methods works:

    network(tokens [b, nq, d], mask [#b, nq, nk] | None, positions [#b, nq], cache) -> [b, nq, d]
    network.new_cache(batch, capacity, device=..., dtype=...) -> cache

Mask rows are this call's tokens, columns the cached tokens followed by this call's tokens
(True = may attend). A call with a cache appends this call's K/V to it, so the generator runs
the conditioning + SOS once and then one call per scale. ``positions`` is the running count of
valid tokens (for RoPE networks; networks with absolute embeddings may ignore it).

Adapting the MoT stack (``mot.MoTStack``) is a few lines, e.g. for generation-only calls:

    class GenerationExpert:
        def __init__(self, stack): self.stack = stack
        def __call__(self, tokens, mask, positions, cache=None):
            return self.stack([None, tokens, None], positions, mask, cache=cache)[1]
        def new_cache(self, batch, capacity, *, device=None, dtype=None):
            return self.stack.new_cache(batch, capacity, device=device, dtype=dtype)
"""

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


@runtime_checkable
class TokenNetwork(Protocol):
    """A transformer over [b, n, d] tokens with a boolean mask and an appendable KV cache."""

    def __call__(
        self,
        tokens: Float[Tensor, "b nq d"],
        mask: Bool[Tensor, "#b nq nk"] | None,
        positions: Int[Tensor, "#b nq"],
        cache: object | None = None,
    ) -> Float[Tensor, "b nq d"]: ...

    def new_cache(
        self,
        batch: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> object: ...
