"""The next-scale sampling loop, KV-cached or over the full sequence (DESIGN.md s3, inference).

Cached: one network call runs the context + SOS and fills the cache, then each scale's inputs
(from the tokenizer, given the scales sampled so far) are one call that appends to the cache.
Block causality then comes from the cache order; the mask passed along is the full layout's rows
for the step (it also carries the context's padding). Uncached: every scale reruns the whole
growing sequence under the full block-causal mask, the reference the cached loop must match.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from attention import Layout
from foresight.network import TokenNetwork
from foresight.sampling import sample_tokens, token_uniforms
from foresight.scales import IncrementalScaleTokenizer, ScaleTokenizer

if TYPE_CHECKING:  # the generator imports this module; the loop only calls its methods
    from foresight.generator import NextScaleGenerator


@dataclass
class GenerationOutput:
    """Sampled token pyramid (K tensors [b, s_k^2]) and, when asked, the decoded image."""

    tokens: list[Tensor]
    image: Tensor | None = None


def step_inputs(
    layout: Layout,
    valid: Bool[Tensor, "b n"] | None,
    start: int,
    stop: int,
    device: torch.device,
) -> tuple[Bool[Tensor, "#b nq nk"], Int[Tensor, "#b nq"]]:
    """Mask [#b, stop - start, stop] and positions [#b, stop - start] of the queries
    [start, stop) against the keys [0, stop): exactly the rows a full pass sees."""
    mask = layout.mask(valid, queries=slice(start, stop), device=device)[..., :stop]
    positions = layout.positions(valid).to(device)[..., start:stop]
    if valid is None:  # shared by the batch: give it the protocol's broadcast batch axis
        mask, positions = mask.unsqueeze(0), positions.unsqueeze(0)
    return mask, positions


def sample_scales(
    model: "NextScaleGenerator",
    network: TokenNetwork,
    context: Tensor,
    tokenizer: ScaleTokenizer,
    num_scales: int,
    context_valid: Tensor | None,
    cfg_scale: float,
    use_cache: bool,
    draw: Callable[[Tensor], Tensor],
) -> list[Int[Tensor, "b _"]]:
    """Tokens of the first ``num_scales`` scales; ``draw`` turns logits [b, n, v] into tokens.

    Arguments are validated by `NextScaleGenerator.generate`, the public entry point. The loop
    itself reads nothing back from the device (no host sync). An `IncrementalScaleTokenizer`
    keeps the running f_hat and adds one scale per step, told to skip its code range check
    (a host read): the drawn codes are in range by construction. Any other tokenizer rebuilds
    f_hat from all scales so far through ``teacher_forcing_inputs`` (which may validate, and
    sync, on its own).
    """
    counts = model.config.token_counts
    guided = cfg_scale != 1.0
    if guided:  # conditional rows first, unconditional (null context) rows second
        context = torch.cat([context, model.null_context_like(context)])
        if context_valid is not None:
            context_valid = torch.cat([context_valid, context_valid])
    batch, n_c, device = context.shape[0], context.shape[1], context.device
    layout = model.layout(n_c, num_scales)
    valid = model.sequence_valid(context_valid, layout.n)
    cache = None
    if use_cache:
        cache = network.new_cache(batch, layout.n, device=device, dtype=context.dtype)
    sequence = context[:, :0]  # the uncached loop's growing token sequence
    no_inputs = context.new_zeros(batch, 0, model.config.latent_dim)
    step = torch.cat([context, model.embed_scales(context, no_inputs, context_valid)], dim=1)
    incremental = isinstance(tokenizer, IncrementalScaleTokenizer)
    start, tokens, f_hat = 0, [], None
    for k in range(num_scales):
        stop = n_c + model.tokens_upto(k + 1)
        if use_cache:
            mask, positions = step_inputs(layout, valid, start, stop, device)
            hidden = network(step, mask, positions, cache)
        else:
            sequence = torch.cat([sequence, step], dim=1)
            mask, positions = step_inputs(layout, valid, 0, stop, device)
            hidden = network(sequence, mask, positions, None)
        logits = model.head(hidden[:, -counts[k] :]).float()
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + cfg_scale * (cond - uncond)
        tokens.append(draw(logits))
        if k + 1 == num_scales:
            break
        if incremental:
            f_hat, nxt = tokenizer.next_scale_inputs(f_hat, tokens[k], k, check=False)
        else:
            # The tokenizer returns the inputs of scales 2..k+2; this step needs the last one's.
            nxt = tokenizer.teacher_forcing_inputs(tokens)[:, -counts[k + 1] :]
        if guided:
            nxt = torch.cat([nxt, nxt])
        step = model.embed_scales(context, nxt, context_valid, first_scale=k + 1)
        start = stop
    return tokens


def scale_draws(
    counts: Sequence[int],
    batch: int,
    generator: torch.Generator | None,
    uniforms: Float[Tensor, "b n"] | None,
    sampling: dict,
    device: torch.device,
) -> Callable[[Tensor], Tensor]:
    """The ``draw`` of `sample_scales`: scale k's logits -> tokens (`sample_tokens` with the
    ``sampling`` settings), each scale reading its columns of one uniform per token.

    The uniforms are ``uniforms`` (a training step's rows of its global batch's draws), else
    drawn with ``generator`` for all scales at once, before the first (`token_uniforms`), as a
    training step draws them: the same generator state gives the same foresight in training
    and at inference."""
    n = sum(counts)
    if uniforms is not None and uniforms.shape != (batch, n):
        raise ValueError(
            f"uniforms: expected [{batch}, {n}] (one per token of the {len(counts)} scales), got"
            f" {list(uniforms.shape)}"
        )
    if uniforms is None and sampling["temperature"] > 0:
        uniforms = token_uniforms(batch, n, generator, device)
    columns = iter([None] * len(counts) if uniforms is None else uniforms.split(list(counts), 1))
    return lambda logits: sample_tokens(logits, generator, uniforms=next(columns), **sampling)
