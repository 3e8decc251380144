"""`Twin`: a layout with a private copy of one token range, for two views in one forward.

F1's joint training pass needs two Generation views of the same foresight scales at once
(docs/contract.md): the Action rows must read the scales the model drew itself (what inference
shows them), while the cross-entropy must score the ground-truth codes against inputs built from
the ground-truth scales before them (what the targets quantise). Running both as one sequence
shares the Understanding and history rows instead of computing them twice:

    original layout    [ prefix | history | SOS | s2..sK          | state | actions ]
    twinned sequence   [ prefix | history | SOS | s2..sK | t2..tK | state | actions ]
                                                  ^ range   ^ twin

The twin ``t`` is a copy of the range ``[start, stop)`` inserted right after it. Every token keeps
the rows and columns its original has in the layout (``index`` maps a sequence position to its
layout position), with one exception that makes the two views private to each other:

    mask[i, j] = layout.mask[index[i], index[j]]
                 and not (j in twin and i not in twin)       # nobody but the twin sees the twin
                 and not (i in twin and j in range)          # the twin does not see the original

So the twin's rows see exactly what the range's rows see, with the twin in the range's place, and
every other row sees exactly what it sees in the layout. RoPE positions are the layout's
(``positions[i] = layout.positions[index[i]]``), so each view is position-for-position the
layout's own sequence.

Example:
    >>> from attention import uga_layout
    >>> layout = uga_layout(prefix=2, scales=(1, 2), state=1, actions=1)
    >>> twin = Twin(layout, 3, 7)                 # the inputs of scale 2
    >>> twin.n, twin.index.tolist()
    (13, [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6, 7, 8])
"""

from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from attention.layout import Layout, LayoutError


@dataclass(frozen=True)
class Twin:
    """``layout`` with the tokens ``[start, stop)`` copied right after ``stop`` (see module)."""

    layout: Layout
    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop <= self.layout.n:
            raise LayoutError(
                f"twin range: expected 0 <= start < stop <= {self.layout.n}, "
                f"got [{self.start}, {self.stop})"
            )
        experts = set(self.layout.expert_ids[self.start : self.stop].tolist())
        if len(experts) != 1:  # the twin then extends that expert's contiguous run
            raise LayoutError(
                f"twin range [{self.start}, {self.stop}): expected the tokens of one expert"
            )
        blocks = self.layout.block_ids
        cuts_start = self.start > 0 and blocks[self.start] == blocks[self.start - 1]
        cuts_stop = self.stop < self.layout.n and blocks[self.stop] == blocks[self.stop - 1]
        if cuts_start or cuts_stop:
            raise LayoutError(
                f"twin range [{self.start}, {self.stop}): must start and end at block boundaries"
            )

    @property
    def length(self) -> int:
        """Tokens in the range (and in its twin)."""
        return self.stop - self.start

    @property
    def n(self) -> int:
        """Tokens in the twinned sequence."""
        return self.layout.n + self.length

    @property
    def twin(self) -> slice:
        """Positions of the twin in the twinned sequence."""
        return slice(self.stop, self.stop + self.length)

    @cached_property
    def index(self) -> Int[Tensor, " n"]:
        """Layout position of each token of the twinned sequence."""
        n = self.layout.n
        return torch.cat(
            [
                torch.arange(self.stop),
                torch.arange(self.start, self.stop),
                torch.arange(self.stop, n),
            ]
        )

    @cached_property
    def in_twin(self) -> Bool[Tensor, " n"]:
        flags = torch.zeros(self.n, dtype=torch.bool)
        flags[self.twin] = True
        return flags

    @cached_property
    def in_range(self) -> Bool[Tensor, " n"]:
        flags = torch.zeros(self.n, dtype=torch.bool)
        flags[self.start : self.stop] = True
        return flags

    def valid(self, valid: Bool[Tensor, "b m"] | None) -> Bool[Tensor, "b n"] | None:
        """The layout's padding mask [b, layout.n] carried over to the twinned sequence."""
        if valid is None:
            return None
        self.layout.check_valid(valid)
        return valid[:, self.index.to(valid.device)]

    def mask(
        self,
        valid: Bool[Tensor, "b m"] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> Bool[Tensor, "*b n n"]:
        """Boolean mask of the twinned sequence, True = may attend (see the module docstring)."""
        device = valid.device if valid is not None and device is None else device
        index = self.index.to(device)
        base = self.layout.mask(valid, device=device)[..., index, :][..., :, index]
        twin, orig = self.in_twin.to(device), self.in_range.to(device)
        hidden = (twin.unsqueeze(0) & ~twin.unsqueeze(1)) | (twin.unsqueeze(1) & orig.unsqueeze(0))
        return base & ~hidden

    def positions(self, valid: Bool[Tensor, "b m"] | None = None) -> Int[Tensor, "*b n"]:
        """RoPE positions: each token's layout position (``Layout.positions``) via ``index``."""
        positions = self.layout.positions(valid)
        return positions[..., self.index.to(positions.device)]
