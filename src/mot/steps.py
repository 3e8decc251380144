"""Mask and RoPE positions of one (possibly KV-cached) forward over a slice of a `Layout`.

A cached step runs the queries ``[start, stop)`` of the layout against keys ``[0, stop)``: the
cache holds ``[0, start)`` and the step adds its own tokens. Rows and positions come from the
full layout, so a step sees exactly what the full forward's rows see (DESIGN.md s2, s3).
"""

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from attention import Layout, LayoutError


def step_inputs(
    layout: Layout,
    valid: Bool[Tensor, "b n"] | None = None,
    *,
    queries: str | slice | None = None,
    device: torch.device | str | None = None,
) -> tuple[Bool[Tensor, "*b nq nk"], Int[Tensor, "*b nq"]]:
    """(mask [.., nq, stop], positions [.., nq]) for the queries ``[start, stop)`` of ``layout``.

    queries: a segment name or a contiguous slice ending at a block boundary (later keys are not
        cached yet, so a step may not cut a block); None = the whole layout (no cache).

    Example:
        >>> from attention import uga_layout
        >>> layout = uga_layout(prefix=4, scales=(1, 2), state=1, actions=3)
        >>> mask, positions = step_inputs(layout, queries=layout.slice("actions"))
        >>> mask.shape, positions.tolist()
        (torch.Size([3, 13]), [10, 11, 12])
    """
    if queries is None:
        rows = slice(0, layout.n)
    elif isinstance(queries, str):
        rows = layout.slice(queries)
    else:
        start, stop, step = queries.indices(layout.n)
        if step != 1 or stop <= start:
            raise LayoutError(f"queries: expected a non-empty contiguous slice, got {queries}")
        rows = slice(start, stop)
    check_step_end(layout, rows.stop)
    device = valid.device if valid is not None and device is None else device
    mask = layout.mask(valid, queries=rows, device=device)[..., : rows.stop]
    positions = layout.positions(valid).to(device)[..., rows]
    return mask, positions


def check_step_end(layout: Layout, stop: int) -> None:
    """Raise unless a cached step ending at ``stop`` ends at a block boundary (Python only)."""
    if stop < layout.n and not layout.block_start_flags[stop]:
        # Keys >= stop are not in the cache yet, but rows of a cut block must see them.
        raise LayoutError(
            f"queries: a step must end at a block boundary, {stop} cuts block "
            f"{sum(layout.block_start_flags[: stop + 1]) - 1} of the layout"
        )
