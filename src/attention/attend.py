"""One joint attention call, under any of the mask's kernel forms, with GQA/MQA.

Backends compute the same function (tests hold them to float tolerance):
    eager      explicit softmax(q k^T * scale + bias) v, softmax in float32
    sdpa       F.scaled_dot_product_attention with the boolean mask
    sdpa_bias  F.scaled_dot_product_attention with the additive float bias
    flex       FlexAttention with a BlockMask (compile it on CUDA to get the fast kernel)

Query rows with no allowed key (fully padded rows) return zeros and zero gradients: they are
computed against an all-allowed row (finite) and then zeroed, so no backend can produce NaN.
"""

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor

from attention.flex import create_flex_block_mask, dense_mask_mod
from attention.layout import mask_to_bias

Backend = Literal["eager", "sdpa", "sdpa_bias", "flex"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def attend(
    q: Float[Tensor, "b h nq e"],
    k: Float[Tensor, "b g nk e"],
    v: Float[Tensor, "b g nk e"],
    mask: Bool[Tensor, "#b nq nk"] | None,
    *,
    backend: Backend = "sdpa",
    block_mask: object | None = None,
    scale: float | None = None,
    row_has_key: Bool[Tensor, "#b nq"] | None = None,
) -> Float[Tensor, "b h nq e"]:
    """softmax(q k^T / sqrt(e) + mask) v with h query heads sharing g KV heads (h % g == 0).

    mask: True = may attend, broadcast over heads (and over batch when its first dim is 1);
        None = full attention.
    block_mask: a precomputed FlexAttention BlockMask for ``backend="flex"`` (built from ``mask``
        when omitted, which is slow; build it once per layout with ``Layout.block_mask``).
    row_has_key: the flags of `open_empty_rows` when ``mask`` already went through it (a stack
        of layers sharing one mask does it once per forward, not once per layer).
    """
    h, g = q.shape[1], k.shape[1]
    if h % g != 0:
        raise ValueError(f"heads: query heads ({h}) must be a multiple of KV heads ({g})")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale

    if mask is not None and row_has_key is None:
        mask, row_has_key = open_empty_rows(mask)

    if backend == "eager":
        out = _eager(q, k, v, mask, scale)
    elif backend == "flex":
        out = _flex(q, k, v, mask, block_mask, scale)
    else:
        attn_mask = None
        if mask is not None:
            attn_mask = mask if backend == "sdpa" else mask_to_bias(mask, q.dtype)
            attn_mask = attn_mask.unsqueeze(1)  # broadcast over heads
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=g != h
        )

    if row_has_key is not None:
        out = out * rearrange(row_has_key, "b nq -> b 1 nq 1").to(out.dtype)
    return out


def open_empty_rows(
    mask: Bool[Tensor, "#b nq nk"],
) -> tuple[Bool[Tensor, "#b nq nk"], Bool[Tensor, "#b nq"]]:
    """The mask with rows that allow no key opened to every key, and which rows had a key.

    `attend` computes such rows against all keys (finite) and zeroes them with the flags, so no
    backend sees an all-blocked row (NaN). Pure tensor work: no host read.
    """
    row_has_key = mask.any(dim=-1)
    return mask | ~row_has_key.unsqueeze(-1), row_has_key


def _eager(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    g = k.shape[1]
    q = rearrange(q, "b (g r) nq e -> b g r nq e", g=g)
    scores = torch.einsum("bgrqe,bgke->bgrqk", q, k).float() * scale
    if mask is not None:
        scores = scores.masked_fill(
            ~rearrange(mask, "b nq nk -> b 1 1 nq nk"), torch.finfo(scores.dtype).min
        )
    weights = scores.softmax(dim=-1).to(v.dtype)
    out = torch.einsum("bgrqk,bgke->bgrqe", weights, v)
    return rearrange(out, "b g r nq e -> b (g r) nq e")


def _flex(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, block_mask: object | None, scale: float
) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    if block_mask is None and mask is not None:
        full = mask.expand(q.shape[0], -1, -1)
        block_mask = create_flex_block_mask(
            dense_mask_mod(full), q.shape[0], None, q.shape[2], k.shape[2], q.device
        )
    return flex_attention(
        q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
    )
