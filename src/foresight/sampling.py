"""Token sampling from logits: temperature, top-k, top-p (nucleus), seeded (DESIGN.md s3).

F1 samples its foresight with top-k 900, top-p 0.95, temperature 1. Filtering keeps, per row,
the k most likely tokens and then the smallest set of those whose probability mass reaches p
(the most likely token always survives); the rest get probability zero. Temperature 0 means
greedy decoding (argmax, no random draw).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> sample_tokens(torch.randn(2, 5, 10), g, top_k=3, top_p=0.9).shape
    torch.Size([2, 5])
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor


def check_sampling(top_k: int | None, top_p: float | None, temperature: float) -> None:
    """Raise a ValueError naming the bad sampling setting."""
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: expected None or an int >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: expected None or 0 < top_p <= 1, got {top_p!r}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0 (0 = greedy), got {temperature!r}")


def filter_logits(
    logits: Float[Tensor, "*b v"], top_k: int | None = None, top_p: float | None = None
) -> Float[Tensor, "*b v"]:
    """Set every logit outside the top-k / top-p set to -inf (see the module docstring)."""
    check_sampling(top_k, top_p, 1.0)
    v = logits.shape[-1]
    if top_k is not None and top_k < v:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.float().softmax(dim=-1)
        # Drop a token when the mass of the tokens strictly before it already reaches p.
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def token_uniforms(
    b: int, n: int, generator: torch.Generator | None, device: torch.device | str | None = None
) -> Float[Tensor, "b n"]:
    """The uniforms of ``n`` tokens for each of ``b`` rows, drawn token-major: the draws of the
    first m tokens are the same whatever ``n`` (so the first scales of a longer generation
    repeat a shorter one's, seed for seed). On ``generator``'s device when one is given."""
    on = device if generator is None else generator.device
    return torch.rand(n, b, generator=generator, device=on).T


def sample_tokens(
    logits: Float[Tensor, "b n v"],
    generator: torch.Generator | None,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    uniforms: Float[Tensor, "b n"] | None = None,
) -> Int[Tensor, "b n"]:
    """One token per row from softmax(filter(logits) / temperature), by inverse CDF.

    Each row takes one uniform u in [0, 1) (``uniforms``, else drawn with ``generator``) and
    returns the first token whose cumulative probability exceeds u times the row's total. One
    number per token, not one per vocabulary entry (``torch.multinomial`` draws a whole row), is
    what lets a training step draw a global batch's uniforms on every rank and keep its own rows
    (`f1kit.global_batch`). Tokens of probability zero are never returned; a row without a
    finite positive mass (NaN or infinite logits) returns v, an out-of-range code.
    """
    check_sampling(top_k, top_p, temperature)
    if temperature == 0:
        return logits.argmax(dim=-1)
    b, n, v = logits.shape
    probs = (filter_logits(logits, top_k, top_p).float() / temperature).softmax(dim=-1)
    if uniforms is None:
        uniforms = token_uniforms(b, n, generator, logits.device)
    elif uniforms.shape != (b, n):
        raise ValueError(f"uniforms: expected shape {[b, n]}, got {list(uniforms.shape)}")
    kept = probs > 0
    # A filtered token's cumulative mass is its predecessor's, exactly (a parallel scan may add
    # its zero in another order, one ulp apart), so the first entry above u * total is never one.
    cdf = torch.where(kept, probs.cumsum(dim=-1), 0.0).cummax(dim=-1).values
    total = cdf[..., -1]
    point = (uniforms.to(device=cdf.device, dtype=cdf.dtype) * total).contiguous()
    drawn = torch.searchsorted(cdf, point.unsqueeze(-1), right=True).squeeze(-1)
    # u * total can round up to the total, past every entry; the last token of positive
    # probability is then the right one (trailing entries may be filtered to zero).
    last = torch.where(kept, torch.arange(v, device=probs.device), 0).amax(dim=-1)
    drawn = torch.minimum(drawn, last)
    # NaN or infinite logits (a diverged model) leave no finite positive mass: the row gets the
    # out-of-range code v, which the next lookup refuses, instead of a plausible token (checking
    # here would read the device from the host: inference never does, `f1kit.host_reads`).
    return torch.where(torch.isfinite(total) & (total > 0), drawn, v)
