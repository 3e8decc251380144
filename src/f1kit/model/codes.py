"""Tokenizer codes: the frozen tokenizer's view of frames, for history and foresight (DESIGN.md s3).

The Generation expert never sees pixels. A frame of the generation camera becomes its whole token
pyramid (scales concatenated, ``N = sum_k s_k^2`` codes) once, by the frozen tokenizer; the
history tokens are the teacher-forcing inputs of each history frame's scales collapsed across time
by the `foresight.TemporalAggregator`; the foresight targets are a future frame's first K scales.
Because the tokenizer is frozen, codes can be computed once per dataset frame (the recipes do) or
once per env step (`F1Policy` does) and passed as ``history_codes`` / ``foresight_codes``.
"""

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from foresight import MultiScaleVQVAE

if TYPE_CHECKING:  # f1.py imports this module; these functions only read the model
    from f1kit.model.f1 import F1


def tokenizer(model: "F1") -> MultiScaleVQVAE:
    """The model's frozen tokenizer (No-Gen models have none: a clear error)."""
    if model.tokenizer is None or model.config.generation is None:
        raise ValueError("this No-Gen model has no tokenizer (generation: null)")
    return model.tokenizer


def tokenizer_images(model: "F1", frames: Shaped[Tensor, "b 3 H W"]) -> Float[Tensor, "b 3 S S"]:
    """uint8 frames -> [-1, 1] floats at the tokenizer's size (resized when different)."""
    vq = tokenizer(model)
    size = vq.config.image_size
    x = frames.float() / 127.5 - 1.0 if frames.dtype == torch.uint8 else frames.float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x.to(next(vq.parameters()).dtype)


def frame_codes(model: "F1", frames: Shaped[Tensor, "b v 3 H W"]) -> Int[Tensor, "b N"]:
    """The generation camera's frames -> their whole token pyramid, scales concatenated."""
    vq, gen = tokenizer(model), model.config.generation
    assert gen is not None  # tokenizer() checked it
    if frames.ndim != 5:
        raise ValueError(f"frames: expected [b, v, 3, H, W], got {list(frames.shape)}")
    if gen.camera >= frames.shape[1]:
        raise ValueError(
            f"generation.camera: index {gen.camera} but the batch has {frames.shape[1]} cameras"
        )
    with torch.no_grad():
        return torch.cat(vq.encode(tokenizer_images(model, frames[:, gen.camera])), dim=1)


def split_codes(model: "F1", codes: Int[Tensor, "*b N"]) -> list[Int[Tensor, "*b _"]]:
    """Concatenated pyramid codes -> one tensor per scale."""
    scales = tokenizer(model).scales
    counts = [s * s for s in scales]
    if codes.shape[-1] != sum(counts):
        raise ValueError(
            f"codes: expected {sum(counts)} tokens per frame (scales {scales}), "
            f"got {codes.shape[-1]}"
        )
    return list(codes.long().split(counts, dim=-1))


def history_tokens(
    model: "F1", codes: Int[Tensor, "b t N"], *, check: bool = True
) -> Float[Tensor, "b n d"]:
    """History frames' codes (oldest first) -> aggregated history tokens (DESIGN.md s3).

    Each frame's teacher-forcing inputs (f_hat after scales 1..k-1, at scale k's size, for every
    scale but the first) are one token sequence; the aggregator collapses the t frames per token.
    check: refuse codes outside the vocabulary (one host read); False for codes this model's
        tokenizer made (`frame_codes`), in range by construction.
    """
    vq, gen = tokenizer(model), model.config.generation
    assert gen is not None and model.aggregator is not None
    if codes.ndim != 3 or codes.shape[1] != gen.history:
        raise ValueError(
            f"history: expected {gen.history} frames per sample, got {list(codes.shape)}"
        )
    flat = rearrange(codes, "b t N -> (b t) N")
    with torch.no_grad():
        inputs = vq.teacher_forcing_inputs(split_codes(model, flat)[:-1], check=check)
    inputs = rearrange(inputs, "(b t) n z -> b t n z", b=codes.shape[0])
    return model.aggregator(inputs)


def scale_inputs(
    model: "F1", scales: list[Int[Tensor, "b _"]], dtype: torch.dtype
) -> Float[Tensor, "b n z"]:
    """Teacher-forcing inputs of scales 2..K built from the K ``scales`` of codes given (the
    ground truth's for the cross-entropy, the model's own draws for the actions)."""
    vq = tokenizer(model)
    if len(scales) < 2:
        return torch.zeros(
            scales[0].shape[0], 0, vq.config.latent_dim, dtype=dtype, device=scales[0].device
        )
    return vq.teacher_forcing_inputs(scales[:-1]).to(dtype)


def batch_codes(model: "F1", batch: dict, key: str) -> Int[Tensor, "..."]:
    """``batch[key + '_codes']`` when precomputed, else the codes of ``batch[key]`` frames
    (history [b, t, v, 3, H, W] -> [b, t, N]; foresight [b, v, 3, H, W] -> [b, N])."""
    if f"{key}_codes" in batch:
        return batch[f"{key}_codes"]
    if key not in batch:
        raise ValueError(f"batch: missing {key!r} (or precomputed {key + '_codes'!r})")
    frames = batch[key]
    if key == "history":
        if frames.ndim != 6:
            raise ValueError(f"history: expected [b, t, v, 3, H, W], got {list(frames.shape)}")
        codes = frame_codes(model, rearrange(frames, "b t v c H W -> (b t) v c H W"))
        return rearrange(codes, "(b t) N -> b t N", b=frames.shape[0])
    return frame_codes(model, frames)
