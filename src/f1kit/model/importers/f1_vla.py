"""The official F1-VLA checkpoint (InternRobotics/F1-VLA, ``F1_VLA`` saved with safetensors) as a
whole f1kit F1, and f1kit's F1 back in that layout (`export_f1_vla`).

    model.paligemma_with_expert.paligemma.*    SigLIP + projector, Gemma (U)  -> understanding.*,
                                                 trunk.*.understanding (norms +1)
    model.paligemma_with_expert.gemma_wm_expert.model.*   -> trunk.*.generation (norms +1)
    model.paligemma_with_expert.gemma_expert.model.*      -> trunk.*.action (norms +1)
    model.temporal_conv.conv / wm_embeddings              -> aggregator.temporal / .proj
    model.wm_output_position_embedding / lvl_embed        -> generator.position / .level
    model.wm_out_layer_norm / wm_out_proj                 -> generator.head_norm / .head_proj
    model.state_proj / action_in_proj / action_time_mlp_in / action_time_mlp_out /
    action_out_proj       -> action_head.state_in / action_in / time_mlp.0 / time_mlp.2 / action_out
    model.vae.*           -> tokenizer.* (VAR's names, `foresight.var_weights`)

The model config comes from the checkpoint's ``config.json`` and the tensor shapes, which decide
every size they can (`f1_vla_config.read_config`; a disagreeing config value is an error); all
four parts are written. The action weights are marked
``weights_convention: pi0`` (noise at t = 1 in the official code; `flow.Convention`). Gemma's
RMSNorm gains are stored as ``gain - 1``: imported as ``1 + w`` in float32 (bf16 sources keep
every bit), exported as ``gain - 1``.

Accepted aliases (each may appear once or twice; duplicates must be equal): the token embedding
stored as ``...language_model.lm_head.weight`` (the official file: save_model keeps that name of
the tied pair) or ``...language_model.model.embed_tokens.weight``; ``vae.*`` or ``model.vae.*``
(one module under two names); transformers >= 4.52 module names (``paligemma.model.
language_model.*``, ``paligemma.model.vision_tower.*``, ``paligemma.lm_head``); a
``_orig_mod.`` (torch.compile) anywhere in a name.

Parametrised differently, folded exactly where the algebra allows:

(a) one ``wm_embeddings`` Linear embeds both the history and the next-scale inputs; f1kit has
    ``aggregator.proj`` and ``generator.input_proj``: both get it. Export refuses a model whose two
    differ.
(b) the official history position is added twice, ``wm_hist_pos_embs`` [1, N-1, z] before
    ``wm_embeddings`` and ``wm_cond_pos_embs[1:]`` after; f1kit adds one ``aggregator.position``
    [N-1, d] after the projection: ``position = hist_pos @ W^T + cond_pos[1:]`` (the Linear is
    affine: W (x + p) + b = W x + b + W p). Export writes ``hist_pos = 0``.
(c) **The SOS differs in layout, so an imported checkpoint does not reproduce the official forward
    numerically.** Officially ``wm_sos_token_embs + wm_cond_pos_embs[0]`` is the first token of the
    generation block and sits in the bidirectional prefix, and the scale-1 code is read from the
    last history token (which carries ``out_pos[0] + lvl[0]`` and opens the scale-1 block). f1kit
    puts its SOS after the history, in its own block, and reads scale 1 there; its SOS token is
    ``sos + context_to_sos(mean history) + position[0] + level[0]``. The official sum goes to
    ``generator.sos`` and ``context_to_sos`` (which the official model lacks) is set to zero, so
    the SOS token is the official SOS plus the scale-1 marker. Everything else (experts, heads,
    tokenizer, positions of the scale inputs) maps one to one; fine-tune before relying on the
    foresight. Export writes ``wm_cond_pos_embs[0] = 0`` and refuses a non-zero ``context_to_sos``.

Dropped with reasons (`DROPPED`): the two expert LM heads, ``mask_embedding``, ``lvl_1L`` (checked
to be each token's scale index), the PaliGemma LM head when the embedding is stored apart. Export
leaves them out (the official loader reads with ``strict=False`` and they are unused at
inference) except ``lvl_1L``, which it recomputes; `f1_vla_config.official_config` writes the
matching config.json. The text tokenizer is not part of either file: PaliGemma's tokenizer files
are copied from ``text_tokenizer``.
"""

import functools
import re
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor, nn

from attention import UNDERSTANDING
from f1kit.model.config import F1Config
from f1kit.model.importers.f1_vla_config import (
    EMBED,
    EMBED_STORED,
    EXPERT_PREFIX,
    PG,
    VAE,
    VISION,
    read_config,
)
from f1kit.model.importers.mapping import (
    Rule,
    WeightImportError,
    check_plan,
    convert,
    f1kit_to_gemma_norm,
    gemma_norm,
)
from f1kit.model.importers.paligemma import GEMMA_LAYER, tokenizer_files
from f1kit.model.importers.parts import PARTS
from f1kit.model.importers.registry import Imported, expected_shapes, importer
from f1kit.model.importers.source import SourceTensors
from foresight import MultiScaleVQVAE, VQVAEConfig
from foresight.var_weights import ours_to_var

LEVELS = "model.lvl_1L"

ALIASES = (  # applied in order, after removing every "_orig_mod."
    (r"^vae\.", VAE),
    (rf"^{re.escape(PG)}model\.language_model\.", EXPERT_PREFIX[UNDERSTANDING]),
    (rf"^{re.escape(PG)}model\.(vision_tower|multi_modal_projector)\.", PG + r"\1."),
    (rf"^{re.escape(PG)}vision_tower\.(?!vision_model\.)", VISION),  # transformers 5.x
    (rf"^{re.escape(PG)}lm_head\.", PG + "language_model.lm_head."),
)

HEADS = {  # f1kit tensor -> (official tensor, kind); kind "batch": a leading 1 axis officially
    "aggregator.temporal.weight": ("model.temporal_conv.conv.weight", "same"),
    "aggregator.temporal.bias": ("model.temporal_conv.conv.bias", "same"),
    "aggregator.proj.weight": ("model.wm_embeddings.weight", "same"),
    "aggregator.proj.bias": ("model.wm_embeddings.bias", "same"),
    "generator.position": ("model.wm_output_position_embedding", "batch"),
    "generator.level.weight": ("model.lvl_embed.weight", "same"),
    "generator.head_norm.weight": ("model.wm_out_layer_norm.weight", "same"),
    "generator.head_norm.bias": ("model.wm_out_layer_norm.bias", "same"),
    "generator.head_proj.weight": ("model.wm_out_proj.weight", "same"),
    "generator.head_proj.bias": ("model.wm_out_proj.bias", "same"),
    "action_head.state_in.weight": ("model.state_proj.weight", "same"),
    "action_head.state_in.bias": ("model.state_proj.bias", "same"),
    "action_head.action_in.weight": ("model.action_in_proj.weight", "same"),
    "action_head.action_in.bias": ("model.action_in_proj.bias", "same"),
    # [action_in(x), time features]: the official concat order, sin before cos on both sides
    "action_head.time_mlp.0.weight": ("model.action_time_mlp_in.weight", "same"),
    "action_head.time_mlp.0.bias": ("model.action_time_mlp_in.bias", "same"),
    "action_head.time_mlp.2.weight": ("model.action_time_mlp_out.weight", "same"),
    "action_head.time_mlp.2.bias": ("model.action_time_mlp_out.bias", "same"),
    "action_head.action_out.weight": ("model.action_out_proj.weight", "same"),
    "action_head.action_out.bias": ("model.action_out_proj.bias", "same"),
}
SHARED = {
    "generator.input_proj.weight": "aggregator.proj.weight",
    "generator.input_proj.bias": "aggregator.proj.bias",
}  # (a): one official Linear
FOLDED = (
    "aggregator.position",
    "generator.sos",
    "generator.context_to_sos.weight",
    "generator.context_to_sos.bias",
)  # (b), (c)

_EXPERT_HEAD = "model.paligemma_with_expert.{}.lm_head.weight"
DROPPED = {
    _EXPERT_HEAD.format("gemma_wm_expert"): "the generation expert's LM head: never used (its "
    "logits come from wm_out_proj)",
    _EXPERT_HEAD.format("gemma_expert"): "the action expert's LM head: never used",
    "model.mask_embedding": "an untrained buffer, used only to mask tokens in teacher-forced "
    "training of the official code",
    LEVELS: "each token's scale index (checked): f1kit derives it from the scales",
    EMBED_STORED: "the PaliGemma LM head: F1 never decodes text (the embedding is stored apart)",
}


def canonical(key: str) -> str:
    """The official (transformers < 4.52, ``model.``-prefixed) name of a checkpoint key."""
    key = key.replace("_orig_mod.", "")
    for pattern, replacement in ALIASES:
        key = re.sub(pattern, replacement, key)
    return key


def official_names(config: F1Config) -> dict[str, tuple[str, str]]:
    """f1kit tensor -> (official name, kind) for every tensor that maps one to one; kind is
    ``same``, ``norm`` (Gemma's gain - 1) or ``batch`` (a leading axis of 1 officially)."""
    if config.generation is None:
        raise ValueError("f1-vla: the official layout has a Generation expert (generation: set)")
    tok = var_names(config.generation.tokenizer.vqvae_config())
    layer = {ours: (theirs, norm) for ours, theirs, norm in GEMMA_LAYER}
    out: dict[str, tuple[str, str]] = {}
    for key in expected_shapes(config, PARTS):
        trunk = re.fullmatch(r"trunk\.layers\.(\d+)\.experts\.(\w+)\.(.+)", key)
        final = re.fullmatch(r"trunk\.final_norms\.(\w+)\.weight", key)
        if trunk:
            theirs, norm = layer[trunk[3]]
            name = f"{EXPERT_PREFIX[trunk[2]]}layers.{trunk[1]}.{theirs}"
            out[key] = (name, "norm" if norm else "same")
        elif final:
            out[key] = (EXPERT_PREFIX[final[1]] + "norm.weight", "norm")
        elif key.startswith("understanding.vision.backbone."):
            inner = key.removeprefix("understanding.vision.backbone.").removeprefix("vision_model.")
            out[key] = (VISION + inner, "same")
        elif key.startswith("understanding.vision.proj."):
            out[key] = (PG + "multi_modal_projector.linear." + key.rsplit(".", 1)[1], "same")
        elif key == "understanding.text_embedding.embed.weight":
            out[key] = (EMBED_STORED, "same")
        elif key.startswith("tokenizer."):
            out[key] = (VAE + tok[key.removeprefix("tokenizer.")], "same")
        elif key in HEADS:
            out[key] = HEADS[key]
    return out


# ---- import -------------------------------------------------------------------------------


def _unbatch(x: Tensor) -> Tensor:
    if x.shape[0] != 1:
        raise ValueError(f"expected a leading axis of 1, got {tuple(x.shape)}")
    return x[0]


FORWARD = {"same": lambda x: x, "norm": gemma_norm, "batch": _unbatch}
BACKWARD = {"same": lambda x: x, "norm": f1kit_to_gemma_norm, "batch": lambda x: x[None]}


def history_position(hist: Tensor, weight: Tensor, cond: Tensor) -> Tensor:
    """(b): hist_pos [1, n, z] before the Linear W [d, z] + cond_pos[1:] [n, d] after it."""
    if hist.ndim != 3 or cond.ndim != 3 or cond.shape[1] != hist.shape[1] + 1:
        raise ValueError(
            f"hist_pos {tuple(hist.shape)} / cond_pos {tuple(cond.shape)}: "
            "expected [1, n, z] and [1, n + 1, d]"
        )
    if not hist.is_meta and not bool(hist.any()):  # an export's zeros: keep the bits
        return cond[0, 1:].clone()
    dtype = torch.promote_types(cond.dtype, weight.dtype)
    return (cond[0, 1:].to(dtype) + hist[0].to(dtype) @ weight.to(dtype).T).to(cond.dtype)


def start_token(sos: Tensor, cond: Tensor) -> Tensor:
    """(c): the official SOS sum wm_sos_token_embs [1, 1, d] + wm_cond_pos_embs[0]."""
    if not cond.is_meta and not bool(cond[0, 0].any()):
        return sos.reshape(-1).clone()
    return (sos.reshape(-1) + cond[0, 0]).to(sos.dtype)


def _deduplicated(rule: Rule, groups: dict[str, list[str]]) -> Rule:
    """``rule`` (on official names) reading the checkpoint's keys; an official tensor stored
    under several names (aliases) must be stored equal."""
    sources = [groups.get(name, [name]) for name in rule.sources]
    if all(len(s) == 1 for s in sources):
        return Rule(rule.target, tuple(s[0] for s in sources), rule.transform)

    def transform(*tensors: Tensor) -> Tensor:
        picked, i = [], 0
        for names in sources:
            first = tensors[i]
            for name, other in zip(names[1:], tensors[i + 1 : i + len(names)], strict=True):
                same_shape = first.shape == other.shape
                if not same_shape or (not first.is_meta and not torch.equal(first, other)):
                    raise WeightImportError(f"f1-vla: {names[0]} and its alias {name} differ")
            picked.append(first)
            i += len(names)
        return rule.transform(*picked)

    return Rule(rule.target, tuple(n for s in sources for n in s), transform)


def import_rules(config: F1Config, groups: dict[str, list[str]]) -> list[Rule]:
    """Every f1kit tensor of F1 ``config`` from the official names present in ``groups``
    (official name -> the checkpoint's keys for it)."""
    rules = [
        Rule.rename(k, name, FORWARD[kind]) for k, (name, kind) in official_names(config).items()
    ]
    if EMBED in groups:  # stored apart from the LM head (which is then dropped)
        rules = [Rule.rename(r.target, EMBED) if r.sources == (EMBED_STORED,) else r for r in rules]
    assert config.trunk.generation is not None  # official_names refused a No-Gen config
    d = config.trunk.generation.width
    # (a): a copy, so the file does not store one tensor under two names (safetensors refuses)
    rules += [Rule.rename(ours, HEADS[theirs][0], torch.clone) for ours, theirs in SHARED.items()]
    rules += [
        Rule(
            "aggregator.position",
            ("model.wm_hist_pos_embs", "model.wm_embeddings.weight", "model.wm_cond_pos_embs"),
            history_position,
        ),
        Rule("generator.sos", ("model.wm_sos_token_embs", "model.wm_cond_pos_embs"), start_token),
        # (c): no official counterpart; zero keeps the SOS independent of the history
        Rule("generator.context_to_sos.weight", (), lambda: torch.zeros(d, d)),
        Rule("generator.context_to_sos.bias", (), lambda: torch.zeros(d)),
    ]
    return [_deduplicated(rule, groups) for rule in rules]


@functools.lru_cache(maxsize=4)
def var_names(vq: VQVAEConfig) -> dict[str, str]:
    """Our tokenizer's tensor names -> VAR's (the official ``model.vae.*`` without the prefix)."""
    with torch.device("meta"):
        vae = MultiScaleVQVAE(vq)
    return dict(zip(vae.state_dict(), ours_to_var(vae), strict=True))


def check_levels(source: SourceTensors, keys: list[str], scales: tuple[int, ...]) -> None:
    """``lvl_1L`` must be every token's scale index (f1kit derives it from the scales)."""
    levels = torch.repeat_interleave(
        torch.arange(len(scales)), torch.tensor([s * s for s in scales])
    )
    for key in keys:
        found = source.get(key)
        if found.shape != (1, levels.numel()) or not torch.equal(found.long()[0], levels):
            raise WeightImportError(
                f"f1-vla: {key} {tuple(found.shape)} is not the scale index of every token of the "
                f"scales {scales} (expected [1, {levels.numel()}]: scale k's index s_k^2 times)"
            )


@importer("f1-vla")
def import_f1_vla(
    source: SourceTensors,
    *,
    text_tokenizer: str | Path | None = None,
    chunk: int | None = None,
) -> Imported:
    """An official F1-VLA checkpoint as a whole f1kit F1 (the module docstring has the mapping).

    text_tokenizer: a directory with PaliGemma's tokenizer files (default: the checkpoint's
    directory; the official code loads them from elsewhere). chunk: actions per chunk
    (default: config.json's chunk_size; no weight depends on it).

    Example:
        >>> convert_checkpoint("f1-vla", "/models/F1-VLA", "weights/f1-vla-f1kit",
        ...                    text_tokenizer="/models/paligemma-3b-pt-224")
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for key in source.keys():  # noqa: SIM118 (SourceTensors is not a dict)
        groups[canonical(key)].append(key)
    groups = dict(groups)
    config = read_config(source, groups, chunk)
    assert config.generation is not None
    check_levels(source, groups.get(LEVELS, []), config.generation.tokenizer.vqvae_config().scales)
    reasons = dict(DROPPED)
    if EMBED not in groups:  # the LM head is the embedding: read, not dropped
        del reasons[EMBED_STORED]
    dropped = {re.escape(k): why for name, why in reasons.items() for k in groups.get(name, [])}
    files = tokenizer_files(Path(text_tokenizer) if text_tokenizer is not None else source.root)
    # imported_from_plan's steps, keeping the plan for the exporter's checks
    rules = import_rules(config, groups)
    plan = check_plan(source, rules, dropped, expected_shapes(config, PARTS), "f1-vla")
    info = {"weights_convention": "pi0", "folded": list(FOLDED)}
    return Imported(
        config,
        PARTS,
        lambda dtype: convert(source, plan, dtype),
        plan.dropped,
        files,
        info,
        count=len(plan.rules),
    )


# ---- export -------------------------------------------------------------------------------


def export_f1_vla(
    model_or_state: nn.Module | dict[str, Tensor], config: F1Config
) -> dict[str, Tensor]:
    """An f1kit F1 (module or state dict) as an official F1-VLA state dict (transformers < 4.52
    names, the embedding under ``...language_model.lm_head.weight`` as the official file stores
    it). Inverse of the import: norms - 1, ``wm_embeddings`` = ``aggregator.proj``,
    ``hist_pos`` = 0, ``cond_pos`` = [0, aggregator.position], ``wm_sos_token_embs`` =
    ``generator.sos``, ``lvl_1L`` recomputed; the expert LM heads and ``mask_embedding`` are left
    out. Refuses (listing every reason) what the official model cannot hold: a vision encoder
    other than SigLIP given by its fields, paper-convention action weights, ``generator.input_proj``
    unlike ``aggregator.proj``, a non-zero ``context_to_sos``, history outside the prefix.
    Write it with ``safetensors.torch.save_file`` beside `f1_vla_config.official_config`.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    names = official_names(config)
    expected = expected_shapes(config, PARTS)
    problems = []
    if config.vision.name != "siglip" or "path" in config.vision.args:
        problems.append("vision: the official model holds a SigLIP given by its fields")
    if config.action.weights_convention != "pi0":
        problems.append("action.weights_convention: 'paper'; the official code runs 'pi0' weights")
    assert config.generation is not None  # official_names refused No-Gen
    if not config.generation.history_in_prefix:
        problems.append(
            "generation.history_in_prefix: false; the official history is in the prefix"
        )
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    if missing or unknown:
        problems.append(f"state: missing {missing[:8]}, not in F1 of this config {unknown[:8]}")
    else:
        for ours, theirs in SHARED.items():
            if not torch.equal(state[ours], state[theirs]):
                problems.append(f"{ours} differs from {theirs}: the official model has one Linear")
        for key in FOLDED[2:]:
            if bool(state[key].any()):
                problems.append(f"{key}: not zero; the official SOS does not depend on the history")
    if problems:
        raise WeightImportError("f1-vla export:\n  " + "\n  ".join(problems))
    out = {name: BACKWARD[kind](state[ours]).contiguous() for ours, (name, kind) in names.items()}
    position, sos = state["aggregator.position"], state["generator.sos"]
    out["model.wm_hist_pos_embs"] = position.new_zeros(
        1, position.shape[0], state["aggregator.proj.weight"].shape[1]
    )
    out["model.wm_cond_pos_embs"] = torch.cat([sos.new_zeros(1, sos.shape[0]), position])[None]
    out["model.wm_sos_token_embs"] = sos.reshape(1, 1, -1).clone()
    scales = config.generation.tokenizer.vqvae_config().scales
    out[LEVELS] = torch.repeat_interleave(
        torch.arange(len(scales)), torch.tensor([s * s for s in scales])
    )[None]
    return out
