"""The block rule behind every mask in f1kit.

A token may attend to every *valid* token whose block index is <= its own, where the block index
of a token is the running count of "block start" flags up to and including it (DESIGN.md s2).
Everything else (the UGA layout, the additive bias, the FlexAttention mask_mod) is derived from the
two functions here, so there is exactly one place where the rule is written.
"""

import torch
from jaxtyping import Bool, Int
from torch import Tensor


def block_ids_from_starts(starts: Bool[Tensor, "*b n"]) -> Int[Tensor, "*b n"]:
    """Block index of each token: running count of start flags (first block has index 0).

    A sequence whose first token carries no start flag still puts it in block 0.
    """
    return torch.cumsum(starts.long(), dim=-1) - starts[..., :1].long()


def block_rule_mask(
    q_blocks: Int[Tensor, "*b nq"],
    kv_blocks: Int[Tensor, "*b nk"],
    q_valid: Bool[Tensor, "*b nq"] | None = None,
    kv_valid: Bool[Tensor, "*b nk"] | None = None,
) -> Bool[Tensor, "*b nq nk"]:
    """True where query i may attend key j: ``kv_blocks[j] <= q_blocks[i]`` and both are valid.

    Queries and keys are separate so a KV-cached step (new queries against cached + new keys)
    uses the same rule as the full sequence.
    """
    allowed = kv_blocks.unsqueeze(-2) <= q_blocks.unsqueeze(-1)
    if q_valid is not None:
        allowed = allowed & q_valid.unsqueeze(-1)
    if kv_valid is not None:
        allowed = allowed & kv_valid.unsqueeze(-2)
    return allowed
