"""FlexAttention form of the block rule: a ``mask_mod`` over the same block ids, and its BlockMask.

FlexAttention only pays off compiled on CUDA; the ``mask_mod`` itself is plain tensor indexing, so
it can be evaluated densely anywhere (``torch.nn.attention.flex_attention.create_mask``) and
compared with the boolean mask, which is how the forms are kept identical.
"""

from collections.abc import Callable
from typing import no_type_check

import torch
from jaxtyping import Bool, Int
from torch import Tensor

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

# The mask_mods below carry @no_type_check: FlexAttention counts their positional parameters and
# traces them under vmap, and a runtime type-checking wrapper (the test suite's import hook) would
# hide both.


def block_rule_mask_mod(
    q_blocks: Int[Tensor, " nq"],
    kv_blocks: Int[Tensor, " nk"],
    q_valid: Bool[Tensor, "b nq"] | None = None,
    kv_valid: Bool[Tensor, "b nk"] | None = None,
) -> MaskMod:
    """``mask_mod(b, h, q_idx, kv_idx)`` equal to ``block_rule_mask`` at every index."""
    if (q_valid is None) != (kv_valid is None):
        raise ValueError("q_valid and kv_valid: give both padding masks or neither")

    if q_valid is None:

        @no_type_check
        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return kv_blocks[kv_idx] <= q_blocks[q_idx]

    else:

        @no_type_check
        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            allowed = kv_blocks[kv_idx] <= q_blocks[q_idx]
            return allowed & q_valid[b, q_idx] & kv_valid[b, kv_idx]

    return mask_mod


def dense_mask_mod(mask: Bool[Tensor, "b nq nk"]) -> MaskMod:
    """``mask_mod`` that reads an explicit boolean mask (for masks with no block structure)."""

    @no_type_check
    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return mask[b, q_idx, kv_idx]

    return mask_mod


def create_flex_block_mask(
    mask_mod: MaskMod,
    batch: int | None,
    heads: int | None,
    q_len: int,
    kv_len: int,
    device: torch.device | str,
):
    """BlockMask for ``flex_attention`` (imported lazily: FlexAttention is optional)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, batch, heads, q_len, kv_len, device=device)
