"""F1-VLA importer and exporter: a tiny random state dict in the official layout (key names,
shapes and dtypes from the official code), converted, run by F1, exported back.

Round trips: official -> f1kit -> official is bit-identical for every tensor that maps one to one
(Gemma norms: bit-identical from bf16, within float32 rounding of 1 + w from float32); f1kit ->
official -> f1kit is bit-identical for every f1kit tensor. The import is strict (one error lists
every problem) and reads every alias the official file and its re-saves can use.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file

from f1kit.model import F1
from f1kit.model.importers import (
    PARTS,
    SourceTensors,
    WeightImportError,
    convert_checkpoint,
    init_from,
    read_model_dir,
)
from f1kit.model.importers.f1_vla import (
    export_f1_vla,
    import_f1_vla,
    official_names,
)
from f1kit.model.importers.f1_vla_config import official_config
from f1kit.model.objective import Objective
from foresight import MultiScaleVQVAE, VQVAEConfig
from foresight.var_weights import ours_to_var
from tests.f1kit.model.test_text import make_hf_tokenizer

pytest.importorskip("transformers")

PG = "model.paligemma_with_expert.paligemma."
TEXT = PG + "language_model.model."
VISION = PG + "vision_tower.vision_model."
EXPERTS = {
    "gen": "model.paligemma_with_expert.gemma_wm_expert.",
    "act": "model.paligemma_with_expert.gemma_expert.",
}
# U 64 wide, G and A 48 (no width equals another or the VAE's 32: a transpose cannot hide)
U, E, HEADS, KV, HEAD_DIM, DEPTH, VOCAB = 64, 48, 2, 1, 16, 2, 64
SIGLIP, PATCH, IMAGE = 40, 4, 16
ACTION_DIM, STATE_DIM, CHUNK, RESOLUTIONS = 8, 6, 3, 3
VQ = VQVAEConfig(image_size=64, channels=32, vocab_size=64, scales=(1, 2, 3, 4), phi_count=4)
N = sum(s * s for s in VQ.scales)  # 30 tokens per frame


def gemma(prefix: str, width: int, mlp: int, dtype: torch.dtype) -> dict:
    shapes = {}
    for i in range(DEPTH):
        layer = f"{prefix}layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"{layer}{norm}.weight"] = ((width,), dtype)
        for name, rows in (("q", HEADS * HEAD_DIM), ("k", KV * HEAD_DIM), ("v", KV * HEAD_DIM)):
            shapes[f"{layer}self_attn.{name}_proj.weight"] = ((rows, width), dtype)
        shapes[f"{layer}self_attn.o_proj.weight"] = ((width, HEADS * HEAD_DIM), dtype)
        shapes[f"{layer}mlp.gate_proj.weight"] = ((mlp, width), dtype)
        shapes[f"{layer}mlp.up_proj.weight"] = ((mlp, width), dtype)
        shapes[f"{layer}mlp.down_proj.weight"] = ((width, mlp), dtype)
    return shapes


def linear(name: str, out: int, inp: int, dtype: torch.dtype = torch.float32) -> dict:
    return {f"{name}.weight": ((out, inp), dtype), f"{name}.bias": ((out,), dtype)}


def template() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Official key -> (shape, dtype) at tiny sizes (spec s2: PaliGemma bf16, expert layers bf16,
    expert final norms and LM heads float32, F1's own modules and the VAE float32)."""
    bf16, f32 = torch.bfloat16, torch.float32
    t = {
        VISION + "embeddings.patch_embedding.weight": ((SIGLIP, 3, PATCH, PATCH), bf16),
        VISION + "embeddings.patch_embedding.bias": ((SIGLIP,), bf16),
        VISION + "embeddings.position_embedding.weight": (((IMAGE // PATCH) ** 2, SIGLIP), bf16),
        VISION + "post_layernorm.weight": ((SIGLIP,), bf16),
        VISION + "post_layernorm.bias": ((SIGLIP,), bf16),
        **linear(PG + "multi_modal_projector.linear", U, SIGLIP, bf16),
        **gemma(TEXT, U, 2 * U, bf16),
        TEXT + "norm.weight": ((U,), bf16),
        PG + "language_model.lm_head.weight": ((VOCAB, U), bf16),  # the embedding
    }
    for i in range(DEPTH):
        layer = f"{VISION}encoder.layers.{i}."
        for name in ("q", "k", "v", "out"):
            t.update(linear(f"{layer}self_attn.{name}_proj", SIGLIP, SIGLIP, bf16))
        for name in ("layer_norm1", "layer_norm2"):
            t[f"{layer}{name}.weight"] = ((SIGLIP,), bf16)
            t[f"{layer}{name}.bias"] = ((SIGLIP,), bf16)
        t.update(linear(f"{layer}mlp.fc1", 2 * SIGLIP, SIGLIP, bf16))
        t.update(linear(f"{layer}mlp.fc2", SIGLIP, 2 * SIGLIP, bf16))
    for prefix in EXPERTS.values():
        t.update(gemma(prefix + "model.", E, 2 * E, bf16))
        t[prefix + "model.norm.weight"] = ((E,), f32)
        t[prefix + "lm_head.weight"] = ((VOCAB, E), f32)
    z = VQ.latent_dim
    t.update(linear("model.temporal_conv.conv", z, z, f32))
    t["model.temporal_conv.conv.weight"] = ((z, z, 4), f32)
    t.update(linear("model.wm_embeddings", E, z))
    t["model.wm_hist_pos_embs"] = ((1, N - 1, z), f32)
    t["model.wm_sos_token_embs"] = ((1, 1, E), f32)
    t["model.wm_cond_pos_embs"] = ((1, N, E), f32)
    t["model.wm_output_position_embedding"] = ((1, N, E), f32)
    t["model.lvl_embed.weight"] = ((len(VQ.scales), E), f32)
    t["model.lvl_1L"] = ((1, N), torch.int64)
    t["model.mask_embedding"] = ((1, 1, z), f32)
    t["model.wm_out_layer_norm.weight"] = ((E,), f32)
    t["model.wm_out_layer_norm.bias"] = ((E,), f32)
    t.update(linear("model.wm_out_proj", VQ.vocab_size, E))
    t.update(linear("model.state_proj", E, STATE_DIM))
    t.update(linear("model.action_in_proj", E, ACTION_DIM))
    t.update(linear("model.action_time_mlp_in", E, 2 * E))
    t.update(linear("model.action_time_mlp_out", E, E))
    t.update(linear("model.action_out_proj", ACTION_DIM, E))
    return t


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for the template (norm-like values near 0: Gemma gains near 1); the VAE
    is a random f1kit tokenizer under VAR's names (`ours_to_var`)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in template().items():
        state[key] = (0.1 * torch.randn(shape, generator=g)).to(dtype)
    state["model.lvl_1L"] = torch.repeat_interleave(
        torch.arange(len(VQ.scales)), torch.tensor([s * s for s in VQ.scales])
    )[None]
    torch.manual_seed(seed)
    vae = MultiScaleVQVAE(VQ)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state.update({f"model.vae.{k}": v for k, v in ours_to_var(vae).items()})
    return state


def gemma_config(width: int) -> dict:
    return {
        "model_type": "gemma",
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": DEPTH,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "head_dim": HEAD_DIM,
        "hidden_activation": "gelu_pytorch_tanh",
        "vocab_size": VOCAB,
    }


CONFIG = {  # the official config.json's structure (f1_config.json), tiny sizes
    "und_expert_config": {
        "model_type": "paligemma",
        "projection_dim": U,
        "text_config": gemma_config(U),
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": SIGLIP,
            "intermediate_size": 2 * SIGLIP,
            "num_hidden_layers": DEPTH,
            "num_attention_heads": 2,
            "patch_size": PATCH,
            "vision_use_head": False,
        },
    },
    "gen_expert_config": {
        **gemma_config(E),
        "pn": "1_2_3_4",
        "temporal_conv_kernel_size": 4,
        "temporal_conv_stride": 4,
        "num_resolutions": RESOLUTIONS,
        "vae": {"vocab_size": 4096, "z_channels": 32, "ch": 160, "share_quant_resi": 4},
    },
    "act_expert_config": gemma_config(E),
    "use_world_model": True,
    "chunk_size": CHUNK,
    "max_action_dim": ACTION_DIM,
    "max_state_dim": STATE_DIM,
    "tokenizer_max_length": 8,
    "proj_width": E,
}


def write(root: Path, state: dict[str, torch.Tensor], config: dict = CONFIG) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file(state, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("f1vla")
    make_hf_tokenizer(root / "tok")
    return root


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return official_state()


@pytest.fixture(scope="module")
def converted(tmp: Path, state) -> Path:
    src = write(tmp / "src", state)
    return convert_checkpoint("f1-vla", src, tmp / "dst", text_tokenizer=tmp / "tok").path


def imported(tmp: Path, name: str, state: dict, config: dict = CONFIG) -> dict:
    src = write(tmp / name, state, config)
    return dict(import_f1_vla(SourceTensors(src), text_tokenizer=tmp / "tok").tensors(None))


# ---------------------------------------------------------------- the converted model runs


def test_converted_model_predicts_and_trains(converted: Path) -> None:
    found = read_model_dir(converted)
    cfg = found.config
    assert found.parts == PARTS
    assert cfg.action.weights_convention == "pi0"
    assert (cfg.action.action_dim, cfg.action.state_dim, cfg.action.chunk) == (8, 6, 3)
    assert cfg.generation.scales == RESOLUTIONS and cfg.generation.history == 4
    assert cfg.generation.tokenizer.vqvae_config() == VQ
    assert (cfg.trunk.heads, cfg.trunk.kv_heads, cfg.trunk.head_dim) == (HEADS, KV, HEAD_DIM)
    assert set(found.dropped) == {
        EXPERTS["gen"] + "lm_head.weight",
        EXPERTS["act"] + "lm_head.weight",
        "model.mask_embedding",
        "model.lvl_1L",
    }  # the PaliGemma LM head is the embedding here: read, not dropped
    torch.manual_seed(0)
    model = F1(cfg)
    assert init_from(model, converted) == PARTS
    assert not model.generator.context_to_sos.weight.any()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 1, 3, IMAGE, IMAGE), generator=g, dtype=torch.uint8)
    texts = ["pick up the red block", "open the drawer"]
    history = torch.randint(0, VQ.vocab_size, (2, 4, N), generator=g)
    out = model.eval().predict(images, texts, torch.randn(2, STATE_DIM, generator=g), history)
    assert out.actions.shape == (2, CHUNK, ACTION_DIM) and out.actions.isfinite().all()
    assert [t.shape[1] for t in out.foresight] == [1, 4, 9]
    batch = {
        "images": images,
        "task": texts,
        "state": torch.randn(2, STATE_DIM, generator=g),
        "action": torch.randn(2, CHUNK, ACTION_DIM, generator=g),
        "action_is_pad": torch.zeros(2, CHUNK, dtype=torch.bool),
        "history_codes": history,
        "foresight_codes": torch.randint(0, VQ.vocab_size, (2, N), generator=g),
    }
    loss, metrics = model.train()(batch, g, objective=Objective(generation=0.1, action=1.0))
    assert loss.isfinite() and metrics["loss/generation"] > 0 and metrics["loss/action"] > 0


def test_modules_compute_what_the_official_model_computes(converted: Path, state) -> None:
    """The official formulas (spec s3-s4, written out here) on the official tensors equal f1kit's
    modules on the imported ones: history tokens (fold b), SOS and scale inputs (fold c), the
    VQ head, the state and action tokens (concat order, sin before cos), the norms (+1)."""
    s = {k: v.float() for k, v in state.items()}
    model = F1(read_model_dir(converted).config)
    init_from(model, converted)
    g = torch.Generator().manual_seed(2)
    hist = torch.randn(2, 4, N - 1, VQ.latent_dim, generator=g)
    conv = F.conv1d(
        rearrange(hist, "b t n z -> (b n) z t"),
        s["model.temporal_conv.conv.weight"],
        s["model.temporal_conv.conv.bias"],
    )
    conv = rearrange(conv, "(b n) z 1 -> b n z", b=2)
    wm = (s["model.wm_embeddings.weight"], s["model.wm_embeddings.bias"])
    cond = s["model.wm_cond_pos_embs"][:, 1:]
    official = F.linear(conv + s["model.wm_hist_pos_embs"], *wm) + cond
    ours = model.aggregator(hist)
    assert torch.allclose(ours, official, atol=1e-5)
    assert not torch.allclose(ours, F.linear(conv, *wm) + cond)  # hist_pos matters

    inputs = torch.randn(2, 4, VQ.latent_dim, generator=g)  # scale 2's inputs
    tokens = model.generator.embed_scales(ours, inputs)
    out_pos, lvl = s["model.wm_output_position_embedding"][0], s["model.lvl_embed.weight"]
    sos = s["model.wm_sos_token_embs"][0, 0] + s["model.wm_cond_pos_embs"][0, 0]
    assert torch.allclose(tokens[:, 0], (sos + out_pos[0] + lvl[0]).expand(2, -1), atol=1e-6)
    scale2 = F.linear(inputs, *wm) + out_pos[1:5] + lvl[1]
    assert torch.allclose(tokens[:, 1:], scale2, atol=1e-6)

    h = torch.randn(2, 5, E, generator=g)
    norm = (s["model.wm_out_layer_norm.weight"], s["model.wm_out_layer_norm.bias"])
    logits = F.linear(
        F.layer_norm(h, (E,), *norm), s["model.wm_out_proj.weight"], s["model.wm_out_proj.bias"]
    )
    assert torch.allclose(model.generator.head(h), logits, atol=1e-5)

    head = model.action_head
    x, t = torch.randn(2, CHUNK, ACTION_DIM, generator=g), torch.rand(2, generator=g)
    period = 4e-3 * (4.0 / 4e-3) ** torch.linspace(0, 1, E // 2)
    angle = 2 * math.pi * t[:, None] / period
    time = torch.cat([angle.sin(), angle.cos()], -1)[:, None].expand(-1, CHUNK, -1)
    action = F.linear(x, s["model.action_in_proj.weight"], s["model.action_in_proj.bias"])
    mlp_in = (s["model.action_time_mlp_in.weight"], s["model.action_time_mlp_in.bias"])
    mlp_out = (s["model.action_time_mlp_out.weight"], s["model.action_time_mlp_out.bias"])
    token = F.linear(F.silu(F.linear(torch.cat([action, time], -1), *mlp_in)), *mlp_out)
    assert torch.allclose(head.embed(x, t)[0], token, atol=1e-5)  # t: the weights' own time
    st = torch.randn(2, STATE_DIM, generator=g)
    state_token = F.linear(st, s["model.state_proj.weight"], s["model.state_proj.bias"])
    assert torch.allclose(head.embed_state(st)[:, 0], state_token, atol=1e-6)

    final = EXPERTS["gen"] + "model.norm.weight"
    assert torch.equal(model.trunk.final_norms.generation.weight, state[final] + 1)
    layer_norm = state[TEXT + "layers.1.post_attention_layernorm.weight"]  # bf16: exact in f32
    gain = model.trunk.layers[1].experts.understanding.mlp_norm.weight
    assert torch.equal(gain, layer_norm.float() + 1)
    embedding = state[PG + "language_model.lm_head.weight"].float()
    assert torch.equal(model.understanding.text_embedding.embed.weight, embedding)


# ---------------------------------------------------------------- round trips


def test_official_to_f1kit_to_official_is_exact(converted: Path, state) -> None:
    ours = load_file(str(converted / "model.safetensors"))
    back = export_f1_vla(ours, read_model_dir(converted).config)
    skipped = {EXPERTS["gen"] + "lm_head.weight", EXPERTS["act"] + "lm_head.weight"}
    skipped.add("model.mask_embedding")
    assert set(back) == set(state) - skipped, set(back) ^ (set(state) - skipped)
    folded = {"model.wm_hist_pos_embs", "model.wm_cond_pos_embs", "model.wm_sos_token_embs"}
    norms = {
        name
        for name, kind in official_names(read_model_dir(converted).config).values()
        if kind == "norm"
    }
    assert len(norms) == 3 * (2 * DEPTH + 1)
    for key in set(back) - folded - norms:
        assert back[key].dtype == state[key].dtype and torch.equal(back[key], state[key]), key
    for key in norms:  # 1 + w, then - 1: exact from bf16, float32 rounding of 1 + w otherwise
        exact = state[key].dtype == torch.bfloat16
        again = back[key].to(state[key].dtype)
        assert (
            torch.equal(again, state[key])
            if exact
            else torch.allclose(again, state[key], rtol=0, atol=2**-23)
        ), key
    # the folds keep what the official forward adds: SOS + cond_pos[0]; W hist_pos + cond_pos[1:]
    w = state["model.wm_embeddings.weight"]
    for name, fold in (
        ("sos", lambda s: s["model.wm_sos_token_embs"][0, 0] + s["model.wm_cond_pos_embs"][0, 0]),
        (
            "history",
            lambda s: s["model.wm_hist_pos_embs"][0] @ w.T + s["model.wm_cond_pos_embs"][0, 1:],
        ),
    ):
        assert torch.allclose(fold(back), fold(state), atol=1e-6), name
    assert (
        not back["model.wm_hist_pos_embs"].any() and not back["model.wm_cond_pos_embs"][0, 0].any()
    )


def test_f1kit_to_official_to_f1kit_is_exact(tmp: Path, converted: Path) -> None:
    """From a random f1kit model (every value its own, not the import's), with the two ties the
    official layout imposes: generator.input_proj = aggregator.proj, context_to_sos = 0."""
    cfg = read_model_dir(converted).config
    torch.manual_seed(1)
    model = F1(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and "trunk" in name:
                p.add_(0.1 * torch.randn_like(p))  # gains near 1, not all exactly 1
        model.generator.input_proj.load_state_dict(model.aggregator.proj.state_dict())
        for p in model.generator.context_to_sos.parameters():
            p.zero_()
    state = model.state_dict()
    src = write(tmp / "exported", export_f1_vla(model, cfg), official_config(cfg))
    again = convert_checkpoint("f1-vla", src, tmp / "again", text_tokenizer=tmp / "tok")
    assert again.config.model_copy(update={"text": cfg.text}) == cfg  # (its tokenizer path)
    back = load_file(str(again.weights))
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def test_export_refuses_what_the_official_model_cannot_hold(converted: Path) -> None:
    cfg = read_model_dir(converted).config
    state = load_file(str(converted / "model.safetensors"))
    state["generator.input_proj.bias"] = state["generator.input_proj.bias"] + 1
    state["generator.context_to_sos.weight"] = torch.ones_like(
        state["generator.context_to_sos.weight"]
    )
    paper = cfg.model_copy(
        update={"action": cfg.action.model_copy(update={"weights_convention": "paper"})}
    )
    with pytest.raises(WeightImportError) as err:
        export_f1_vla(state, paper)
    for needle in ("generator.input_proj.bias", "context_to_sos.weight", "weights_convention"):
        assert needle in str(err.value)


# ---------------------------------------------------------------- strictness and aliases


def test_strict_errors_list_every_problem(tmp: Path, state) -> None:
    broken = dict(state)
    del broken[EXPERTS["act"] + "model.layers.1.self_attn.o_proj.weight"]
    broken["model.not_a_tensor_of_f1"] = torch.zeros(2)
    broken["model.wm_out_layer_norm.bias"] = torch.zeros(E + 1)
    with pytest.raises(WeightImportError) as err:
        imported(tmp, "broken", broken)
    text = str(err.value)
    for needle in (
        "layers.1.self_attn.o_proj.weight",
        "model.not_a_tensor_of_f1",
        "head_norm.bias",
    ):
        assert needle in text
    wrong_levels = {**state, "model.lvl_1L": torch.zeros(1, N, dtype=torch.int64)}
    with pytest.raises(WeightImportError, match="lvl_1L"):
        imported(tmp, "levels", wrong_levels)
    heads = {**CONFIG, "act_expert_config": {**gemma_config(E), "num_attention_heads": 4}}
    with pytest.raises(WeightImportError, match=r"num_attention_heads: config\.json says 4"):
        imported(tmp, "heads", state, heads)


def test_every_alias_loads_the_same(tmp: Path, state, converted: Path) -> None:
    """Two checkpoints covering every alias between them load exactly as the official file."""
    base = load_file(str(converted / "model.safetensors"))
    lm_head, embed = PG + "language_model.lm_head.", PG + "language_model.model.embed_tokens."
    vae = {
        k.removeprefix("model."): v.clone() for k, v in state.items() if k.startswith("model.vae.")
    }
    compiled = {  # the embedding apart, the VAE only as vae.*, torch.compile's _orig_mod.
        (k.replace(lm_head, embed).replace("model.", "model._orig_mod.", 1)): v
        for k, v in state.items()
        if not k.startswith("model.vae.")
    } | {f"_orig_mod.{k}": v for k, v in vae.items()}
    resaved = (
        {  # transformers >= 4.52 names, an untied LM head beside the embedding, vae twice
            k.replace(lm_head, embed)
            .replace(PG + "language_model.model.", PG + "model.language_model.")
            .replace(PG + "vision_tower.", PG + "model.vision_tower.")
            .replace(PG + "multi_modal_projector.", PG + "model.multi_modal_projector."): v
            for k, v in state.items()
        }
        | {PG + "lm_head.weight": torch.zeros(VOCAB, U)}
        | vae
    )
    for name, variant in (("compiled", compiled), ("resaved", resaved)):
        got = imported(tmp, name, variant)
        assert got.keys() == base.keys() and all(torch.equal(got[k], base[k]) for k in base), name
    differing = {**state, **vae, "vae.quant_conv.bias": torch.ones(VQ.latent_dim)}
    with pytest.raises(WeightImportError, match=r"quant_conv\.bias and its alias"):
        imported(tmp, "vae_differs", differing)
