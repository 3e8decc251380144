"""`DefaultTransformer`: a small pre-norm transformer for standalone next-scale generation.

Each block: x + Attn(LN(x); mask) then x + MLP(LN(x)), with a final LayerNorm (GPT-2 / VAR
without AdaLN). It implements the `TokenNetwork` contract: attention goes through
`attention.attend` under the caller's mask, and a `TransformerCache` keeps every layer's K/V so
that each call appends its tokens to what came before. Positions are accepted and ignored: the
generator adds learned absolute position and level embeddings to its tokens, as VAR does.

Example:
    >>> net = DefaultTransformer(TransformerConfig(width=32, depth=2, heads=4))
    >>> cache = net.new_cache(batch=2, capacity=16)
    >>> a = net(torch.randn(2, 5, 32), None, torch.arange(5)[None], cache)
    >>> b = net(torch.randn(2, 4, 32), None, torch.arange(5, 9)[None], cache)
    >>> cache.length
    9
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from attention import BACKENDS, Backend, attend


class CacheError(ValueError):
    """A cache used beyond its capacity, with another batch size, or with gradients on."""


@dataclass(frozen=True)
class TransformerConfig:
    """Size of the default network; ``width`` must equal the generator's width."""

    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        for name in ("width", "depth", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"heads: width {self.width} must divide by heads, got {self.heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: expected > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected 0 <= dropout < 1, got {self.dropout}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")


class TransformerCache:
    """Per-layer K/V [b, h, n, e] of the tokens seen so far, preallocated to ``capacity``."""

    def __init__(
        self,
        depth: int,
        batch: int,
        heads: int,
        capacity: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1 or batch < 1:
            raise CacheError(f"cache: expected batch, capacity >= 1, got {batch}, {capacity}")
        shape = (depth, batch, heads, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this call's K/V of ``layer`` after the fill pointer; return all K/V so far."""
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            raise CacheError(
                "cache: cached forwards are inference-only (buffers are written in place); "
                "run them under torch.no_grad()"
            )
        b, m = k.shape[0], k.shape[2]
        if b != self.k.shape[1]:
            raise CacheError(f"cache batch: cache holds {self.k.shape[1]} samples, input has {b}")
        stop = self.length + m
        if stop > self.capacity:
            raise CacheError(
                f"cache capacity: {m} new tokens do not fit after {self.length} of "
                f"{self.capacity} slots"
            )
        self.k[layer, :, :, self.length : stop] = k
        self.v[layer, :, :, self.length : stop] = v
        return self.k[layer, :, :, :stop], self.v[layer, :, :, :stop]


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d, hidden = config.width, round(config.width * config.mlp_ratio)
        self.heads, self.backend = config.heads, config.backend
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None, cache: TransformerCache | None, index: int
    ) -> Tensor:
        q, k, v = rearrange(
            self.qkv(self.attn_norm(x)), "b n (three h e) -> three b h n e", three=3, h=self.heads
        )
        if cache is not None:
            k, v = cache.extend(index, k, v)
        attn = attend(q, k, v, mask, backend=self.backend)
        x = x + self.drop(self.out(rearrange(attn, "b h n e -> b n (h e)")))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class DefaultTransformer(nn.Module):
    """``depth`` pre-norm blocks and a final LayerNorm; a `TokenNetwork`."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TransformerConfig()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.apply(_init_weights)

    @property
    def width(self) -> int:
        return self.config.width

    def forward(
        self,
        tokens: Float[Tensor, "b nq d"],
        mask: Bool[Tensor, "#b nq nk"] | None,
        positions: Int[Tensor, "#b nq"],
        cache: TransformerCache | None = None,
    ) -> Float[Tensor, "b nq d"]:
        """Tokens [b, nq, d] -> [b, nq, d]; keys are the cache's tokens then these (see module)."""
        nq, d = tokens.shape[1:]
        if d != self.config.width:
            raise ValueError(f"tokens: expected width {self.config.width}, got {d}")
        past = 0 if cache is None else cache.length
        if mask is not None and (mask.shape[-2] != nq or mask.shape[-1] != past + nq):
            raise ValueError(
                f"mask: expected [#b, {nq}, {past + nq}] (rows = this call's tokens, columns = "
                f"{past} cached + {nq} new), got {list(mask.shape)}"
            )
        x = tokens
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache, i)
        if cache is not None:
            cache.length += nq
        return self.norm(x)

    def new_cache(
        self,
        batch: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> TransformerCache:
        """An empty cache for ``capacity`` tokens; device/dtype default to the parameters'."""
        param = next(self.parameters())
        cfg = self.config
        return TransformerCache(
            cfg.depth,
            batch,
            cfg.heads,
            capacity,
            cfg.width // cfg.heads,
            device=param.device if device is None else device,
            dtype=param.dtype if dtype is None else dtype,
        )


def _init_weights(module: nn.Module) -> None:
    # GPT-2 / VAR style: small normal weights keep the initial logits near uniform.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
