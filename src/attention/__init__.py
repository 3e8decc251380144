"""UGA attention masks: the block rule, named layouts, and their kernel forms."""

from attention.attend import BACKENDS, Backend, attend, open_empty_rows
from attention.block_rule import block_ids_from_starts, block_rule_mask
from attention.flex import block_rule_mask_mod, create_flex_block_mask, dense_mask_mod
from attention.layout import Layout, LayoutError, Segment, mask_to_bias
from attention.twin import Twin
from attention.uga import ACTION, GENERATION, UNDERSTANDING, uga_layout

__all__ = [
    "ACTION",
    "BACKENDS",
    "GENERATION",
    "UNDERSTANDING",
    "Backend",
    "Layout",
    "LayoutError",
    "Segment",
    "Twin",
    "attend",
    "block_ids_from_starts",
    "block_rule_mask",
    "block_rule_mask_mod",
    "create_flex_block_mask",
    "dense_mask_mod",
    "mask_to_bias",
    "open_empty_rows",
    "uga_layout",
]
