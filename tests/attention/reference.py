"""Independent, loop-based statements of the masks, written from DESIGN.md s2 (not from the code).

Tests compare the library against these; they share no code with `src/attention`.
"""

import torch


def block_ids_loop(starts: list[bool]) -> list[int]:
    ids, current = [], 0
    for i, flag in enumerate(starts):
        if flag and i > 0:
            current += 1
        ids.append(current)
    return ids


def rule_mask_loop(
    q_blocks: list[int], kv_blocks: list[int], q_valid: list[bool], kv_valid: list[bool]
) -> torch.Tensor:
    out = torch.zeros(len(q_blocks), len(kv_blocks), dtype=torch.bool)
    for i, bq in enumerate(q_blocks):
        for j, bk in enumerate(kv_blocks):
            out[i, j] = q_valid[i] and kv_valid[j] and bk <= bq
    return out


def uga_stage_keys(
    prefix: int, history: int, scales: tuple[int, ...], state: int, actions: int, merged: bool
) -> list[tuple[int, int]]:
    """Per token, the (stage, scale) key of DESIGN.md s2; a token sees keys <= its own."""
    keys = [(0, 0)] * prefix
    keys += [(0, 0) if merged else (1, 0)] * history
    for k, s in enumerate(scales):
        keys += [(2, k)] * (s * s)
    keys += [(3, 0)] * state
    keys += [(4, 0)] * actions
    return keys


def uga_mask_loop(keys: list[tuple[int, int]], valid: list[bool]) -> torch.Tensor:
    n = len(keys)
    out = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            out[i, j] = valid[i] and valid[j] and keys[j] <= keys[i]
    return out
