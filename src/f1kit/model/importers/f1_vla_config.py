"""The official F1-VLA checkpoint's layout and config: where its model keeps each part (key
prefixes), and its ``config.json`` (the official ``F1Config``) read into an f1kit `F1Config`
against the tensor shapes (`read_config`) or written from one (`official_config`).

Sizes come from the shapes whenever they show them (widths, MLP widths, depth, heads and KV heads
given head_dim, SigLIP's patch and image size, vocabulary, action/state dims, history frames,
the VQ-VAE); config.json supplies what shapes cannot (head_dim, RoPE base, norm eps, SigLIP
heads, scales ``pn``, ``num_resolutions``, chunk size, instruction length), the official values
filling missing fields. A config.json value that disagrees with the shapes is an error, and every
problem is listed at once. The ``vae`` dict of config.json is ignored (the official code
overwrites it with VAR's defaults); the VAE's own shapes decide.
"""

import re
from typing import Any

from attention import ACTION, GENERATION, UNDERSTANDING
from f1kit.model.config import F1Config
from f1kit.model.importers.mapping import WeightImportError
from f1kit.model.importers.paligemma import GELU_TANH, GEMMA_LEGACY_GELU, SIGLIP_ARGS
from f1kit.model.importers.source import SourceTensors
from foresight import VQVAEConfig
from foresight.var_weights import var_config

PG = "model.paligemma_with_expert.paligemma."
EXPERT_PREFIX = {
    UNDERSTANDING: PG + "language_model.model.",
    GENERATION: "model.paligemma_with_expert.gemma_wm_expert.model.",
    ACTION: "model.paligemma_with_expert.gemma_expert.model.",
}
VISION = PG + "vision_tower.vision_model."
EMBED = PG + "language_model.model.embed_tokens.weight"
EMBED_STORED = PG + "language_model.lm_head.weight"  # the official file's name of the embedding
VAE = "model.vae."

OFFICIAL = {  # the official F1Config's values (configuration_f1.py), for fields config.json lacks
    "text": {"head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0},
    "vision": {
        "num_attention_heads": 16,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu_pytorch_tanh",
    },
    "top": {"chunk_size": 50, "tokenizer_max_length": 48},
    "gen": {"pn": "1_2_3_4_5_6_8_10_13_16", "num_resolutions": 4},
}


class _Sizes:
    """Reads sizes off the checkpoint's shapes, checking config.json's values against them."""

    def __init__(self, source: SourceTensors, groups: dict[str, list[str]]) -> None:
        self.source, self.groups = source, groups
        self.problems: list[str] = []

    def shape(self, name: str) -> tuple[int, ...] | None:
        keys = self.groups.get(name)
        return self.source.shape(keys[0]) if keys else None

    def depth(self, prefix: str) -> int | None:
        found = {
            int(m[1]) for n in self.groups if (m := re.match(re.escape(prefix) + r"(\d+)\.", n))
        }
        return max(found) + 1 if found else None

    def pick(self, where: str, given: dict, key: str, derived: Any, default: Any = None) -> Any:
        """The size the tensors show (checked against config.json), else config.json's, else
        the official default."""
        if derived is None:
            value = given.get(key, default)
            if value is None:
                self.problems.append(
                    f"{where}.{key}: neither in config.json nor readable off tensors"
                )
            return value
        if key in given and given[key] != derived:
            self.problems.append(
                f"{where}.{key}: config.json says {given[key]}, the tensors {derived}"
            )
        return derived

    def gemma(self, where: str, prefix: str, given: dict) -> dict[str, Any]:
        """A Gemma decoder's sizes (the tensors') and settings (config.json's / official)."""
        q = self.shape(prefix + "layers.0.self_attn.q_proj.weight")
        k = self.shape(prefix + "layers.0.self_attn.k_proj.weight")
        gate = self.shape(prefix + "layers.0.mlp.gate_proj.weight")
        head_dim = given.get("head_dim", OFFICIAL["text"]["head_dim"])
        for name, rows in (("q_proj", q), ("k_proj", k)):
            if rows is not None and rows[0] % head_dim:
                self.problems.append(
                    f"{where}: {name} rows {rows[0]} not a multiple of head_dim {head_dim}"
                )
        out = {
            "width": self.pick(where, given, "hidden_size", q and q[1]),
            "mlp_width": self.pick(where, given, "intermediate_size", gate and gate[0]),
            "depth": self.pick(where, given, "num_hidden_layers", self.depth(prefix + "layers.")),
            "heads": self.pick(where, given, "num_attention_heads", q and q[0] // head_dim),
            "kv_heads": self.pick(where, given, "num_key_value_heads", k and k[0] // head_dim),
            "head_dim": head_dim,
            "rope_base": float(given.get("rope_theta", OFFICIAL["text"]["rope_theta"])),
            "norm_eps": float(given.get("rms_norm_eps", OFFICIAL["text"]["rms_norm_eps"])),
        }
        act = given.get("hidden_activation") or given.get("hidden_act")
        if act is not None and act not in (*GELU_TANH, GEMMA_LEGACY_GELU):
            self.problems.append(f"{where}.hidden_activation: {act!r}; f1kit's GeGLU is GELU-tanh")
        if given.get("attention_bias"):
            self.problems.append(f"{where}.attention_bias: true; f1kit's attention has no biases")
        if given.get("rope_scaling"):
            self.problems.append(
                f"{where}.rope_scaling: {given['rope_scaling']}; f1kit's RoPE is unscaled"
            )
        return out

    def siglip(self, given: dict) -> dict[str, Any]:
        """The ``siglip`` encoder's SiglipVisionConfig fields."""
        patch = self.shape(VISION + "embeddings.patch_embedding.weight")
        pos = self.shape(VISION + "embeddings.position_embedding.weight")
        fc1 = self.shape(VISION + "encoder.layers.0.mlp.fc1.weight")
        side = round(pos[0] ** 0.5) if pos else None
        if pos and side * side != pos[0]:
            self.problems.append(
                f"vision_config: {pos[0]} position embeddings are not a square grid"
            )
        where = "und_expert_config.vision_config"
        args = {
            "hidden_size": self.pick(where, given, "hidden_size", patch and patch[0]),
            "intermediate_size": self.pick(where, given, "intermediate_size", fc1 and fc1[0]),
            "num_hidden_layers": self.pick(
                where, given, "num_hidden_layers", self.depth(VISION + "encoder.layers.")
            ),
            "patch_size": self.pick(where, given, "patch_size", patch and patch[-1]),
            "image_size": self.pick(
                where, given, "image_size", patch and side and patch[-1] * side
            ),
            "num_channels": self.pick(where, given, "num_channels", patch and patch[1]),
        }
        for key in ("num_attention_heads", "layer_norm_eps", "hidden_act"):
            args[key] = given.get(key, OFFICIAL["vision"][key])
        assert set(args) == set(SIGLIP_ARGS)
        return args


def read_config(source: SourceTensors, groups: dict[str, list[str]], chunk: int | None) -> F1Config:
    """The F1 these official tensors fit (config.json's settings, the tensors' sizes)."""
    data = source.read_json("config.json", required=False) or {}
    if data and not {"und_expert_config", "gen_expert_config", "act_expert_config"} & set(data):
        raise WeightImportError(
            f"f1-vla: {source.root / 'config.json'} is not an F1-VLA config "
            "(no und/gen/act_expert_config)"
        )
    sizes = _Sizes(source, groups)
    und, gen, act = (data.get(f"{k}_expert_config") or {} for k in ("und", "gen", "act"))
    if data.get("use_world_model") is False:
        sizes.problems.append("use_world_model: false; this importer reads F1 with its world model")
    experts = {
        UNDERSTANDING: sizes.gemma(
            "und_expert_config.text_config",
            EXPERT_PREFIX[UNDERSTANDING],
            und.get("text_config") or {},
        ),
        GENERATION: sizes.gemma("gen_expert_config", EXPERT_PREFIX[GENERATION], gen),
        ACTION: sizes.gemma("act_expert_config", EXPERT_PREFIX[ACTION], act),
    }
    shared = ("depth", "heads", "kv_heads", "head_dim", "rope_base", "norm_eps")
    for key in shared:
        values = {name: e[key] for name, e in experts.items()}
        if len(set(values.values())) > 1:
            sizes.problems.append(f"{key}: the experts differ {values}; the MoT trunk shares it")
    vision = sizes.siglip(und.get("vision_config") or {})
    embed = sizes.shape(EMBED) or sizes.shape(EMBED_STORED)
    vocab = sizes.pick(
        "und_expert_config.text_config",
        und.get("text_config") or {},
        "vocab_size",
        embed and embed[0],
    )
    conv = sizes.shape("model.temporal_conv.conv.weight")
    frames = sizes.pick("gen_expert_config", gen, "temporal_conv_kernel_size", conv and conv[-1])
    if gen.get("temporal_conv_stride", frames) != frames:
        sizes.problems.append(
            f"gen_expert_config.temporal_conv_stride: "
            f"{gen['temporal_conv_stride']}, f1kit needs the kernel size {frames}"
        )
    state_in, action_in = (
        sizes.shape("model.state_proj.weight"),
        sizes.shape("model.action_in_proj.weight"),
    )
    action_dim = sizes.pick("config", data, "max_action_dim", action_in and action_in[1])
    state_dim = sizes.pick("config", data, "max_state_dim", state_in and state_in[1])
    sizes.pick("config", data, "proj_width", experts[ACTION]["width"])
    pn = gen.get("pn", OFFICIAL["gen"]["pn"])
    scales = tuple(int(s) for s in pn.split("_")) if isinstance(pn, str) else tuple(pn)
    vae = {n.removeprefix(VAE): source.meta(k[0]) for n, k in groups.items() if n.startswith(VAE)}
    tokenizer: dict[str, Any] = {"preset": "var_256"}
    try:
        vq = var_config(vae, scales=scales)
        preset = VQVAEConfig.var_256()
        tokenizer["overrides"] = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vq.__dict__.items()
            if getattr(preset, k) != v
        }
    except ValueError as err:
        sizes.problems.append(f"model.vae.*: {err}")
    if sizes.problems:
        raise WeightImportError(
            f"f1-vla: {source.path} cannot be sized:\n  " + "\n  ".join(sizes.problems)
        )
    chunk = (
        chunk if chunk is not None else int(data.get("chunk_size", OFFICIAL["top"]["chunk_size"]))
    )
    geometry = {key: experts[UNDERSTANDING][key] for key in shared}
    widths = {
        name: {"width": e["width"], "mlp_width": e["mlp_width"], "mlp": "geglu"}
        for name, e in experts.items()
    }
    max_length = data.get("tokenizer_max_length", OFFICIAL["top"]["tokenizer_max_length"])
    try:
        return F1Config.model_validate(
            {
                "vision": {"name": "siglip", "args": vision},
                # the official prompt is the task + "\n", BOS, no EOS (as pi0's): the "\n" is
                # the caller's
                "text": {
                    "name": "hf",
                    "args": {"path": "tokenizer", "max_length": max_length, "append_eos": False},
                },
                "text_vocab": vocab,
                "trunk": {**geometry, **widths},
                "generation": {
                    "history": frames,
                    "scales": gen.get("num_resolutions", OFFICIAL["gen"]["num_resolutions"]),
                    "tokenizer": tokenizer,
                },
                "action": {
                    "action_dim": action_dim,
                    "state_dim": state_dim,
                    "chunk": chunk,
                    "execute": chunk,
                    "weights_convention": "pi0",
                },
            }
        )
    except ValueError as err:
        raise WeightImportError(f"f1-vla: {source.path}: no f1kit F1 fits it:\n{err}") from err


def _gemma_config(config: F1Config, expert: str) -> dict[str, Any]:
    t = config.trunk
    widths = getattr(t, expert)
    return {
        "model_type": "gemma",
        "hidden_size": widths.width,
        "intermediate_size": widths.mlp_width,
        "num_hidden_layers": t.depth,
        "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads,
        "head_dim": t.head_dim,
        "rms_norm_eps": t.norm_eps,
        "rope_theta": t.rope_base,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_act": "gelu_pytorch_tanh",
        "attention_bias": False,
    }


def official_config(config: F1Config) -> dict[str, Any]:
    """The official ``config.json`` (F1Config fields) of the F1 ``config`` describes."""
    gen = config.generation
    if gen is None or config.text_vocab is None:
        raise ValueError("f1-vla: the official layout needs a Generation expert and text_vocab")
    vq = gen.tokenizer.vqvae_config()
    text = {**_gemma_config(config, UNDERSTANDING), "vocab_size": config.text_vocab}
    vision = {
        "model_type": "siglip_vision_model",
        "vision_use_head": False,
        **{k: config.vision.args[k] for k in SIGLIP_ARGS if k in config.vision.args},
    }
    return {
        "model_type": "f1",
        "und_expert_config": {
            "model_type": "paligemma",
            "projection_dim": text["hidden_size"],
            "hidden_size": text["hidden_size"],
            "text_config": text,
            "vision_config": vision,
        },
        "gen_expert_config": {
            **_gemma_config(config, GENERATION),
            "vocab_size": config.text_vocab,
            "pn": "_".join(str(s) for s in vq.scales),
            "temporal_conv_kernel_size": gen.history,
            "temporal_conv_stride": gen.history,
            "num_resolutions": gen.scales,
            "vae": {
                "vocab_size": vq.vocab_size,
                "z_channels": vq.latent_dim,
                "ch": vq.channels,
                "share_quant_resi": vq.phi_count,
            },
        },
        "act_expert_config": {**_gemma_config(config, ACTION), "vocab_size": config.text_vocab},
        "use_world_model": True,
        "proj_width": config.trunk.action.width,
        "chunk_size": config.action.chunk,
        "max_action_dim": config.action.action_dim,
        "max_state_dim": config.action.state_dim,
        "tokenizer_max_length": config.text.args.get("max_length", 48),
    }
