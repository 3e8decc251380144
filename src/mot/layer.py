"""One Mixture-of-Transformers layer: per-expert weights, ONE joint attention (DESIGN.md s1).

For each expert with tokens in this call (its tokens are one contiguous run, experts in config
order): pre-norm, its own Q/K/V projections (one fused matmul; stored as separate q, k, v
tensors in checkpoints). The Q/K/V of all experts are concatenated along the
sequence, rotated with one shared RoPE, and go through one `attention.attend` call under the
caller's mask (the UGA mask for F1). The output is split back per expert: own output projection
and residual, own post-attention norm + MLP and residual.

    h_i = x_i + O_i(Attn([Q_j N_j x_j]_j, [K_j N_j x_j]_j, [V_j N_j x_j]_j; mask)_i)
    y_i = h_i + MLP_i(M_i h_i)

An expert with adaptive norms (``ExpertSpec.norm == "adaptive"``, pi0.5's action expert) takes
N_i and M_i from its conditioning vector c_i (`mot.AdaptiveRMSNorm`), which also gives a gate per
branch: h_i = x_i + g_i * O_i(...), y_i = h_i + g'_i * MLP_i(...). Plain experts are unchanged.

Experts that have no tokens in a call (e.g. inference steps that only run the action expert)
pass through unchanged and touch none of their parameters.
"""

from collections.abc import Mapping, Sequence

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from attention import Backend, attend
from mot.adaptive_norm import AdaptiveRMSNorm
from mot.cache import KVCache
from mot.config import ExpertSpec, MoTConfig
from mot.mlp import MLP
from mot.norm import RMSNorm
from mot.rope import apply_rope

ExpertInputs = Sequence[Float[Tensor, "b _n _d"] | None]
ExpertOutputs = list[Float[Tensor, "b _n _d"] | None]
Conds = Mapping[str, Float[Tensor, "b _d"]]
"""Conditioning vectors of the adaptive-norm experts, by expert name ([b, width] each)."""


QKV = ("q", "k", "v")
"""The names Q/K/V are stored under: ``<block>.q.weight``, ``.k.weight``, ``.v.weight``."""


class ExpertBlock(nn.Module):
    """One expert's weights in one layer (names follow Gemma's decoder layer).

    Q, K and V are one fused ``qkv`` Linear (rows: Q's heads * e, then K's and V's kv_heads * e
    each), so a forward does one matmul per expert instead of three. The state dict still holds
    them split, as ``q.weight``, ``k.weight``, ``v.weight`` with their own shapes: every
    checkpoint, importer and converted model directory uses those names. ``state_dict()`` gives
    row views of the fused weight (writing into one writes the fused weight), and
    ``load_state_dict`` (strict or not, ``assign`` or not) takes the three and concatenates them
    (so an ``assign`` load copies these three into one tensor instead of keeping file views).
    """

    def __init__(self, spec: ExpertSpec, config: MoTConfig) -> None:
        super().__init__()
        width, e = spec.width, config.head_dim
        self.adaptive = spec.norm == "adaptive"
        self.attn_norm = make_norm(spec, config)
        self.qkv_sizes = (config.heads * e, config.kv_heads * e, config.kv_heads * e)
        self.qkv = nn.Linear(width, sum(self.qkv_sizes), bias=False)
        self.o = nn.Linear(config.heads * e, width, bias=False)
        self.mlp_norm = make_norm(spec, config)
        self.mlp = MLP(width, spec.mlp_width, spec.mlp)
        self.register_state_dict_post_hook(_store_qkv_split)
        self.register_load_state_dict_pre_hook(_load_qkv_split)

    def qkv_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """Q's, K's and V's weights ([out, width] each): views of the fused weight's rows."""
        q, k, v = self.qkv.weight.split(self.qkv_sizes, dim=0)
        return q, k, v


def _store_qkv_split(block: ExpertBlock, state: dict, prefix: str, metadata: object) -> None:
    """State-dict hook: ``qkv.weight`` -> its row views ``q.weight``, ``k.weight``, ``v.weight``,
    in its place (the block's entries are the last ones in ``state``: move those after it)."""
    fused = prefix + "qkv.weight"
    own = []
    for key in reversed(state):
        if not key.startswith(prefix):
            break
        own.append(key)
    later = own[: own.index(fused)][::-1]
    split = state.pop(fused).split(block.qkv_sizes, dim=0)
    moved = [(key, state.pop(key)) for key in later]
    state.update((f"{prefix}{name}.weight", t) for name, t in zip(QKV, split, strict=True))
    state.update(moved)


def _load_qkv_split(
    block: ExpertBlock,
    state: dict,
    prefix: str,
    metadata: object,
    strict: bool,
    missing: list[str],
    unexpected: list[str],
    errors: list[str],
) -> None:
    """Load-state-dict pre-hook: ``q.weight``, ``k.weight``, ``v.weight`` -> ``qkv.weight``.

    A missing or mis-shaped one is reported under its own name, as strict loading reports any
    key; a ``qkv.weight`` given as such is unexpected (the state dict has no such key). Given
    only some of the three (a non-strict load), the fused weight keeps its rows of the others."""
    fused = prefix + "qkv.weight"
    if fused in state:
        unexpected.append(fused)
        del state[fused]
    weight = block.qkv.weight
    parts, given, bad = list(weight.detach().split(block.qkv_sizes, dim=0)), [], False
    for i, name in enumerate(QKV):
        key = f"{prefix}{name}.weight"
        if key not in state:
            missing.append(key)
        elif state[key].shape != parts[i].shape:
            errors.append(
                f"size mismatch for {key}: copying a param with shape {state.pop(key).shape} "
                f"from checkpoint, the shape in current model is {parts[i].shape}."
            )
            bad = True
        else:
            parts[i] = state.pop(key)
            given.append(key)
    if len(given) == len(QKV):
        state[fused] = torch.cat(parts)
    elif given and not bad and weight.is_meta:
        errors.append(
            f"{', '.join(given)}: cannot load part of Q/K/V into a model on the meta device "
            "(they are one fused weight there): give all three"
        )
    elif given and not bad:
        state[fused] = torch.cat([p.to(weight.device, weight.dtype) for p in parts])
    # Nothing (complete) to load: give the fused Linear its own weight, so that what is missing
    # is reported once, under the stored names above, and not again as qkv.weight.
    state.setdefault(fused, weight.detach())


def make_norm(spec: ExpertSpec, config: MoTConfig) -> RMSNorm | AdaptiveRMSNorm:
    """The expert's norm kind; an adaptive norm is conditioned on a vector of its own width."""
    if spec.norm == "adaptive":
        return AdaptiveRMSNorm(spec.width, spec.width, config.norm_eps)
    return RMSNorm(spec.width, config.norm_eps)


def check_conds(
    config: MoTConfig, lengths: Sequence[int], conds: Conds | None
) -> dict[str, Tensor]:
    """Every adaptive expert with tokens has a cond; no cond names a plain or unknown expert."""
    conds = dict(conds or {})
    unknown = sorted(set(conds) - set(config.expert_names))
    if unknown:
        raise ValueError(f"conds: experts {unknown} are not in this stack {config.expert_names}")
    plain = sorted(n for n in conds if config.expert(n).norm != "adaptive")
    if plain:
        raise ValueError(
            f"conds: experts {plain} have plain norms and take no conditioning vector "
            "(only experts with norm='adaptive' do)"
        )
    for spec, n in zip(config.experts, lengths, strict=True):
        if spec.norm == "adaptive" and n > 0 and spec.name not in conds:
            raise ValueError(
                f"conds: expert {spec.name!r} has adaptive norms and tokens in this call; pass "
                f"its conditioning vector as conds[{spec.name!r}] ([b, {spec.width}])"
            )
    return conds


def check_expert_inputs(config: MoTConfig, xs: Sequence[Tensor | None]) -> tuple[int, list[int]]:
    """Batch size and token count per expert; raises ValueError naming the bad input."""
    if len(xs) != len(config.experts):
        raise ValueError(
            f"inputs: expected one entry per expert {config.expert_names} (None or [b, n, d]), "
            f"got {len(xs)}"
        )
    batch, lengths = None, []
    for spec, x in zip(config.experts, xs, strict=True):
        if x is None:
            lengths.append(0)
            continue
        if x.ndim != 3 or x.shape[-1] != spec.width:
            raise ValueError(
                f"inputs[{spec.name!r}]: expected [b, n, {spec.width}], got {list(x.shape)}"
            )
        if batch is not None and x.shape[0] != batch:
            raise ValueError(
                f"inputs[{spec.name!r}]: batch {x.shape[0]} differs from the other experts' {batch}"
            )
        batch = x.shape[0]
        lengths.append(x.shape[1])
    if batch is None or sum(lengths) == 0:
        raise ValueError(f"inputs: every expert of {config.expert_names} is empty, nothing to run")
    return batch, lengths


def check_mask(mask: Tensor | None, batch: int, nq: int, nk: int) -> Tensor | None:
    """Validate a boolean [nq, nk] / [1 or b, nq, nk] mask; return it with a batch axis."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = may attend), got {mask.dtype}")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or mask.shape[1:] != (nq, nk) or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"mask: expected [{nq}, {nk}] or [1 or {batch}, {nq}, {nk}] (queries = this call's "
            f"tokens, keys = cached + this call's tokens), got {list(mask.shape)}"
        )
    return mask


class MoTLayer(nn.Module):
    """A transformer layer whose weights are chosen per token by expert, with joint attention.

    Example:
        >>> from mot.config import ExpertSpec, MoTConfig
        >>> from mot.rope import rope_angles
        >>> cfg = MoTConfig((ExpertSpec("u", 32, 64), ExpertSpec("a", 16, 32)), 1, 2, 1, 8)
        >>> layer = MoTLayer(cfg)
        >>> cos, sin = rope_angles(torch.arange(5), 8)
        >>> u, a = layer([torch.randn(1, 3, 32), torch.randn(1, 2, 16)], cos, sin, None)
        >>> a.shape
        torch.Size([1, 2, 16])
    """

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.config = config
        self.experts = nn.ModuleDict({s.name: ExpertBlock(s, config) for s in config.experts})

    def forward(
        self,
        xs: ExpertInputs,
        cos: Float[Tensor, "#b nq e"] | Float[Tensor, "nq e"],
        sin: Float[Tensor, "#b nq e"] | Float[Tensor, "nq e"],
        mask: Bool[Tensor, "#b nq nk"] | Bool[Tensor, "nq nk"] | None,
        *,
        cache: KVCache | None = None,
        index: int = 0,
        backend: Backend | None = None,
        block_mask: object | None = None,
        conds: Conds | None = None,
        row_has_key: Bool[Tensor, "#b nq"] | None = None,
    ) -> ExpertOutputs:
        """Per-expert inputs [b, n_i, d_i] (None or n_i = 0: absent) -> per-expert outputs.

        cos, sin: RoPE angles of this call's tokens (``rope_angles(positions)``), nq = sum n_i.
        mask: True = may attend; keys are the cache's tokens followed by this call's tokens.
        cache, index: this layer's slot in a `KVCache` (the caller advances the cache).
        conds: [b, d_i] per adaptive-norm expert with tokens in this call (`check_conds`).
        row_has_key: ``mask`` went through `attention.open_empty_rows` already (the stack does
            it once per forward); these are its flags.
        """
        cfg = self.config
        batch, lengths = check_expert_inputs(cfg, xs)
        conds = check_conds(cfg, lengths, conds)
        nq = sum(lengths)
        past = 0 if cache is None else cache.length
        mask = check_mask(mask, batch, nq, past + nq)
        if cos.shape[-2] != nq or cos.shape[-1] != cfg.head_dim:
            raise ValueError(
                f"cos/sin: expected [.., {nq}, {cfg.head_dim}] for {nq} tokens, "
                f"got {list(cos.shape)}"
            )

        present = [
            (spec.name, self.experts[spec.name], x)
            for spec, x, n in zip(cfg.experts, xs, lengths, strict=True)
            if n > 0
        ]
        gates: dict[str, Tensor] = {}
        normed = []
        for name, block, x in present:
            if block.adaptive:
                h, gates[name] = block.attn_norm(x, conds[name])
                normed.append(h)
            else:
                normed.append(block.attn_norm(x))
        # One fused Q/K/V matmul per expert, split, then each concatenated along the sequence.
        fused = [
            block.qkv(h).split(block.qkv_sizes, dim=-1)
            for (_, block, _), h in zip(present, normed, strict=True)
        ]
        q, k, v = (torch.cat(parts, dim=1) for parts in zip(*fused, strict=True))
        q = apply_rope(rearrange(q, "b n (h e) -> b h n e", h=cfg.heads), cos, sin)
        k = apply_rope(rearrange(k, "b n (g e) -> b g n e", g=cfg.kv_heads), cos, sin)
        v = rearrange(v, "b n (g e) -> b g n e", g=cfg.kv_heads)
        if cache is not None:
            k, v = cache.extend(index, k, v)

        out = attend(
            q,
            k,
            v,
            mask,
            backend=backend or cfg.backend,
            block_mask=block_mask,
            row_has_key=row_has_key,
        )
        out = rearrange(out, "b h n e -> b n (h e)")
        pieces = iter(out.split([n for n in lengths if n > 0], dim=1))

        outputs: ExpertOutputs = []
        for spec, x, n in zip(cfg.experts, xs, lengths, strict=True):
            if n == 0:
                outputs.append(x)
                continue
            block = self.experts[spec.name]
            if block.adaptive:
                h = x + block.o(next(pieces)) * gates[spec.name]
                m, gate = block.mlp_norm(h, conds[spec.name])
                outputs.append(h + block.mlp(m) * gate)
                continue
            h = x + block.o(next(pieces))
            outputs.append(h + block.mlp(block.mlp_norm(h)))
        return outputs
