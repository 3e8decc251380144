"""PaliGemma (transformers' ``PaliGemmaForConditionalGeneration``) as F1's Understanding expert.

    Gemma decoder (embeddings, 18 layers, final norm)  -> the trunk's U slice + text embedding
    SigLIP vision tower + multimodal projector         -> the ``siglip`` vision encoder
    tokenizer files beside the weights                 -> ``<model dir>/tokenizer/`` (``hf`` text)

Only the ``understanding`` part is written; G (when ``generation``), A and the VQ tokenizer keep
their initialisation (`init_from` names them under ``random``). Weights are renamed one to one,
except Gemma's RMSNorm gains, stored as ``gain - 1`` (`gemma_norm` adds the 1 back).

Key layouts, detected per component from the keys present (shapes decide nothing):

    text        ``language_model.model.*``         (hub checkpoints; ``save_pretrained`` of
                                                     every transformers version writes it)
                ``model.language_model.*``         (transformers >= 4.52 module names, e.g. a
                                                     ``state_dict`` saved as is)
    vision      ``[model.]vision_tower[.vision_model].*``  (5.x dropped the ``vision_model``
                                                     level; 4.x and the hub have it)
    projector   ``[model.]multi_modal_projector.linear.*``
    LM head     ``lm_head.weight`` / ``language_model.lm_head.weight`` (dropped, see below)

Image-token scale: F1's prefix is ``[proj(siglip(images)), embed(ids) * sqrt(width)]``. In
transformers 5.x PaliGemma scatters the projector output unscaled and only the text embedding is
multiplied by sqrt(width) (``GemmaTextScaledWordEmbedding``); in 4.x ``get_image_features``
divided the projection by sqrt(width) and Gemma then multiplied every input embedding by it. The
net scale of an image token is 1 in both, as in big_vision, so the projector is copied unchanged.

Attention: F1's prefix block is bidirectional over image and instruction tokens, which is
PaliGemma's prefix-LM mask over a prompt with ``token_type_ids == 0`` (its suffix, the decoded
answer, is causal; F1 never decodes text).

Dropped on purpose (`DROPPED`): the LM head (F1 never decodes text; PaliGemma ties it to
``embed_tokens``, which is imported) and SigLIP's attention-pooling head if the checkpoint has
one (PaliGemma reads the patch tokens). Anything else unused is an error.

Refused with a named error: a Gemma 2 text model (PaliGemma 2: extra norms, soft-capping), an
MLP activation other than GELU-tanh (f1kit's GeGLU), biased attention, scaled RoPE.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attention import UNDERSTANDING
from f1kit.model.config import F1Config
from f1kit.model.importers.mapping import Rule, WeightImportError, gemma_norm, same
from f1kit.model.importers.registry import Imported, expected_shapes, imported_from_plan, importer
from f1kit.model.importers.source import SourceError, SourceTensors
from f1kit.model.vision import HF_HINT

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
"""A transformers tokenizer's files; those present are copied (one of the first two needed)."""

GELU_TANH = ("gelu_pytorch_tanh", "gelu_new")
"""transformers' names of GELU's tanh approximation, f1kit's GeGLU activation."""

GEMMA_LEGACY_GELU = "gelu"
"""Gemma's released configs say ``hidden_act: gelu`` and mean the tanh form: transformers runs
Gemma's GELU as tanh whatever that field says (4.x reads ``hidden_activation``, 5.x maps it)."""

SIGLIP_ARGS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "patch_size",
    "image_size",
    "layer_norm_eps",
    "hidden_act",
    "num_channels",
)
"""The ``SiglipVisionConfig`` fields the ``siglip`` encoder is built from."""

TEXT_PREFIXES = ("model.language_model.", "language_model.model.")
VISION_PREFIXES = ("model.vision_tower.", "vision_tower.")
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")

DROPPED_LM_HEAD = (
    "the language-model head: F1 never decodes text (PaliGemma ties it to embed_tokens, which "
    "is imported)"
)
DROPPED_POOLING = (
    "SigLIP's attention-pooling head: PaliGemma and F1 read the patch tokens, never the pooled "
    "output"
)

GEMMA_LAYER = (  # f1kit ExpertBlock tensor <- Gemma decoder-layer tensor, gain-1 norms marked
    ("attn_norm.weight", "input_layernorm.weight", True),
    ("q.weight", "self_attn.q_proj.weight", False),
    ("k.weight", "self_attn.k_proj.weight", False),
    ("v.weight", "self_attn.v_proj.weight", False),
    ("o.weight", "self_attn.o_proj.weight", False),
    ("mlp_norm.weight", "post_attention_layernorm.weight", True),
    ("mlp.gate.weight", "mlp.gate_proj.weight", False),
    ("mlp.up.weight", "mlp.up_proj.weight", False),
    ("mlp.down.weight", "mlp.down_proj.weight", False),
)


@dataclass(frozen=True)
class KeyLayout:
    """Where a checkpoint keeps each PaliGemma component (key prefixes, ending in a dot)."""

    text: str
    vision: str
    projector: str

    @classmethod
    def detect(cls, source: SourceTensors) -> "KeyLayout":
        """The prefixes of ``source``'s keys; a component found under none is an error."""
        keys = source.keys()
        found: dict[str, str] = {}
        problems = []
        for name, prefixes in (
            ("text", TEXT_PREFIXES),
            ("vision", VISION_PREFIXES),
            ("projector", PROJECTOR_PREFIXES),
        ):
            hits = [p for p in prefixes if any(k.startswith(p) for k in keys)]
            if not hits:
                problems.append(f"{name}: no tensor under {' or '.join(prefixes)}")
                continue
            found[name] = hits[0]
        if problems:
            raise WeightImportError(
                f"paligemma: {source.path} is not a PaliGemmaForConditionalGeneration "
                "checkpoint:\n  " + "\n  ".join(problems)
            )
        vision = found["vision"]  # transformers 4.x and the hub wrap the tower in vision_model
        if any(k.startswith(f"{vision}vision_model.") for k in keys):
            found["vision"] = f"{vision}vision_model."
        return cls(**found)


def gemma_decoder_rules(prefix: str, depth: int, expert: str = UNDERSTANDING) -> list[Rule]:
    """A Gemma decoder's ``depth`` layers and final norm (under ``prefix``, e.g.
    ``"language_model.model."``) onto the trunk slice of ``expert``; norms get `gemma_norm`."""
    rules = []
    for i in range(depth):
        for target, source, norm in GEMMA_LAYER:
            rules.append(
                Rule.rename(
                    f"trunk.layers.{i}.experts.{expert}.{target}",
                    f"{prefix}layers.{i}.{source}",
                    gemma_norm if norm else same,
                )
            )
    rules.append(
        Rule.rename(f"trunk.final_norms.{expert}.weight", f"{prefix}norm.weight", gemma_norm)
    )
    return rules


def understanding_rules(layout: KeyLayout, depth: int, vision_keys: list[str]) -> list[Rule]:
    """Every tensor of F1's Understanding part from a PaliGemma checkpoint.

    vision_keys: the f1kit SigLIP tensors (``understanding.vision.backbone.*``), each read from
    the same name under the checkpoint's vision prefix.
    """
    rules = gemma_decoder_rules(layout.text, depth)
    rules.append(
        Rule.rename(
            "understanding.text_embedding.embed.weight", f"{layout.text}embed_tokens.weight"
        )
    )
    for name in ("weight", "bias"):
        rules.append(
            Rule.rename(f"understanding.vision.proj.{name}", f"{layout.projector}linear.{name}")
        )
    backbone = "understanding.vision.backbone."
    for key in vision_keys:
        # f1kit's SiglipVisionModel may or may not have the vision_model level (transformers
        # 4.x / 5.x); the source prefix already carries the checkpoint's own.
        inner = key.removeprefix(backbone).removeprefix("vision_model.")
        rules.append(Rule.rename(key, f"{layout.vision}{inner}"))
    return rules


def dropped_table(layout: KeyLayout) -> dict[str, str]:
    """Source tensors left out on purpose (full-match patterns) -> why."""
    return {
        r"(?:language_model\.)?lm_head\.weight": DROPPED_LM_HEAD,
        re.escape(layout.vision) + r"head\..+": DROPPED_POOLING,
    }


def read_paligemma_config(source: SourceTensors) -> Any:
    """The checkpoint's ``config.json`` as transformers' ``PaliGemmaConfig`` (its defaults
    filled in: hub configs omit e.g. Gemma's head_dim and SigLIP's image_size)."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            f"the paligemma importer reads configs with transformers: {HF_HINT}"
        ) from error
    data = source.read_json("config.json")
    assert data is not None  # required=True raised otherwise
    if data.get("model_type") != "paligemma":
        raise WeightImportError(
            f"paligemma: {source.root / 'config.json'}: model_type {data.get('model_type')!r}, "
            "expected 'paligemma' (a PaliGemmaForConditionalGeneration checkpoint)"
        )
    try:
        return transformers.PaliGemmaConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as err:
        raise SourceError(f"{source.root / 'config.json'}: not a PaliGemma config ({err})") from err


def rope_of(text: Any) -> tuple[float, str]:
    """RoPE base and type of a Gemma config: transformers 5.x keeps both in ``rope_parameters``
    (``rope_scaling`` is its alias), 4.x has ``rope_theta`` and a ``rope_scaling`` (None when
    unscaled, ``type`` or ``rope_type`` otherwise)."""
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    theta = rope.get("rope_theta", getattr(text, "rope_theta", 10000.0))
    return float(theta), str(rope.get("rope_type", rope.get("type", "default")))


def check_supported(pg: Any, where: str) -> None:
    """Refuse, naming every config key, a PaliGemma f1kit's Gemma-shaped trunk cannot run."""
    text, vision = pg.text_config, pg.vision_config
    problems = []
    if text.model_type != "gemma":
        problems.append(
            f"text_config.model_type: {text.model_type!r}, expected 'gemma' (PaliGemma 2's Gemma 2 "
            "has extra norms and soft-capping that f1kit's trunk does not model)"
        )
    if vision.model_type != "siglip_vision_model":
        problems.append(
            f"vision_config.model_type: {vision.model_type!r}, expected 'siglip_vision_model'"
        )
    for key, allowed in (
        ("hidden_act", (*GELU_TANH, GEMMA_LEGACY_GELU)),
        ("hidden_activation", GELU_TANH),  # transformers 4.x's name; None there = GELU-tanh
    ):
        act = getattr(text, key, None)
        if act is not None and act not in allowed:
            problems.append(
                f"text_config.{key}: {act!r}; f1kit's GeGLU MLP is GELU-tanh {list(allowed)}"
            )
    if getattr(text, "attention_bias", False):
        problems.append("text_config.attention_bias: true; f1kit's attention has no biases")
    _, rope_type = rope_of(text)
    if rope_type != "default":
        problems.append(
            f"text_config.rope_parameters: rope_type {rope_type!r}; f1kit's RoPE is the "
            "unscaled 'default'"
        )
    if pg.projection_dim != text.hidden_size:
        problems.append(
            f"projection_dim: {pg.projection_dim}, expected text_config.hidden_size "
            f"{text.hidden_size} (the projector feeds Gemma's width)"
        )
    if problems:
        raise WeightImportError(f"paligemma: {where} is not supported:\n  " + "\n  ".join(problems))


def f1_config(
    pg: Any,
    *,
    generation: bool,
    expert_width: int,
    expert_mlp_width: int,
    action_dim: int,
    state_dim: int,
    chunk: int,
    text_max_length: int,
) -> F1Config:
    """The F1 whose Understanding expert is this PaliGemma; G and A sized by the options."""
    text, vision = pg.text_config, pg.vision_config
    theta, _ = rope_of(text)
    small = {"width": expert_width, "mlp_width": expert_mlp_width, "mlp": "geglu"}
    return F1Config.model_validate(
        {
            "vision": {
                "name": "siglip",
                "args": {name: getattr(vision, name) for name in SIGLIP_ARGS},
            },
            "text": {"name": "hf", "args": {"path": "tokenizer", "max_length": text_max_length}},
            "text_vocab": text.vocab_size,
            "trunk": {
                "depth": text.num_hidden_layers,
                "heads": text.num_attention_heads,
                "kv_heads": text.num_key_value_heads,
                "head_dim": text.head_dim,
                "rope_base": theta,
                "norm_eps": text.rms_norm_eps,
                "understanding": {
                    "width": text.hidden_size,
                    "mlp_width": text.intermediate_size,
                    "mlp": "geglu",
                },
                "generation": small if generation else None,
                "action": small,
            },
            "generation": {"tokenizer": {"preset": "var_256"}} if generation else None,
            "action": {
                "action_dim": action_dim,
                "state_dim": state_dim,
                "chunk": chunk,
                "execute": chunk,
            },
        }
    )


def tokenizer_files(directory: Path) -> dict[str, Path]:
    """The tokenizer files in ``directory`` as model-directory entries ``tokenizer/<name>``."""
    found = {f"tokenizer/{name}": directory / name for name in TOKENIZER_FILES}
    found = {key: path for key, path in found.items() if path.is_file()}
    if not any(Path(key).name in TOKENIZER_FILES[:2] for key in found):
        raise SourceError(
            f"{directory}: no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}) beside the weights; "
            "pass text_tokenizer=<a local directory holding PaliGemma's tokenizer files>"
        )
    return found


@importer("paligemma")
def import_paligemma(
    source: SourceTensors,
    *,
    generation: bool = True,
    expert_width: int = 1024,
    expert_mlp_width: int = 4096,
    action_dim: int = 32,
    state_dim: int = 32,
    chunk: int = 50,
    text_max_length: int = 48,
    text_tokenizer: str | Path | None = None,
) -> Imported:
    """PaliGemma's weights as F1's Understanding part (the module docstring has the mapping).

    generation: an F1 target (G of ``expert_width`` / ``expert_mlp_width``, VAR's 256 px
    tokenizer) or a No-Gen one (False). The A expert takes the same widths; action_dim,
    state_dim and chunk size its flow head (pi0's 32 / 32 / 50 by default). text_max_length:
    instruction tokens. text_tokenizer: a directory with the text tokenizer's files (default:
    the checkpoint's directory).

    Example:
        >>> convert_checkpoint("paligemma", "/models/paligemma-3b-pt-224", "weights/pg-f1kit")
    """
    pg = read_paligemma_config(source)
    check_supported(pg, str(source.root / "config.json"))
    config = f1_config(
        pg,
        generation=generation,
        expert_width=expert_width,
        expert_mlp_width=expert_mlp_width,
        action_dim=action_dim,
        state_dim=state_dim,
        chunk=chunk,
        text_max_length=text_max_length,
    )
    files = tokenizer_files(Path(text_tokenizer) if text_tokenizer is not None else source.root)
    layout = KeyLayout.detect(source)
    parts = (UNDERSTANDING,)
    backbone = [
        k for k in expected_shapes(config, parts) if k.startswith("understanding.vision.backbone.")
    ]
    rules = understanding_rules(layout, pg.text_config.num_hidden_layers, backbone)
    return imported_from_plan(
        source,
        config,
        parts,
        rules,
        dropped_table(layout),
        "paligemma",
        files=files,
        info={
            "layout": {"text": layout.text, "vision": layout.vision, "projector": layout.projector}
        },
    )
