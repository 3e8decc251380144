"""The MoT trunk bound to one batch's UGA layout: the networks the blocks' schemes run on.

`foresight.NextScaleGenerator` and `flow.FlowMatchingHead` each own their math and take the
network that mixes their tokens as an argument (DESIGN.md s3, s4). Inside F1 that network is one
expert's slice of the shared MoT stack, attending to everything before it in the joint sequence
``[prefix (U) | history, SOS, scales (G) | state, actions (A)]``. The classes here are those
slices, bound to the batch's layout and padding:

    GenerationExpert   a `foresight.TokenNetwork`: the generator's [history | SOS | scales]
                       tokens run as the G slice; its first call also runs the U prefix
    ActionExpert       a `flow.VelocityNetwork`: [state | noisy chunk] as the A slice, reading the
                       KV cache of prefix + foresight without writing to it (every flow step
                       sees the same cache: nothing is copied)
    JointPass          a `flow.VelocityNetwork` for training: U + G + A in ONE forward under the
                       full mask (or a `attention.Twin` of it), keeping the G outputs for the
                       generation loss

Models without a state token (``action.state_dim: null``, pi0.5) run the noisy chunk alone; an
Action expert with adaptive norms (pi0.5) gets the head's time vector ``cond`` as its
conditioning (``conds``), the others refuse one.

Rows and RoPE positions always come from the F1 layout (`mot.step_inputs`), so a cached step
sees exactly what the same rows of an uncached full pass see. The mask and positions the
generator passes describe its own view (no U prefix) and are ignored: its layout is the G part of
the F1 layout, block for block.
"""

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from attention import ACTION, GENERATION, UNDERSTANDING, Layout, Twin
from f1kit.model.engine import Engine
from mot import KVCache, MoTStack, check_step_end


@dataclass
class BoundTrunk:
    """The trunk, one batch's layout and its padding (valid [b, n]; None = no padding).

    engine: runs the trunk and keeps its KV caches (`engine.Engine`); None = the plain trunk and
        a fresh cache per call. The layout's mask and RoPE positions are built once, on the
        first step's device, and every step reads its rows of them (tensor slicing only).
    """

    trunk: MoTStack
    layout: Layout
    valid: Bool[Tensor, "b n"] | None
    engine: Engine | None = None
    _tables: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine.trunk is not self.trunk:
            raise ValueError(
                "engine: it runs another model's trunk (an Engine is built on one model's "
                "trunk: Engine(model.trunk))"
            )

    def tables(self, device: torch.device) -> tuple[Bool[Tensor, "#b n n"], Int[Tensor, "#b n"]]:
        """The whole layout's mask [#b, n, n] and positions [#b, n] on ``device`` (built once)."""
        if self._tables is None or self._tables[0].device != device:
            valid = None if self.valid is None else self.valid.to(device)
            mask = self.layout.mask(valid, device=device)
            positions = self.layout.positions(valid).to(device)
            if valid is None:  # shared by the batch: add the broadcast batch axis
                mask, positions = mask.unsqueeze(0), positions.unsqueeze(0)
            self._tables = (mask, positions)
        return self._tables

    def run(
        self,
        parts: dict[str, Tensor],
        queries: slice,
        cache: KVCache | None = None,
        *,
        update_cache: bool = True,
        conds: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Run the layout rows ``queries`` (the concatenation of ``parts`` in expert order);
        ``conds``: the conditioning vectors of adaptive-norm experts (`mot.MoTStack`)."""
        start, stop, step = queries.indices(self.layout.n)
        if step != 1 or stop <= start:
            raise ValueError(f"queries: expected a non-empty contiguous slice, got {queries}")
        check_step_end(self.layout, stop)
        mask, positions = self.tables(next(iter(parts.values())).device)
        return self.run_with(
            parts,
            mask[:, start:stop, :stop],
            positions[:, start:stop],
            cache,
            update_cache=update_cache,
            conds=conds,
        )

    def run_with(
        self,
        parts: dict[str, Tensor],
        mask: Bool[Tensor, "#b nq nk"],
        positions: Int[Tensor, "#b nq"],
        cache: KVCache | None = None,
        *,
        update_cache: bool = True,
        conds: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Run ``parts`` (concatenated in expert order) under an explicit mask and positions."""
        names = self.trunk.config.expert_names
        missing = sorted(set(parts) - set(names))
        if missing:
            raise ValueError(f"parts: experts {missing} are not in the trunk {names}")
        xs = [parts.get(name) for name in names]
        run = self.trunk if self.engine is None else self.engine
        if self.engine is not None and cache is not None:
            self.engine.check_owner(cache, self)
        outs = run(xs, positions, mask, cache=cache, update_cache=update_cache, conds=conds or None)
        return {name: out for name, out in zip(names, outs, strict=True) if name in parts}

    def new_cache(
        self, batch: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """A cache for the whole layout (the read-only action rows need room after the fill);
        the engine's own, rewound, when there is one."""
        if self.engine is None:
            return self.trunk.new_cache(batch, self.layout.n, device=device, dtype=dtype)
        param = next(self.trunk.parameters())
        return self.engine.cache(
            batch,
            self.layout.n,
            device=param.device if device is None else device,
            dtype=param.dtype if dtype is None else dtype,
            owner=self,
        )


class GenerationExpert:
    """The G slice as a `foresight.TokenNetwork`; the first call of a cache also runs U.

    ``prefix`` [b, n_u, d_u]: the Understanding tokens. The cache it makes is kept in
    ``self.cache`` so the action phase can continue from it after the generator returns.
    """

    def __init__(self, bound: BoundTrunk, prefix: Float[Tensor, "b nu du"]) -> None:
        self.bound = bound
        self.prefix = prefix
        self.cache: KVCache | None = None

    def __call__(
        self,
        tokens: Float[Tensor, "b nq d"],
        mask: Bool[Tensor, "#b nq nk"] | None,
        positions: Int[Tensor, "#b nq"],
        cache: KVCache | None = None,
    ) -> Float[Tensor, "b nq d"]:
        n_u = self.prefix.shape[1]
        start = 0 if cache is None else cache.length
        if start == 0:  # the whole G sequence so far, or the cache's first step: U runs too
            parts = {UNDERSTANDING: self.prefix, GENERATION: tokens}
            queries = slice(0, n_u + tokens.shape[1])
        else:
            parts = {GENERATION: tokens}
            queries = slice(start, start + tokens.shape[1])
        return self.bound.run(parts, queries, cache)[GENERATION]

    def new_cache(
        self,
        batch: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        # The generator sizes ``capacity`` for its own tokens; the F1 layout adds the prefix
        # and the action rows, so the cache is sized from the layout instead.
        del capacity
        self.cache = self.bound.new_cache(batch, device=device, dtype=dtype)
        return self.cache


class ActionExpert:
    """The A slice as a `flow.VelocityNetwork` reading (never writing) a filled cache.

    ``context`` from the flow head is the state token [b, 1, d_a] (None without one); the chunk
    follows it. ``cond`` [b, d_a]: the time vector of an adaptive-norm Action expert.
    """

    def __init__(self, bound: BoundTrunk, cache: KVCache) -> None:
        self.bound = bound
        self.cache = cache
        self.start = bound.layout.expert_slice(ACTION).start
        if cache.length != self.start:
            raise ValueError(
                f"cache: holds {cache.length} tokens, the action rows start at {self.start} "
                "(run the prefix and foresight first)"
            )

    def __call__(
        self,
        tokens: Float[Tensor, "b c d"],
        cond: Float[Tensor, "b d"] | None,
        context: Float[Tensor, "b 1 d"] | None,
    ) -> Float[Tensor, "b c d"]:
        x = _action_tokens(self.bound, tokens, context)
        out = self.bound.run(
            {ACTION: x},
            slice(self.start, self.start + x.shape[1]),
            self.cache,
            update_cache=False,
            conds=_conds(self.bound, cond),
        )
        return out[ACTION][:, x.shape[1] - tokens.shape[1] :]


class JointPass:
    """U + G + A in one uncached forward (training); the G outputs land in ``outputs``.

    twin: run the twinned sequence of `attention.Twin` instead of the layout's own (the G part
    then carries the twin's tokens right after its range): the training contract's two views of
    the foresight scales, the drawn ones for the actions and the true ones for the CE.
    """

    def __init__(
        self, bound: BoundTrunk, parts: dict[str, Tensor], twin: Twin | None = None
    ) -> None:
        self.bound, self.parts, self.twin = bound, parts, twin
        self.outputs: dict[str, Tensor] = {}
        if twin is not None:
            if twin.layout is not bound.layout:
                raise ValueError("twin: expected a twin of the bound trunk's own layout")
            device = next(iter(parts.values())).device
            self.mask = twin.mask(bound.valid, device=device)
            self.positions = twin.positions(bound.valid).to(device)
            if bound.valid is None:
                self.mask, self.positions = self.mask.unsqueeze(0), self.positions.unsqueeze(0)

    def __call__(
        self,
        tokens: Float[Tensor, "b c d"],
        cond: Float[Tensor, "b d"] | None,
        context: Float[Tensor, "b 1 d"] | None,
    ) -> Float[Tensor, "b c d"]:
        x = _action_tokens(self.bound, tokens, context)
        parts = {**self.parts, ACTION: x}
        conds = _conds(self.bound, cond)
        if self.twin is None:
            self.outputs = self.bound.run(parts, slice(0, self.bound.layout.n), conds=conds)
        else:
            self.outputs = self.bound.run_with(parts, self.mask, self.positions, conds=conds)
        return self.outputs[ACTION][:, x.shape[1] - tokens.shape[1] :]


def _action_tokens(bound: BoundTrunk, tokens: Tensor, context: Tensor | None) -> Tensor:
    """[state token | chunk], or the chunk alone where the layout has no state row."""
    if "state" not in bound.layout:
        if context is not None:
            raise ValueError(
                f"context: this model has no state token (action.state_dim: null), got "
                f"{list(context.shape)}"
            )
        return tokens
    if context is None or context.shape[1] != 1:
        got = None if context is None else list(context.shape)
        raise ValueError(f"context: expected the state token [b, 1, d], got {got}")
    return torch.cat([context, tokens], dim=1)


def _conds(bound: BoundTrunk, cond: Tensor | None) -> dict[str, Tensor] | None:
    """The Action expert's conditioning: the head's time vector, for adaptive norms only."""
    adaptive = bound.trunk.config.expert(ACTION).norm == "adaptive"
    if adaptive != (cond is not None):
        raise ValueError(
            "cond: an Action expert with adaptive norms takes the flow time as a conditioning "
            "vector (head conditioning 'adanorm') and a plain one takes it through its tokens "
            f"('concat'); the expert's norms are {'adaptive' if adaptive else 'plain'}, the "
            f"head gave cond={'None' if cond is None else list(cond.shape)}"
        )
    return None if cond is None else {ACTION: cond}
