"""What a pi0 checkpoint holds, read before any tensor is: where its keys live, what its
config.json says, and the sizes its tensor shapes give (`importers.pi0` maps it onto F1).

Two key layouts: lerobot ``save_pretrained`` (``model.paligemma_with_expert...``) and openpi's
PyTorch files (the same keys without ``model.``); the PaliGemma inside may use any naming
`importers.paligemma` reads. Two configs: lerobot's (``type: pi0``, every setting) and openpi's
(``action_dim``, ``action_horizon``, the variant names, ``precision``); or none.

Sizes come from shapes, never from the variant names (``gemma_2b`` / ``gemma_300m``): those are
compared with the shapes and a disagreement is logged and returned as a note (a patched or
custom model), while shapes that cannot form pi0's joint attention, or contradict config.json,
are refused. pi0 runs 8 query heads (lerobot hard-codes the reshape; every openpi variant has 8),
so head_dim = q_proj rows / 8. SigLIP's head count is in no file: 16 for So400m (the only tower
pi0 builds), otherwise the caller's.

Refused with a named error: pi0.5 (``type: pi05``, or its adaptive-norm / square ``time_mlp``
tensors where openpi's config does not say), which `importers.pi05` imports (it reuses the keys,
settings and sizes read here); time sampling other than ``offset = 1 - scale`` and time periods
other than the head's 4e-3 .. 4 (f1kit's config cannot state them); any other lerobot policy
type.
"""

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f1kit.model.importers.mapping import WeightImportError
from f1kit.model.importers.paligemma import (
    PROJECTOR_PREFIXES,
    TEXT_PREFIXES,
    VISION_PREFIXES,
    KeyLayout,
)
from f1kit.model.importers.source import SourceError, SourceTensors
from flow import FlowHeadConfig

log = logging.getLogger(__name__)

NAME = "pi0"
STACK = "paligemma_with_expert."
PI0_HEADS = 8
"""Query heads of every pi0: lerobot reshapes attention to 8 heads, openpi's variants all have 8."""

VARIANTS = {  # name -> (width, depth, mlp_width, head_dim) (lerobot / openpi gemma configs)
    "gemma_2b": (2048, 18, 16384, 256),
    "gemma_2b_lora": (2048, 18, 16384, 256),
    "gemma_300m": (1024, 18, 4096, 256),
    "gemma_300m_lora": (1024, 18, 4096, 256),
    "dummy": (64, 4, 128, 16),
}
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27}
SO400M_HEADS = 16
SIGLIP_FIXED = {"layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}
"""PaliGemma's SigLIP defaults, which pi0 keeps (no file states them)."""

LEROBOT_DEFAULTS = {  # PI0Config's defaults, for fields a hand-written config may omit
    "chunk_size": 50,
    "n_action_steps": 50,
    "num_inference_steps": 10,
    "tokenizer_max_length": 48,
    "time_sampling_beta_alpha": 1.5,
    "time_sampling_beta_beta": 1.0,
    "time_sampling_scale": 0.999,
    "time_sampling_offset": 0.001,
    "min_period": 4e-3,
    "max_period": 4.0,
}
OPENPI_STEPS, OPENPI_TEXT = 10, 48
KEPT = ("input_features", "output_features", "normalization_mapping", "empty_cameras")
"""lerobot config fields recorded in the model directory (what a policy wrapper needs next)."""

PI05 = (
    "pi0.5 is not supported: its action expert modulates every RMSNorm with the flow time "
    "(adaptive RMSNorm: scale, shift and a residual gate from a time MLP) and has no state token; "
    "convert it with --from pi05 (importers.pi05)"
)


@dataclass(frozen=True)
class Pi0Keys:
    """Where a pi0 checkpoint keeps its parts (key prefixes, ending in a dot where a prefix)."""

    layout: str  # "lerobot" or "openpi"
    root: str  # "model." or ""
    paligemma: KeyLayout
    expert: str
    embed: str  # the tensor read as the input embedding (embed_tokens or the tied lm_head)

    @property
    def lm_heads(self) -> tuple[str, str]:
        """Full-match patterns of the PaliGemma LM head and the expert's LM head."""
        base = re.escape(f"{self.root}{STACK}paligemma.")
        return (
            base + r"(?:language_model\.)?lm_head\.weight",
            re.escape(f"{self.root}{STACK}gemma_expert.lm_head.weight"),
        )

    def head(self, name: str) -> str:
        return f"{self.root}{name}"

    @classmethod
    def detect(cls, source: SourceTensors) -> "Pi0Keys":
        keys = source.keys()
        if any(k.startswith(f"model.{STACK}") for k in keys):
            layout, root = "lerobot", "model."
        elif any(k.startswith(STACK) for k in keys):
            layout, root = "openpi", ""
        else:
            raise WeightImportError(
                f"{NAME}: {source.path} is not a pi0 checkpoint: no tensor under "
                f"'model.{STACK}' (lerobot) or '{STACK}' (openpi)"
            )
        base = f"{root}{STACK}paligemma."
        found: dict[str, str] = {}
        problems = []
        for part, prefixes in (
            ("text", TEXT_PREFIXES),
            ("vision", VISION_PREFIXES),
            ("projector", PROJECTOR_PREFIXES),
        ):
            hits = [base + p for p in prefixes if any(k.startswith(base + p) for k in keys)]
            if not hits:
                tried = " or ".join(base + p for p in prefixes)
                problems.append(f"{part}: no tensor under {tried}")
            else:
                found[part] = hits[0]
        if problems:
            raise WeightImportError(
                f"{NAME}: {source.path}: PaliGemma parts missing:\n  " + "\n  ".join(problems)
            )
        if any(k.startswith(found["vision"] + "vision_model.") for k in keys):
            found["vision"] += "vision_model."
        paligemma = KeyLayout(**found)
        embed = f"{paligemma.text}embed_tokens.weight"
        if embed not in source:
            heads = [f"{base}lm_head.weight", f"{base}language_model.lm_head.weight"]
            present = [h for h in heads if h in source]
            if not present:
                raise WeightImportError(
                    f"{NAME}: {source.path}: no input embedding: neither {embed} nor "
                    f"{' / '.join(heads)} (its tied copy) is in the file"
                )
            embed = present[0]
        expert = f"{root}{STACK}gemma_expert.model."
        return cls(layout, root, paligemma, expert, embed)


@dataclass(frozen=True)
class Settings:
    """What pi0's config says beyond the shapes, and where it came from (``origin``)."""

    chunk: int
    execute: int
    steps: int
    text_length: int
    alpha: float
    beta: float
    scale: float
    origin: str
    max_action_dim: int | None = None
    max_state_dim: int | None = None
    image_resolution: tuple[int, ...] | None = None
    variants: tuple[str | None, str | None] = (None, None)
    kept: dict[str, Any] = field(default_factory=dict)


def read_settings(
    source: SourceTensors,
    data: dict[str, Any] | None,
    chunk: int | None,
    text_max_length: int | None,
) -> Settings:
    """pi0's settings from its config.json ``data`` (lerobot's or openpi's, None when absent);
    ``chunk`` / ``text_max_length`` fill what a config lacks and must agree with what it states."""
    where = source.root / "config.json"
    pi0_time = {"alpha": 1.5, "beta": 1.0, "scale": 0.999}
    if data is None:
        if chunk is None:
            raise SourceError(
                f"{NAME}: {where}: not found, and the action chunk length is in no tensor: pass "
                "chunk=<action_horizon> (openpi's config.json states it)"
            )
        return Settings(
            chunk=chunk,
            execute=chunk,
            steps=OPENPI_STEPS,
            text_length=text_max_length or OPENPI_TEXT,
            **pi0_time,
            origin="none: sizes from the tensors, the chunk from the chunk option",
        )
    if "type" not in data:  # openpi: {action_dim, action_horizon, variants, precision}
        if "action_horizon" not in data:
            raise SourceError(
                f"{NAME}: {where}: neither lerobot's (type: pi0) nor openpi's (action_horizon) "
                "pi0 config"
            )
        horizon = int(data["action_horizon"])
        _agree(where, "chunk", chunk, "action_horizon", horizon)
        dim = data.get("action_dim")
        return Settings(
            chunk=horizon,
            execute=horizon,
            steps=OPENPI_STEPS,
            text_length=text_max_length or OPENPI_TEXT,
            **pi0_time,
            max_action_dim=dim,
            max_state_dim=dim,  # openpi's state_proj takes action_dim inputs
            variants=(data.get("paligemma_variant"), data.get("action_expert_variant")),
            origin="openpi config.json",
            kept={"precision": data.get("precision")},
        )
    cfg = {**LEROBOT_DEFAULTS, **data}
    _agree(where, "chunk", chunk, "chunk_size", cfg["chunk_size"])
    _agree(
        where, "text_max_length", text_max_length, "tokenizer_max_length",
        cfg["tokenizer_max_length"],
    )  # fmt: skip
    problems = []
    if cfg.get("use_relative_actions"):
        problems.append(
            "use_relative_actions true: the weights predict actions relative to the state, "
            "which f1kit's processors do not add back (they would be executed as absolute)"
        )
    scale, offset = float(cfg["time_sampling_scale"]), float(cfg["time_sampling_offset"])
    if not math.isclose(scale + offset, 1.0, abs_tol=1e-9):
        problems.append(
            f"time_sampling_offset {offset} + time_sampling_scale {scale} != 1: f1kit's beta "
            "sampler draws tau = scale * (1 - s), i.e. t = (1 - scale) + scale * s"
        )
    head = FlowHeadConfig(action_dim=1, chunk=1, width=2)
    for key, ours in (("min_period", head.min_period), ("max_period", head.max_period)):
        if not math.isclose(float(cfg[key]), ours):
            problems.append(f"{key} {cfg[key]}: f1kit's time embedding uses {ours}")
    if problems:
        raise WeightImportError(f"{NAME}: {where} is not supported:\n  " + "\n  ".join(problems))
    resolution = cfg.get("image_resolution")
    return Settings(
        chunk=int(cfg["chunk_size"]),
        execute=int(cfg["n_action_steps"]),
        steps=int(cfg["num_inference_steps"]),
        text_length=int(cfg["tokenizer_max_length"]),
        alpha=float(cfg["time_sampling_beta_alpha"]),
        beta=float(cfg["time_sampling_beta_beta"]),
        scale=scale,
        max_action_dim=cfg.get("max_action_dim"),
        max_state_dim=cfg.get("max_state_dim"),
        image_resolution=tuple(resolution) if resolution is not None else None,
        variants=(cfg.get("paligemma_variant"), cfg.get("action_expert_variant")),
        origin="lerobot config.json (type pi0)",
        kept={key: data[key] for key in KEPT if key in data},
    )


def _agree(where: Path, option: str, given: int | None, field: str, stated: int) -> None:
    if given is not None and given != stated:
        raise WeightImportError(
            f"{NAME}: {option}={given}, but {where} says {field}: {stated} (omit the option)"
        )


def _depth(source: SourceTensors, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    keys = source.keys()  # SourceTensors is not iterable
    found = {int(m[1]) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def shape_of(source: SourceTensors, key: str, what: str) -> tuple[int, ...]:
    if key not in source:
        raise WeightImportError(f"{NAME}: {source.path}: {key} not found (it sizes {what})")
    return source.shape(key)


def gemma_geometry(source: SourceTensors, prefix: str, what: str) -> dict[str, int]:
    """width, depth, mlp_width, q rows, kv rows of a Gemma decoder, from its layer-0 shapes (the
    plan checks every other layer against them)."""
    q_rows, width = shape_of(source, f"{prefix}layers.0.self_attn.q_proj.weight", what)
    kv_rows = shape_of(source, f"{prefix}layers.0.self_attn.k_proj.weight", what)[0]
    mlp = shape_of(source, f"{prefix}layers.0.mlp.gate_proj.weight", what)[0]
    return {
        "width": width,
        "depth": _depth(source, prefix),
        "mlp_width": mlp,
        "q": q_rows,
        "kv": kv_rows,
    }


def siglip_args(
    source: SourceTensors, vision: str, heads: int | None, resolution: tuple[int, ...] | None
) -> dict[str, Any]:
    """The ``siglip`` encoder's SiglipVisionConfig fields, from the tower's shapes."""
    width, channels, patch, _ = shape_of(
        source, f"{vision}embeddings.patch_embedding.weight", "SigLIP"
    )
    positions = shape_of(source, f"{vision}embeddings.position_embedding.weight", "SigLIP")[0]
    side = math.isqrt(positions)
    mlp = shape_of(source, f"{vision}encoder.layers.0.mlp.fc1.weight", "SigLIP")[0]
    args = {
        "hidden_size": width,
        "intermediate_size": mlp,
        "num_hidden_layers": _depth(source, f"{vision}encoder."),
        "patch_size": patch,
        "image_size": side * patch,
        "num_channels": channels,
        **SIGLIP_FIXED,
    }
    problems = []
    if side * side != positions:
        problems.append(f"position_embedding: {positions} rows, not a square grid of patches")
    if resolution is not None and list(resolution) != [args["image_size"]] * 2:
        problems.append(
            f"config.json image_resolution {list(resolution)}, but the position embedding "
            f"({side} x {side} patches of {patch} px) fits {args['image_size']} px"
        )
    if heads is None:
        if {k: args[k] for k in SO400M} != SO400M:
            problems.append(
                f"a SigLIP of width {width} (not So400m): its head count is in no file; pass "
                "vision_heads=<num_attention_heads>"
            )
        heads = SO400M_HEADS
    if problems:
        raise WeightImportError(f"{NAME}: {source.path}: SigLIP:\n  " + "\n  ".join(problems))
    return {**args, "num_attention_heads": heads}


def trunk_geometry(
    source: SourceTensors, keys: Pi0Keys, settings: Settings
) -> tuple[dict[str, Any], list[str]]:
    """The trunk config from the two decoders' shapes, and notes on variant names they contradict;
    shapes that cannot form pi0's joint attention are refused."""
    vlm = gemma_geometry(source, keys.paligemma.text, "the PaliGemma decoder")
    expert = gemma_geometry(source, keys.expert, "the action expert")
    problems = []
    if vlm["depth"] != expert["depth"]:
        problems.append(
            f"depth: PaliGemma {vlm['depth']} layers, action expert {expert['depth']} (pi0 "
            "pairs them layer by layer)"
        )
    for name, geo in (("PaliGemma", vlm), ("action expert", expert)):
        if geo["q"] % PI0_HEADS:
            problems.append(f"{name} q_proj: {geo['q']} rows, not {PI0_HEADS} heads")
    head_dim = vlm["q"] // PI0_HEADS
    for rows in ("q", "kv"):
        if vlm[rows] != expert[rows]:
            problems.append(
                f"{rows} rows: PaliGemma {vlm[rows]}, action expert {expert[rows]} (the joint "
                "attention shares heads and head_dim)"
            )
    if head_dim and vlm["kv"] % head_dim:
        problems.append(f"k_proj: {vlm['kv']} rows, not a multiple of head_dim {head_dim}")
    if problems:
        raise WeightImportError(f"{NAME}: {source.path}:\n  " + "\n  ".join(problems))
    notes = []
    for role, name, geo in (
        ("paligemma_variant", settings.variants[0], vlm),
        ("action_expert_variant", settings.variants[1], expert),
    ):
        if name not in VARIANTS:
            continue
        named = dict(zip(("width", "depth", "mlp_width", "head_dim"), VARIANTS[name], strict=True))
        found = {**{k: geo[k] for k in ("width", "depth", "mlp_width")}, "head_dim": head_dim}
        if named != found:
            notes.append(f"{role} {name!r} names {named}, the tensors have {found}: shapes used")
    for note in notes:
        log.warning("%s: %s", source.path, note)
    trunk = {
        "depth": vlm["depth"],
        "heads": PI0_HEADS,
        "kv_heads": vlm["kv"] // head_dim,
        "head_dim": head_dim,
        "rope_base": 10000.0,
        "norm_eps": 1e-6,
        "understanding": {"width": vlm["width"], "mlp_width": vlm["mlp_width"], "mlp": "geglu"},
        "action": {"width": expert["width"], "mlp_width": expert["mlp_width"], "mlp": "geglu"},
    }
    return trunk, notes


def check_not_pi05(source: SourceTensors, keys: Pi0Keys, data: dict[str, Any] | None) -> None:
    """Refuse pi0.5 by its config (lerobot's ``type``) or its tensors (openpi's config does not
    say), and any other lerobot policy type."""
    where = source.root / "config.json"
    kind = (data or {}).get("type")
    if kind == "pi05":
        raise WeightImportError(f"{NAME}: {where}: type pi05. {PI05}")
    if kind is not None and kind != "pi0":
        raise WeightImportError(f"{NAME}: {where}: type {kind!r}, expected 'pi0' (lerobot PI0)")
    names = source.keys()  # SourceTensors is not iterable
    adaptive = [k for k in names if k.startswith(keys.expert) and ".dense." in k]
    time_in = keys.head("time_mlp_in.weight")
    square_time = time_in in source and len(set(source.shape(time_in))) == 1
    if adaptive or (square_time and keys.head("state_proj.weight") not in source):
        found = adaptive[:2] or [time_in]
        raise WeightImportError(f"{NAME}: {source.path} holds pi0.5 tensors ({found}). {PI05}")
