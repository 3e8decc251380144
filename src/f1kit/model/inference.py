"""F1 at inference: prefix -> foresee -> act (arXiv 2509.06951 s3.3; DESIGN.md s3, s4).

    encode_prefix   U tokens (vision + instruction) and, for G models, the history tokens
    foresee         one pass fills the KV cache with [U | history | SOS], then each of the
                    ``model.config.generation.scales`` scales is drawn and its inputs appended
    act             the flow steps: [state | noisy chunk] rows read that cache (never write it)

Models without a state token (``action.state_dim: null``: pi0.5) take ``state=None``: their
state is in the instruction text (`f1kit.model.importers.pi05_prompt`).

The cache that ``act`` reads holds exactly the rows the Action expert attends to in training
(`f1kit.model.training`, docs/contract.md): the same U and history tokens, the SOS, and the inputs
built from the scales the model drew itself, at the same RoPE positions. The training pass draws
its foresight by calling ``foresee`` itself.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor

from attention import UNDERSTANDING
from f1kit.model.codes import history_tokens, tokenizer
from f1kit.model.engine import Engine
from f1kit.model.trunk import ActionExpert, BoundTrunk, GenerationExpert
from flow import RTCGuide
from mot import KVCache

if TYPE_CHECKING:  # f1.py imports this module
    from f1kit.model.f1 import F1


@dataclass
class Prefix:
    """The Understanding tokens of a batch and (G models) its history tokens."""

    tokens: Float[Tensor, "b nu du"]
    valid: Bool[Tensor, "b nu"]
    history: Float[Tensor, "b nh dg"] | None

    def detach(self) -> "Prefix":
        history = None if self.history is None else self.history.detach()
        return Prefix(self.tokens.detach(), self.valid, history)


@dataclass
class Prediction:
    """A predicted chunk (data-normalised units, padded action_dim) and its foresight tokens."""

    actions: Float[Tensor, "b c a"]
    foresight: list[Int[Tensor, "b _"]] | None


def encode_prefix(
    model: "F1",
    images: Shaped[Tensor, "b v 3 H W"],
    texts: object,
    history_codes: Int[Tensor, "b t N"] | None = None,
    *,
    check_codes: bool = True,
) -> Prefix:
    """Understanding tokens and (G models) the aggregated history tokens.

    texts: the b instructions, as strings or as the Understanding's cached text encoding.
    check_codes: refuse history codes outside the tokenizer's vocabulary, at the cost of one
        host read; False for codes this model's tokenizer made (`F1.frame_codes`: `F1Policy`).
    """
    tokens, valid = model.understanding(images, texts)
    history = None
    if model.generator is not None:
        if history_codes is None:
            raise ValueError(
                "history_codes: this F1 model has a Generation expert; pass the history "
                "frames' codes (F1.batch_codes / F1.frame_codes)"
            )
        history = history_tokens(model, history_codes, check=check_codes).to(tokens.dtype)
    return Prefix(tokens, valid, history)


@torch.no_grad()
def start(
    model: "F1", prefix: Prefix, *, engine: Engine | None = None
) -> tuple[BoundTrunk, KVCache]:
    """No-Gen models: the prefix pass filling a fresh cache (G models: see ``foresee``)."""
    bound = model.bind(prefix, 0, engine=engine)
    cache = bound.new_cache(prefix.tokens.shape[0], dtype=prefix.tokens.dtype)
    bound.run({UNDERSTANDING: prefix.tokens}, bound.layout.slice("prefix"), cache)
    return bound, cache


@torch.no_grad()
def foresee(
    model: "F1",
    prefix: Prefix,
    *,
    generator: torch.Generator | int | None = None,
    uniforms: Float[Tensor, "b n"] | None = None,
    engine: Engine | None = None,
) -> tuple[list[Int[Tensor, "b _"]], BoundTrunk, KVCache]:
    """Prefix pass + the model's foresight scales, all appended to one KV cache.

    Returns the drawn codes of each scale, the bound trunk and the filled cache. Scale K's codes
    have no input slot (as in training): the actions read the hidden states that drew them.
    uniforms: the sampler's draws themselves, one per token (`NextScaleGenerator.generate`).
    """
    gen = model.config.generation
    if model.generator is None or gen is None or prefix.history is None:
        raise ValueError("foresee: this No-Gen model has no Generation expert")
    net = GenerationExpert(model.bind(prefix, gen.scales, engine=engine), prefix.tokens)
    tokens = model.generator.generate(
        prefix.history,
        tokenizer(model),
        num_scales=gen.scales,
        top_k=gen.top_k,
        top_p=gen.top_p,
        temperature=gen.temperature,
        generator=generator,
        uniforms=uniforms,
        network=net,
    ).tokens
    assert net.cache is not None  # generate() made it through net.new_cache
    return tokens, net.bound, net.cache


@torch.no_grad()
def act(
    model: "F1",
    bound: BoundTrunk,
    cache: KVCache,
    state: Float[Tensor, "b s"] | None,
    *,
    generator: torch.Generator | None = None,
    noise: Float[Tensor, "b c a"] | None = None,
    guide: RTCGuide | None = None,
) -> Float[Tensor, "b c a"]:
    """Integrate the flow from noise (tau = 0) to a chunk, every step reading the cache.

    guide: real-time chunking (`flow.rtc`): the previous chunk's remaining actions, in the
        model's (data-normalised) units, softly inpainted into this chunk's first steps; each
        flow step then also takes one backward pass through the action rows (not the cache).
    """
    head = model.action_head
    check_state(model, state)
    return head.sample(
        cache.k.shape[1] if state is None else state.shape[0],
        state=None if state is None else state.to(head.action_out.weight.dtype),
        generator=generator,
        noise=noise,
        network=ActionExpert(bound, cache),
        guide=guide,
    ).sample


@torch.no_grad()
def predict(
    model: "F1",
    images: Shaped[Tensor, "b v 3 H W"],
    texts: Sequence[str] | object,
    state: Float[Tensor, "b s"] | None,
    history_codes: Int[Tensor, "b t N"] | None = None,
    *,
    generator: torch.Generator | None = None,
    noise: Float[Tensor, "b c a"] | None = None,
    engine: Engine | None = None,
    check_codes: bool = True,
    guide: RTCGuide | None = None,
) -> Prediction:
    """One chunk: prefix pass, the foresight scales (G models), the action flow.

    engine: runs the trunk (`engine.Engine`: compiled or eager, KV caches kept across calls);
        None = eager with fresh caches. Either way the steps read no device tensor on the host.
    check_codes: see `encode_prefix` (the one host read of a call, when True).
    guide: real-time chunking of the action flow (see `act`).
    """
    check_state(model, state)
    if engine is not None:
        engine.new_chunk()
    prefix = encode_prefix(model, images, texts, history_codes, check_codes=check_codes)
    foresight = None
    if model.generator is None:
        bound, cache = start(model, prefix, engine=engine)
    else:
        foresight, bound, cache = foresee(model, prefix, generator=generator, engine=engine)
    actions = act(model, bound, cache, state, generator=generator, noise=noise, guide=guide)
    return Prediction(actions, foresight)


def check_state(model: "F1", state: Tensor | None) -> None:
    """A state for models with a state token; None for those without (pi0.5's is in the text)."""
    has_token = model.config.action.state_dim is not None
    if has_token and state is None:
        raise ValueError("state: this model has a state token (action.state_dim); got None")
    if not has_token and state is not None:
        raise ValueError(
            "state: this model has no state token (action.state_dim: null, as pi0.5): its state "
            "is part of the instruction text (importers.pi05_prompt); pass state=None"
        )
