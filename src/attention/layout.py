"""`Layout`: the joint token sequence as named segments of blocks, and the mask it implies.

A segment is a contiguous run of tokens owned by one expert and made of one or more blocks; a
segment may also *continue* the previous segment's last block (F1's history tokens share the prefix
block in the official code). The mask is the block rule of `block_rule.py` applied to the layout's
block ids, plus per-row padding.

Example:
    >>> layout = Layout((Segment("prefix", "understanding", (6,)),
    ...                  Segment("actions", "action", (4,))))
    >>> layout.mask().shape
    torch.Size([10, 10])
"""

from dataclasses import dataclass, field
from functools import cached_property

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from attention.block_rule import block_rule_mask
from attention.flex import MaskMod, block_rule_mask_mod, create_flex_block_mask

# `Layout.slice` shadows the builtin inside the class body; annotations use this name.
TokenSlice = slice


class LayoutError(ValueError):
    """A layout, segment or padding mask that breaks the layout's contract."""


@dataclass(frozen=True)
class Segment:
    """A named run of tokens owned by one expert.

    blocks: the length of each block, in order (each > 0).
    joins_previous: the first block continues the previous segment's last block instead of
        starting a new one (used for F1's history tokens inside the prefix block).
    """

    name: str
    expert: str
    blocks: tuple[int, ...]
    joins_previous: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise LayoutError("segment name: expected a non-empty string")
        if not self.blocks:
            raise LayoutError(f"segment {self.name!r} blocks: expected at least one block")
        bad = [n for n in self.blocks if not isinstance(n, int) or n <= 0]
        if bad:
            raise LayoutError(
                f"segment {self.name!r} blocks: every block length must be a positive int, "
                f"got {self.blocks}"
            )

    @property
    def length(self) -> int:
        return sum(self.blocks)


@dataclass(frozen=True)
class Layout:
    """The joint sequence: segments in order, each expert's segments contiguous.

    Per-token tables (``block_ids``, ``expert_ids``) are CPU tensors; the mask methods move them to
    the requested device.
    """

    segments: tuple[Segment, ...]
    _spans: dict[str, TokenSlice] = field(init=False, repr=False, compare=False)
    _device_block_ids: dict[str, Tensor] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        object.__setattr__(self, "segments", segments)
        if not segments:
            raise LayoutError("layout: expected at least one segment")
        names = [s.name for s in segments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise LayoutError(f"layout: segment names must be unique, repeated: {duplicates}")
        if segments[0].joins_previous:
            raise LayoutError(
                f"segment {segments[0].name!r}: the first segment has no previous block to join"
            )
        # Each expert's tokens must be one contiguous run: the MoT slices its inputs that way.
        seen: list[str] = []
        for s in segments:
            if s.expert in seen and seen[-1] != s.expert:
                raise LayoutError(
                    f"segment {s.name!r}: expert {s.expert!r} already owns an earlier, "
                    f"non-adjacent segment; each expert's segments must be contiguous "
                    f"(order so far: {seen})"
                )
            if not seen or seen[-1] != s.expert:
                seen.append(s.expert)
        spans, start = {}, 0
        for s in segments:
            spans[s.name] = slice(start, start + s.length)
            start += s.length
        object.__setattr__(self, "_spans", spans)

    # ---- sizes and per-token tables -------------------------------------------------------

    @property
    def n(self) -> int:
        """Total number of tokens."""
        return sum(s.length for s in self.segments)

    def __len__(self) -> int:
        return self.n

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.segments)

    @property
    def experts(self) -> tuple[str, ...]:
        """Expert names in sequence order (each once)."""
        return tuple(dict.fromkeys(s.expert for s in self.segments))

    def __contains__(self, name: object) -> bool:
        return name in self._spans

    def segment(self, name: str) -> Segment:
        return self.segments[self._index(name)]

    def slice(self, name: str) -> TokenSlice:
        """Token positions of segment ``name`` in the joint sequence."""
        self._index(name)
        return self._spans[name]

    def expert_slice(self, expert: str) -> TokenSlice:
        """Token positions of all segments owned by ``expert`` (contiguous by construction)."""
        spans = [self._spans[s.name] for s in self.segments if s.expert == expert]
        if not spans:
            raise LayoutError(f"expert {expert!r}: not in this layout, experts are {self.experts}")
        return TokenSlice(spans[0].start, spans[-1].stop)

    def expert_lengths(self) -> dict[str, int]:
        """Number of tokens per expert, in sequence order."""
        return {e: self.expert_slice(e).stop - self.expert_slice(e).start for e in self.experts}

    @cached_property
    def block_start_flags(self) -> tuple[bool, ...]:
        """Whether each token starts a block, as Python bools (no tensor read to ask)."""
        flags: list[bool] = []
        for s in self.segments:
            for i, length in enumerate(s.blocks):
                starts_block = not (i == 0 and s.joins_previous)
                flags += [starts_block] + [False] * (length - 1)
        return tuple(flags)

    @cached_property
    def block_starts(self) -> Bool[Tensor, " n"]:
        return torch.tensor(self.block_start_flags, dtype=torch.bool)

    @cached_property
    def block_ids(self) -> Int[Tensor, " n"]:
        """Block index per token (running count of block starts, from 0)."""
        return torch.cumsum(self.block_starts.long(), 0) - 1

    @cached_property
    def expert_ids(self) -> Int[Tensor, " n"]:
        """Index into ``experts`` per token."""
        index = {e: i for i, e in enumerate(self.experts)}
        return torch.tensor(
            [index[s.expert] for s in self.segments for _ in range(s.length)], dtype=torch.long
        )

    @property
    def num_blocks(self) -> int:
        return sum(self.block_start_flags)

    def block_ids_on(self, device: torch.device | str | None) -> Int[Tensor, " n"]:
        """``block_ids`` on ``device``, copied there once per layout and device (masks built
        on every call then cost no host-to-device copy)."""
        key = str(torch.device(device or "cpu"))
        if key not in self._device_block_ids:
            self._device_block_ids[key] = self.block_ids.to(key)
        return self._device_block_ids[key]

    # ---- masks ----------------------------------------------------------------------------

    def check_valid(self, valid: Tensor) -> None:
        """Raise a LayoutError unless ``valid`` is a boolean [b, n] padding mask for this layout."""
        if valid.dtype != torch.bool:
            raise LayoutError(f"valid: expected a bool tensor, got dtype {valid.dtype}")
        if valid.ndim != 2 or valid.shape[1] != self.n:
            raise LayoutError(
                f"valid: expected shape [b, {self.n}] for this layout, got {list(valid.shape)}"
            )

    def mask(
        self,
        valid: Bool[Tensor, "b n"] | None = None,
        *,
        queries: str | TokenSlice | None = None,
        device: torch.device | str | None = None,
    ) -> Bool[Tensor, "*b nq n"]:
        """Boolean attention mask, True = may attend: ``[n, n]``, or ``[b, n, n]`` with ``valid``.

        queries: restrict the rows to a segment name or a slice of positions (for KV-cached steps
        whose queries are a suffix of the sequence); columns always cover the whole layout.
        """
        blocks, rows = self._rule_tables(valid, queries, device)
        if valid is None:
            return block_rule_mask(blocks[rows], blocks)
        blocks = blocks.expand(valid.shape[0], -1)
        return block_rule_mask(blocks[:, rows], blocks, valid[:, rows], valid)

    def bias(
        self,
        valid: Bool[Tensor, "b n"] | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        queries: str | TokenSlice | None = None,
        device: torch.device | str | None = None,
    ) -> Float[Tensor, "*b nq n"]:
        """Additive bias form of ``mask``: 0 where allowed, the dtype's most negative finite value
        elsewhere (finite so a fully padded row softmaxes to a uniform row, never to NaN)."""
        return mask_to_bias(self.mask(valid, queries=queries, device=device), dtype)

    def mask_mod(
        self,
        valid: Bool[Tensor, "b n"] | None = None,
        *,
        queries: str | TokenSlice | None = None,
        device: torch.device | str | None = None,
    ) -> MaskMod:
        """FlexAttention ``mask_mod`` of ``mask`` (same block ids, same padding)."""
        blocks, rows = self._rule_tables(valid, queries, device)
        if valid is None:
            return block_rule_mask_mod(blocks[rows], blocks)
        return block_rule_mask_mod(blocks[rows], blocks, valid[:, rows].contiguous(), valid)

    def block_mask(
        self,
        valid: Bool[Tensor, "b n"] | None = None,
        *,
        queries: str | TokenSlice | None = None,
        device: torch.device | str | None = None,
    ):
        """FlexAttention ``BlockMask`` of ``mask``, shared by all heads (build once per batch)."""
        device = valid.device if valid is not None and device is None else device
        rows = self._rows(queries)
        batch = None if valid is None else valid.shape[0]
        return create_flex_block_mask(
            self.mask_mod(valid, queries=queries, device=device),
            batch,
            None,
            rows.stop - rows.start,
            self.n,
            device or "cpu",
        )

    def positions(self, valid: Bool[Tensor, "b n"] | None = None) -> Int[Tensor, "*b n"]:
        """RoPE positions: running count of valid tokens before each token (padding repeats)."""
        if valid is None:
            return torch.arange(self.n)
        self.check_valid(valid)
        return (torch.cumsum(valid.long(), dim=-1) - 1).clamp(min=0)

    # ---- helpers --------------------------------------------------------------------------

    def _index(self, name: str) -> int:
        for i, s in enumerate(self.segments):
            if s.name == name:
                return i
        raise LayoutError(f"segment {name!r}: not in this layout, segments are {self.names}")

    def _rule_tables(
        self, valid: Tensor | None, queries: str | TokenSlice | None, device
    ) -> tuple[Tensor, TokenSlice]:
        """Block ids on the mask's device and the query rows, after checking ``valid``."""
        if valid is not None:
            self.check_valid(valid)
            device = valid.device if device is None else device
        return self.block_ids_on(device), self._rows(queries)

    def _rows(self, queries: str | TokenSlice | None) -> TokenSlice:
        if queries is None:
            return TokenSlice(0, self.n)
        if isinstance(queries, str):
            return self.slice(queries)
        start, stop, step = queries.indices(self.n)
        if step != 1:
            raise LayoutError(f"queries: expected a contiguous slice, got step {step}")
        return TokenSlice(start, stop)


def mask_to_bias(
    mask: Bool[Tensor, "*b nq nk"], dtype: torch.dtype = torch.float32
) -> Float[Tensor, "*b nq nk"]:
    """Boolean mask -> additive bias (0 allowed, finfo(dtype).min blocked)."""
    if not dtype.is_floating_point:
        raise LayoutError(f"bias dtype: expected a floating dtype, got {dtype}")
    blocked = torch.finfo(dtype).min
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, blocked)
