"""What the next-scale generator needs from a scale schedule and from its tokenizer.

The generator predicts a token pyramid: K index tensors [b, s_k^2], scale 1 being the 1 x 1 SOS
scale (DESIGN.md s3). At generation time it needs the tokenizer only to turn the scales sampled so
far into the next scale's inputs and, when asked, into an image; `MultiScaleVQVAE` fits
`ScaleTokenizer` as it is.
"""

import itertools
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor


@runtime_checkable
class ScaleTokenizer(Protocol):
    """A multi-scale tokenizer seen from the generator (e.g. `MultiScaleVQVAE`)."""

    @property
    def scales(self) -> tuple[int, ...]: ...

    def teacher_forcing_inputs(self, indices: list[Int[Tensor, "b _"]]) -> Float[Tensor, "b n z"]:
        """Inputs of scales 2..m+1 from the tokens of scales 1..m."""
        ...

    def decode(self, indices: list[Int[Tensor, "b _"]]) -> Float[Tensor, "b ch H W"]:
        """Image from the tokens of the first m scales."""
        ...


def check_generator_scales(scales: tuple[int, ...]) -> None:
    """Raise unless ``scales`` starts at the 1 x 1 SOS scale and strictly increases."""
    if not scales or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in scales):
        raise ValueError(f"scales: expected a non-empty tuple of positive ints, got {scales}")
    if scales[0] != 1:
        raise ValueError(f"scales: the first scale is the 1x1 SOS scale, expected 1, got {scales}")
    if any(b <= a for a, b in itertools.pairwise(scales)):
        raise ValueError(f"scales: expected strictly increasing sizes, got {scales}")


def check_pyramid(
    indices: list[Tensor], scales: tuple[int, ...], vocab_size: int, name: str = "tokens"
) -> None:
    """Raise unless ``indices`` is the token pyramid of the first m >= 1 of ``scales``."""
    if not 1 <= len(indices) <= len(scales):
        raise ValueError(f"{name}: expected 1..{len(scales)} scales, got {len(indices)}")
    batch = indices[0].shape[0] if indices[0].ndim else None
    for k, (t, s) in enumerate(zip(indices, scales, strict=False)):
        if t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name}[{k}]: expected an integer tensor, got {t.dtype}")
        if t.ndim != 2 or t.shape != (batch, s * s):
            raise ValueError(
                f"{name}[{k}]: expected [{batch}, {s * s}] (scale {s}x{s}), got {list(t.shape)}"
            )
        if int(t.min()) < 0 or int(t.max()) >= vocab_size:
            raise ValueError(
                f"{name}[{k}]: expected codes in [0, {vocab_size}), "
                f"got [{int(t.min())}, {int(t.max())}]"
            )
