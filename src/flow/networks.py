"""Small default velocity networks for a standalone flow-matching head.

The head embeds the noisy chunk and asks a network for one hidden vector per chunk step:

    network(tokens [b c d], cond [b d] | None, context [b n d] | None) -> hidden [b c d]

``cond`` is the time embedding when the head uses adaptive-norm conditioning (pi0.5-style
adaRMS/adaLN: each norm's scale and shift are predicted from it); ``context`` holds prefix tokens
the chunk attends to (the state token, observation features). In F1 the MoT Action expert takes
this place, attending to the cached prefix and foresight; these two networks are for standalone
use and tests.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are (optionally) predicted from a conditioning vector.

    y = LN(x) * (1 + gamma(cond)) + beta(cond); the modulation starts at zero, so an untrained
    adaptive norm is a plain LayerNorm (the adaLN-zero initialisation of DiT).
    """

    def __init__(self, width: int, adaptive: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=not adaptive)
        self.modulation = nn.Linear(width, 2 * width) if adaptive else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(
        self, x: Float[Tensor, "b n d"], cond: Float[Tensor, "b d"] | None
    ) -> Float[Tensor, "b n d"]:
        y = self.norm(x)
        if self.modulation is None:
            return y
        if cond is None:
            raise ValueError("cond: this network uses adaptive norms and needs the time embedding")
        gamma, beta = rearrange(self.modulation(cond), "b (two d) -> two b 1 d", two=2)
        return y * (1 + gamma) + beta


class MLPVelocityNet(nn.Module):
    """Per-step residual MLP: no mixing across chunk steps, no context (for 1-step chunks)."""

    def __init__(self, width: int, depth: int = 3, *, adaptive: bool = False) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"MLPVelocityNet: width and depth must be >= 1, got {width}, {depth}")
        self.norms = nn.ModuleList(AdaptiveLayerNorm(width, adaptive) for _ in range(depth))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
            for _ in range(depth)
        )
        self.out_norm = AdaptiveLayerNorm(width, adaptive)

    def forward(
        self,
        tokens: Float[Tensor, "b c d"],
        cond: Float[Tensor, "b d"] | None = None,
        context: Float[Tensor, "b n d"] | None = None,
    ) -> Float[Tensor, "b c d"]:
        if context is not None:
            raise ValueError(
                "context: MLPVelocityNet cannot attend to context tokens; use the transformer"
            )
        x = tokens
        for norm, mlp in zip(self.norms, self.mlps, strict=True):
            x = x + mlp(norm(x, cond))
        return self.out_norm(x, cond)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, adaptive: bool) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = AdaptiveLayerNorm(width, adaptive)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp_norm = AdaptiveLayerNorm(width, adaptive)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor, cond: Tensor | None, n_context: int) -> Tensor:
        q, k, v = rearrange(
            self.qkv(self.attn_norm(x, cond)),
            "b n (three h e) -> three b h n e",
            three=3,
            h=self.heads,
        )
        # The context is a prefix: it sees only itself, the chunk sees everything (the UGA rule
        # for the action block, DESIGN.md section 2).
        n = x.shape[1]
        allowed = torch.ones(n, n, dtype=torch.bool, device=x.device)
        allowed[:n_context, n_context:] = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.out(rearrange(y, "b h n e -> b n (h e)"))
        return x + self.mlp(self.mlp_norm(x, cond))


class TransformerVelocityNet(nn.Module):
    """Pre-norm transformer over [context; chunk], bidirectional within the chunk.

    Chunk steps get a learned position embedding (up to ``max_chunk`` steps): attention alone is
    permutation-equivariant and could not tell the first step of a chunk from the last (the MoT
    expert gets the same information from RoPE).
    """

    def __init__(
        self,
        width: int,
        depth: int = 2,
        heads: int = 4,
        *,
        adaptive: bool = False,
        max_chunk: int = 64,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1 or heads < 1 or width % heads or max_chunk < 1:
            raise ValueError(
                f"TransformerVelocityNet: need width, depth, heads, max_chunk >= 1 and "
                f"width % heads == 0, got width={width}, depth={depth}, heads={heads}, "
                f"max_chunk={max_chunk}"
            )
        self.position = nn.Parameter(torch.randn(max_chunk, width) * 0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, adaptive) for _ in range(depth))
        self.out_norm = AdaptiveLayerNorm(width, adaptive)

    def forward(
        self,
        tokens: Float[Tensor, "b c d"],
        cond: Float[Tensor, "b d"] | None = None,
        context: Float[Tensor, "b n d"] | None = None,
    ) -> Float[Tensor, "b c d"]:
        c = tokens.shape[1]
        if c > self.position.shape[0]:
            raise ValueError(f"tokens: {c} chunk steps exceed max_chunk {self.position.shape[0]}")
        tokens = tokens + self.position[:c].to(tokens.dtype)
        n_context = 0 if context is None else context.shape[1]
        x = tokens if context is None else torch.cat([context, tokens], dim=1)
        for block in self.blocks:
            x = block(x, cond, n_context)
        return self.out_norm(x[:, n_context:], cond)
