"""The MoT trunk: ``depth`` MoT layers, one shared RoPE, a final RMSNorm per expert.

Experts with adaptive norms (``ExpertSpec.norm == "adaptive"``) take a conditioning vector per
call (``conds``), used by all their norms, the final one included (whose gate is unused).

Also each expert's parameters (``expert_parameters``), which training stages freeze or group by
expert (DESIGN.md s5: stage I trains the generation expert with the understanding expert frozen;
`f1kit.model.F1.set_trainable` does the freezing for the whole model).

Example:
    >>> from attention import uga_layout
    >>> from mot.config import ExpertSpec, MoTConfig
    >>> from mot.steps import step_inputs
    >>> cfg = MoTConfig((ExpertSpec("understanding", 32, 64), ExpertSpec("generation", 16, 32),
    ...                  ExpertSpec("action", 16, 32)), depth=2, heads=2, kv_heads=1, head_dim=8)
    >>> stack = MoTStack(cfg)
    >>> layout = uga_layout(prefix=4, scales=(1, 2), state=1, actions=3)
    >>> mask, positions = step_inputs(layout)
    >>> xs = [torch.randn(1, n, s.width) for n, s in zip(layout.expert_lengths().values(),
    ...                                                   cfg.experts)]
    >>> [y.shape[1] for y in stack(xs, positions, mask)]
    [4, 5, 4]
"""

from collections.abc import Iterator

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attention import Backend, create_flex_block_mask, dense_mask_mod, open_empty_rows
from mot.cache import KVCache
from mot.config import MoTConfig
from mot.layer import (
    Conds,
    ExpertInputs,
    ExpertOutputs,
    MoTLayer,
    check_conds,
    check_expert_inputs,
    check_mask,
    make_norm,
)
from mot.norm import RMSNorm
from mot.rope import rope_angles


class MoTStack(nn.Module):
    """``depth`` `MoTLayer`s sharing one RoPE; a final RMSNorm per expert."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(MoTLayer(config) for _ in range(config.depth))
        self.final_norms = nn.ModuleDict({s.name: make_norm(s, config) for s in config.experts})
        self.checkpointing = False

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute each layer's activations in the backward instead of keeping them (memory
        for compute: a layer's inputs are kept, its insides are not). Only uncached passes with
        gradients are checkpointed (training); the gradients are the same, bit for bit."""
        self.checkpointing = bool(on)

    def forward(
        self,
        xs: ExpertInputs,
        positions: Int[Tensor, "b nq"] | Int[Tensor, " nq"],
        mask: Bool[Tensor, "#b nq nk"] | Bool[Tensor, "nq nk"] | None,
        *,
        cache: KVCache | None = None,
        update_cache: bool = True,
        backend: Backend | None = None,
        block_mask: object | None = None,
        conds: Conds | None = None,
    ) -> ExpertOutputs:
        """Per-expert token tensors [b, n_i, d_i] in expert order -> per-expert outputs.

        positions: RoPE positions of this call's tokens (``Layout.positions``; `step_inputs`).
        mask: True = may attend, rows = this call's tokens, columns = cached + this call's tokens.
        cache: a `KVCache` from `new_cache`; this call's K/V are written after its fill pointer.
        update_cache: keep them (append: prefix, foresight scales) or not (read-only: the action
            expert's flow steps, which all attend to the same cached prefix + themselves).
        backend: override ``config.backend`` for this call.
        block_mask: a FlexAttention BlockMask of ``mask`` for ``backend="flex"`` (e.g.
            ``Layout.block_mask(valid)`` for an uncached forward); without it each layer builds
            one from the dense mask once per forward (correct, slower to build).
        conds: the conditioning vector [b, d_i] of each adaptive-norm expert with tokens here.
        """
        batch, lengths = check_expert_inputs(self.config, xs)
        conds = check_conds(self.config, lengths, conds)
        nq = sum(lengths)
        if positions.shape[-1] != nq:
            raise ValueError(
                f"positions: expected {nq} entries (one per token), got {positions.shape[-1]}"
            )
        if cache is not None:
            if cache.depth != self.config.depth:
                raise ValueError(f"cache: has {cache.depth} layers, the stack {self.config.depth}")
            cache.check_step(nq, batch)
        past = 0 if cache is None else cache.length
        mask = check_mask(mask, batch, nq, past + nq)
        cos, sin = rope_angles(positions, self.config.head_dim, self.config.rope_base)
        row_has_key = None
        if mask is not None:
            if (backend or self.config.backend) == "flex" and block_mask is None:
                block_mask = self._flex_block_mask(mask, batch)
            mask, row_has_key = open_empty_rows(mask)  # once here, not once per layer
        recompute = self.checkpointing and cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            args = (xs, cos, sin, mask)
            kwargs = dict(
                cache=cache,
                index=i,
                backend=backend,
                block_mask=block_mask,
                conds=conds,
                row_has_key=row_has_key,
            )
            if recompute:
                xs = checkpoint(layer, *args, use_reentrant=False, **kwargs)
            else:
                xs = layer(*args, **kwargs)
        if cache is not None and update_cache:
            cache.advance(nq)
        return [
            x if n == 0 else self._final_norm(spec.name, x, conds)
            for spec, x, n in zip(self.config.experts, xs, lengths, strict=True)
        ]

    def _final_norm(self, name: str, x: Tensor, conds: dict[str, Tensor]) -> Tensor:
        norm = self.final_norms[name]
        if isinstance(norm, RMSNorm):
            return norm(x)
        return norm(x, conds[name])[0]  # the final norm's gate has no branch to gate

    @staticmethod
    def _flex_block_mask(mask: Tensor, batch: int) -> object:
        """One BlockMask for all layers (attend would otherwise build one per layer)."""
        full = mask.expand(batch, -1, -1)
        nq, nk = full.shape[-2:]
        return create_flex_block_mask(dense_mask_mod(full), batch, None, nq, nk, full.device)

    def new_cache(
        self,
        batch: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for ``capacity`` tokens; device/dtype default to the parameters'."""
        param = next(self.parameters())
        return KVCache(
            self.config.depth,
            batch,
            self.config.kv_heads,
            capacity,
            self.config.head_dim,
            device=param.device if device is None else device,
            dtype=param.dtype if dtype is None else dtype,
        )

    # ---- per-expert parameters (training stages freeze or group them) ----------------------

    def expert_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """Every parameter owned by expert ``name`` (all layers and its final norm)."""
        self.config.expert(name)  # raises with the list of experts
        for layer in self.layers:
            yield from layer.experts[name].parameters()
        yield from self.final_norms[name].parameters()
