"""What the next-scale generator needs from a scale schedule and from its tokenizer.

The generator predicts a token pyramid: K index tensors [b, s_k^2], scale 1 being the 1 x 1 SOS
scale (DESIGN.md s3). At generation time it needs the tokenizer only to turn the scales sampled so
far into the next scale's inputs and, when asked, into an image; `MultiScaleVQVAE` fits
`ScaleTokenizer` as it is, and `IncrementalScaleTokenizer` (one scale's inputs per step).
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


@runtime_checkable
class IncrementalScaleTokenizer(ScaleTokenizer, Protocol):
    """A `ScaleTokenizer` that also builds the next scale's inputs one scale at a time.

    Generation then keeps the running f_hat and adds only the newest scale (O(K) tokenizer work
    for K scales) instead of rebuilding it from all scales each step (O(K^2)); tokenizers
    without it still work through ``teacher_forcing_inputs``.
    """

    def next_scale_inputs(
        self,
        f_hat: Float[Tensor, "b z hl wl"] | None,
        indices: Int[Tensor, "b n"],
        k: int,
        *,
        check: bool = True,
    ) -> tuple[Float[Tensor, "b z hl wl"], Float[Tensor, "b m z"]]:
        """(f_hat after scale k, inputs of scale k+1 [b, s_{k+1}^2, z]) from the f_hat after
        scale k-1 (None for k = 0) and scale k's codes [b, s_k^2]; bit for bit the matching
        slice of ``teacher_forcing_inputs``. check=False: the caller validated the codes."""
        ...


def check_generator_scales(scales: tuple[int, ...]) -> None:
    """Raise unless ``scales`` starts at the 1 x 1 SOS scale and strictly increases."""
    if not scales or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in scales):
        raise ValueError(f"scales: expected a non-empty tuple of positive ints, got {scales}")
    if scales[0] != 1:
        raise ValueError(f"scales: the first scale is the 1x1 SOS scale, expected 1, got {scales}")
    if any(b <= a for a, b in itertools.pairwise(scales)):
        raise ValueError(f"scales: expected strictly increasing sizes, got {scales}")


def check_code_range(indices: list[Tensor], vocab_size: int, name: str = "tokens[{k}]") -> None:
    """Raise unless every code of ``indices`` lies in [0, vocab_size).

    One host read for the whole pyramid (each scale's min and max stacked, then one transfer),
    not two per scale: validation belongs at API boundaries, and there it should sync once.
    ``name`` may hold ``{k}``, replaced by the offending scale's index.
    """
    present = [(k, t) for k, t in enumerate(indices) if t.numel()]
    if not present:
        return
    device = present[0][1].device
    bounds = [torch.stack(t.aminmax()).long().to(device) for _, t in present]
    bounds = torch.stack(bounds).tolist()
    for (k, _), (lo, hi) in zip(present, bounds, strict=True):
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name.format(k=k)}: expected codes in [0, {vocab_size}), got range [{lo}, {hi}]"
            )


def check_pyramid(
    indices: list[Tensor],
    scales: tuple[int, ...],
    vocab_size: int,
    name: str = "tokens",
    *,
    check_codes: bool = True,
) -> None:
    """Raise unless ``indices`` is the token pyramid of the first m >= 1 of ``scales``.

    The code range check reads the codes on the host: one device sync for the whole pyramid
    (`check_code_range`), skipped with ``check_codes=False`` when the caller validated them.
    """
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
    if check_codes:
        check_code_range(indices, vocab_size, name + "[{k}]")
