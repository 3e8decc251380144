"""pi0 importer: tiny random checkpoints in lerobot's and openpi's key layouts, converted and run.

The checkpoints are written from the key template of lerobot's ``PI0Policy.save_pretrained``
(and openpi's PyTorch files: the same keys without ``model.``, the embedding saved only as the
tied LM head), so these tests need neither lerobot nor transformers' PaliGemma. The parity with
lerobot's own PI0 forward and sampler is `test_lerobot_parity` (scripts/check_pi0_parity.py),
which runs only where a lerobot environment exists.
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from attention import ACTION, UNDERSTANDING
from f1kit.model import F1
from f1kit.model.config import F1Config
from f1kit.model.importers import (
    IMPORTERS,
    ModelDirError,
    SourceError,
    SourceTensors,
    WeightImportError,
    convert_checkpoint,
    init_from,
    read_model_dir,
)
from f1kit.model.text import TokenizedText
from f1kit.model.trunk import ActionExpert
from flow import BetaTime
from tests.f1kit.model.helpers import MICRO_TOKENIZER
from tests.f1kit.model.test_text import make_hf_tokenizer

pytest.importorskip("transformers")  # the siglip encoder and the hf tokenizer


@dataclass(frozen=True)
class Sizes:
    """A pi0's sizes: tiny by default; `PAPER` is pi0_base's (gemma_2b, gemma_300m, So400m)."""

    vlm: int = 64
    vlm_mlp: int = 128
    expert: int = 32
    expert_mlp: int = 64
    depth: int = 2
    head_dim: int = 16
    vocab: int = 300
    siglip: int = 32
    siglip_mlp: int = 64
    siglip_depth: int = 2
    patch: int = 4
    image: int = 8
    action: int = 8
    state: int = 6


TINY = Sizes()
PAPER = Sizes(2048, 16384, 1024, 4096, 18, 256, 257152, 1152, 4304, 27, 14, 224, 32, 32)
VLM, VLM_MLP, EXPERT, EXPERT_MLP = TINY.vlm, TINY.vlm_mlp, TINY.expert, TINY.expert_mlp
DEPTH, HEAD_DIM, VOCAB = TINY.depth, TINY.head_dim, TINY.vocab
SIGLIP, SIGLIP_DEPTH, PATCH, IMAGE = TINY.siglip, TINY.siglip_depth, TINY.patch, TINY.image
ACT, STATE, CHUNK, TEXT, STEPS = TINY.action, TINY.state, 4, 6, 5
WEIGHTS = "model.safetensors"
PG = "model.paligemma_with_expert.paligemma."
EX = "model.paligemma_with_expert.gemma_expert."
OPTIONS = {"vision_heads": 2}


# ---------------------------------------------------------------- tiny checkpoints


def gemma_layer(
    prefix: str, width: int, mlp: int, pi05: bool = False, head_dim: int = HEAD_DIM
) -> dict[str, tuple]:
    shapes = {
        f"{prefix}self_attn.q_proj.weight": (8 * head_dim, width),
        f"{prefix}self_attn.k_proj.weight": (head_dim, width),
        f"{prefix}self_attn.v_proj.weight": (head_dim, width),
        f"{prefix}self_attn.o_proj.weight": (width, 8 * head_dim),
        f"{prefix}mlp.gate_proj.weight": (mlp, width),
        f"{prefix}mlp.up_proj.weight": (mlp, width),
        f"{prefix}mlp.down_proj.weight": (width, mlp),
    }
    for norm in ("input_layernorm", "post_attention_layernorm"):
        if pi05:
            shapes[f"{prefix}{norm}.dense.weight"] = (3 * width, width)
            shapes[f"{prefix}{norm}.dense.bias"] = (3 * width,)
        else:
            shapes[f"{prefix}{norm}.weight"] = (width,)
    return shapes


def lerobot_shapes(sizes: Sizes = TINY, expert_depth: int | None = None) -> dict[str, tuple]:
    """lerobot's pi0 key template (spec s1) at ``sizes``."""
    z = sizes
    vt = f"{PG}model.vision_tower.vision_model."
    shapes: dict[str, tuple] = {
        f"{PG}lm_head.weight": (z.vocab, z.vlm),
        f"{vt}embeddings.patch_embedding.weight": (z.siglip, 3, z.patch, z.patch),
        f"{vt}embeddings.patch_embedding.bias": (z.siglip,),
        f"{vt}embeddings.position_embedding.weight": ((z.image // z.patch) ** 2, z.siglip),
        f"{vt}post_layernorm.weight": (z.siglip,),
        f"{vt}post_layernorm.bias": (z.siglip,),
        f"{PG}model.multi_modal_projector.linear.weight": (z.vlm, z.siglip),
        f"{PG}model.multi_modal_projector.linear.bias": (z.vlm,),
        f"{PG}model.language_model.embed_tokens.weight": (z.vocab, z.vlm),
        f"{PG}model.language_model.norm.weight": (z.vlm,),
        f"{EX}lm_head.weight": (z.vocab, z.expert),
        f"{EX}model.norm.weight": (z.expert,),
        "model.action_in_proj.weight": (z.expert, z.action),
        "model.action_in_proj.bias": (z.expert,),
        "model.action_out_proj.weight": (z.action, z.expert),
        "model.action_out_proj.bias": (z.action,),
        "model.state_proj.weight": (z.expert, z.state),
        "model.state_proj.bias": (z.expert,),
        "model.action_time_mlp_in.weight": (z.expert, 2 * z.expert),
        "model.action_time_mlp_in.bias": (z.expert,),
        "model.action_time_mlp_out.weight": (z.expert, z.expert),
        "model.action_time_mlp_out.bias": (z.expert,),
    }
    for i in range(z.siglip_depth):
        layer = f"{vt}encoder.layers.{i}."
        for name in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{name}.weight"] = shapes[f"{layer}{name}.bias"] = (z.siglip,)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{name}.weight"] = (z.siglip, z.siglip)
            shapes[f"{layer}self_attn.{name}.bias"] = (z.siglip,)
        shapes[f"{layer}mlp.fc1.weight"] = (z.siglip_mlp, z.siglip)
        shapes[f"{layer}mlp.fc1.bias"] = (z.siglip_mlp,)
        shapes[f"{layer}mlp.fc2.weight"] = (z.siglip, z.siglip_mlp)
        shapes[f"{layer}mlp.fc2.bias"] = (z.siglip,)
    for i in range(z.depth):
        prefix = f"{PG}model.language_model.layers.{i}."
        shapes.update(gemma_layer(prefix, z.vlm, z.vlm_mlp, head_dim=z.head_dim))
    for i in range(z.depth if expert_depth is None else expert_depth):
        prefix = f"{EX}model.layers.{i}."
        shapes.update(gemma_layer(prefix, z.expert, z.expert_mlp, head_dim=z.head_dim))
    return shapes


def write_shapes_only(path: Path, shapes: dict[str, tuple]) -> Path:
    """A safetensors file with these tensors' headers and no data written (a sparse file): the
    importer plans from headers alone, so a 4 B-parameter checkpoint costs a few KB of disk."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * math.prod(shape)  # bf16
        header[key] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    data = json.dumps(header).encode()
    data += b" " * (-len(data) % 8)
    with open(path, "wb") as f:
        f.write(len(data).to_bytes(8, "little") + data)
        f.truncate(8 + len(data) + offset)
    return path


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors; norms too, so a missing +1 shows. Embedding-like tables are unit scale."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        fan_in = shape[-1] if len(shape) > 1 else 1
        scale = 0.3 if len(shape) == 1 else fan_in**-0.5
        state[key] = torch.randn(shape, generator=g) * scale
    return state


def lerobot_config(**overrides) -> dict:
    """The fields of lerobot's saved PI0Config that matter here (the rest are training knobs)."""
    return {
        "type": "pi0",
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "chunk_size": CHUNK,
        "n_action_steps": CHUNK - 1,
        "max_state_dim": STATE,
        "max_action_dim": ACT,
        "num_inference_steps": STEPS,
        "tokenizer_max_length": TEXT,
        "image_resolution": [IMAGE, IMAGE],
        "time_sampling_beta_alpha": 1.5,
        "time_sampling_beta_beta": 1.0,
        "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001,
        "min_period": 0.004,
        "max_period": 4.0,
        "input_features": {"observation.state": {"type": "STATE", "shape": [STATE]}},
        **overrides,
    }


def write_checkpoint(root: Path, state: dict[str, torch.Tensor], config: dict | None) -> Path:
    root.mkdir(parents=True)
    save_file(state, str(root / WEIGHTS))
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return root


def openpi_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights as openpi saves them: no ``model.``; the embedding only as lm_head."""
    out = {k.removeprefix("model."): v for k, v in state.items()}
    embed = out.pop("paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight")
    out["paligemma_with_expert.paligemma.lm_head.weight"] = embed
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_tokenizer(tmp_path_factory.mktemp("tok") / "paligemma-tokenizer")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state(lerobot_shapes())


@pytest.fixture(scope="module")
def source(state, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("pi0") / "src", state, lerobot_config())


@pytest.fixture(scope="module")
def converted(source: Path, tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "pi0-f1kit"
    convert_checkpoint("pi0", source, dst, text_tokenizer=tokenizer, **OPTIONS)
    return dst


def f1_from(directory: Path) -> F1:
    model = F1(read_model_dir(directory).config).eval()
    assert init_from(model, directory) == (UNDERSTANDING, ACTION)
    return model


# ---------------------------------------------------------------- the mapping, tensor by tensor

RENAMES = (  # (lerobot prefix, f1kit prefix), written independently of the importer
    (f"{PG}model.vision_tower.vision_model.", "understanding.vision.backbone."),
    (f"{PG}model.multi_modal_projector.linear.", "understanding.vision.proj."),
    (f"{PG}model.language_model.embed_tokens.", "understanding.text_embedding.embed."),
    (f"{PG}model.language_model.norm.", "trunk.final_norms.understanding."),
    (f"{EX}model.norm.", "trunk.final_norms.action."),
    ("model.state_proj.", "action_head.state_in."),
    ("model.action_in_proj.", "action_head.action_in."),
    ("model.action_time_mlp_in.", "action_head.time_mlp.0."),
    ("model.action_time_mlp_out.", "action_head.time_mlp.2."),
    ("model.action_out_proj.", "action_head.action_out."),
)
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "mlp_norm",
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.o_proj": "o",
    "mlp.gate_proj": "mlp.gate",
    "mlp.up_proj": "mlp.up",
    "mlp.down_proj": "mlp.down",
}


def f1kit_name(key: str) -> tuple[str, bool] | None:
    """f1kit's name of a lerobot tensor and whether it is a Gemma norm (stored gain - 1); None
    for the LM heads."""
    for decoder, expert in (
        (f"{PG}model.language_model.", "understanding"),
        (f"{EX}model.", "action"),
    ):
        if key.startswith(f"{decoder}layers."):
            i, rest = key.removeprefix(f"{decoder}layers.").split(".", 1)
            module, tensor = rest.rsplit(".", 1)
            name = LAYER_NAMES[module]
            return f"trunk.layers.{i}.experts.{expert}.{name}.{tensor}", "norm" in name
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key.removeprefix(old), "final_norms" in new
    return None


def assert_every_tensor_lands(state, model, name_of) -> None:
    """Each source tensor is in ``model`` under ``name_of(key)`` (Gemma norms + 1), only the LM
    heads are left out, and nothing in the model comes from elsewhere."""
    ours = model.state_dict()
    checked = set()
    for key, tensor in state.items():
        named = name_of(key)
        if named is None:
            assert "lm_head" in key
            continue
        name, gemma_norm = named
        expected = tensor + 1 if gemma_norm else tensor
        assert torch.equal(ours[name], expected), name
        checked.add(name)
    assert checked == set(ours)  # nothing in the model was left out


def test_every_tensor_lands_where_pi0_uses_it(state, converted: Path) -> None:
    model = f1_from(converted)
    assert_every_tensor_lands(state, model, f1kit_name)
    ours = model.state_dict()
    # the counter-case: a Gemma norm taken as stored would not match
    norm = "trunk.layers.1.experts.action.mlp_norm.weight"
    assert not torch.equal(ours[norm], state[f"{EX}model.layers.1.post_attention_layernorm.weight"])


def test_model_directory_records_a_no_gen_f1_in_pi0_convention(converted: Path) -> None:
    found = read_model_dir(converted)
    config = found.config
    assert found.parts == (UNDERSTANDING, ACTION)
    assert config.generation is None and config.trunk.generation is None
    trunk = config.trunk
    assert (trunk.depth, trunk.heads, trunk.kv_heads, trunk.head_dim) == (DEPTH, 8, 1, HEAD_DIM)
    assert (trunk.understanding.width, trunk.understanding.mlp_width) == (VLM, VLM_MLP)
    assert (trunk.action.width, trunk.action.mlp_width) == (EXPERT, EXPERT_MLP)
    assert (trunk.rope_base, trunk.norm_eps) == (10000.0, 1e-6)
    assert config.text_vocab == VOCAB
    assert config.vision.name == "siglip"
    vision = config.vision.args
    assert (vision["hidden_size"], vision["image_size"], vision["patch_size"]) == (
        SIGLIP,
        IMAGE,
        PATCH,
    )
    assert (vision["num_hidden_layers"], vision["num_attention_heads"]) == (SIGLIP_DEPTH, 2)
    assert config.text.args["max_length"] == TEXT and config.text.args["append_eos"] is False
    action = config.action
    assert (action.action_dim, action.state_dim, action.chunk, action.execute) == (
        ACT, STATE, CHUNK, CHUNK - 1,
    )  # fmt: skip
    assert action.weights_convention == "pi0"
    assert action.solver.name == "euler" and action.solver.args == {"steps": STEPS}
    assert action.time_sampler.name == "beta"
    assert action.time_sampler.args == {"alpha": 1.5, "beta": 1.0, "scale": 0.999}
    assert sorted(found.dropped) == [f"{EX}lm_head.weight", f"{PG}lm_head.weight"]
    assert "never decodes text" in found.dropped[f"{PG}lm_head.weight"]
    assert found.source["layout"] == "lerobot"
    assert found.source["embedding"].endswith("embed_tokens.weight")
    assert found.source["source_config"]["input_features"]["observation.state"]["shape"] == [STATE]
    # the variant names promise paper sizes; the tensors win, and the record says so
    notes = " ".join(found.source["variant_notes"])
    assert "'gemma_2b'" in notes and "'gemma_300m'" in notes and "shapes used" in notes


def test_tokenizer_is_copied_and_required(source: Path, tokenizer: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="text_tokenizer=<a local directory"):
        convert_checkpoint("pi0", source, tmp_path / "dst", **OPTIONS)
    assert not (tmp_path / "dst").exists()
    dst = tmp_path / "with-tok"
    found = convert_checkpoint("pi0", source, dst, text_tokenizer=tokenizer, **OPTIONS)
    assert (dst / "tokenizer" / "tokenizer.json").read_bytes() == (
        tokenizer / "tokenizer.json"
    ).read_bytes()
    model = F1(found.config)
    text = model.understanding.encode_text(["open the drawer\n"])
    assert text.ids.shape == (1, TEXT) and text.valid[0].sum() == 4  # BOS + 3 words, no EOS


# ---------------------------------------------------------------- openpi's layout


def test_openpi_layout_converts_to_the_same_weights(
    state, converted: Path, tokenizer: Path, tmp_path: Path
) -> None:
    shapes = lerobot_shapes()
    shapes["model.state_proj.weight"] = (EXPERT, ACT)  # openpi's state_proj takes action_dim
    lerobot = {
        **state,
        "model.state_proj.weight": random_state(shapes, 1)["model.state_proj.weight"],
    }
    config = {"action_dim": ACT, "action_horizon": CHUNK, "paligemma_variant": "gemma_2b",
              "action_expert_variant": "gemma_300m", "precision": "float32"}  # fmt: skip
    src = write_checkpoint(tmp_path / "openpi", openpi_state(lerobot), config)
    found = convert_checkpoint(
        "pi0", src, tmp_path / "dst", text_tokenizer=tokenizer, text_max_length=TEXT, **OPTIONS
    )
    ours, reference = load_file(found.weights), load_file(converted / WEIGHTS)
    assert ours.keys() == reference.keys()
    for key in ours:
        expected = (
            lerobot["model.state_proj.weight"]
            if key == "action_head.state_in.weight"
            else reference[key]
        )
        assert torch.equal(ours[key], expected), key
    assert found.source["layout"] == "openpi"
    assert found.source["embedding"] == "paligemma_with_expert.paligemma.lm_head.weight"
    assert list(found.dropped) == ["paligemma_with_expert.gemma_expert.lm_head.weight"]
    action = found.config.action
    assert (action.chunk, action.execute, action.state_dim, action.solver.args["steps"]) == (
        CHUNK, CHUNK, ACT, 10,
    )  # fmt: skip
    # without a config.json the chunk length is in no tensor: the option is required
    (src / "config.json").unlink()
    with pytest.raises(SourceError, match="chunk=<action_horizon>"):
        convert_checkpoint("pi0", src, tmp_path / "dst2", text_tokenizer=tokenizer, **OPTIONS)
    found = convert_checkpoint(
        "pi0", src, tmp_path / "dst2", text_tokenizer=tokenizer, chunk=CHUNK, **OPTIONS
    )
    assert found.config.action.chunk == CHUNK and found.config.text.args["max_length"] == 48
    assert found.source["config"].startswith("none")


def test_time_mlp_under_its_pi05_name_is_read_as_pi0s(
    state, converted: Path, tokenizer: Path, tmp_path: Path
) -> None:
    """lerobot loads pi0 files whose time MLP is named ``time_mlp_*`` (renamed on load): so do we,
    telling it from pi0.5's by its [w, 2w] input (pi0.5's is square and has no state_proj)."""
    renamed = {k.replace("model.action_time_mlp", "model.time_mlp"): v for k, v in state.items()}
    src = write_checkpoint(tmp_path / "src", renamed, lerobot_config())
    found = convert_checkpoint("pi0", src, tmp_path / "dst", text_tokenizer=tokenizer, **OPTIONS)
    ours, reference = load_file(found.weights), load_file(converted / WEIGHTS)
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


# ---------------------------------------------------------------- refusals


def test_broken_checkpoint_lists_every_problem_in_one_error(
    state, tokenizer: Path, tmp_path: Path
) -> None:
    broken = dict(state)
    del broken[f"{EX}model.layers.1.mlp.up_proj.weight"]
    broken["model.some_new_proj.weight"] = torch.ones(3)
    q = f"{PG}model.language_model.layers.1.self_attn.q_proj.weight"
    broken[q] = torch.zeros(q_rows := 8 * HEAD_DIM + 1, VLM)
    src = write_checkpoint(tmp_path / "src", broken, lerobot_config())
    with pytest.raises(WeightImportError) as info:
        convert_checkpoint("pi0", src, tmp_path / "dst", text_tokenizer=tokenizer, **OPTIONS)
    message = str(info.value)
    assert f"{EX}model.layers.1.mlp.up_proj.weight" in message  # missing
    assert "trunk.layers.1.experts.action.mlp.up.weight" in message
    assert "model.some_new_proj.weight" in message  # unexpected
    q_target = "trunk.layers.1.experts.understanding.q.weight"
    assert f"{q_target}: f1kit (128, 64), source gives ({q_rows}, 64)" in message
    assert not (tmp_path / "dst").exists()


def test_pi05_is_refused_by_config_and_by_its_tensors(
    state, tokenizer: Path, tmp_path: Path
) -> None:
    src = write_checkpoint(tmp_path / "typed", state, lerobot_config(type="pi05"))
    with pytest.raises(
        WeightImportError, match=r"type pi05\. pi0\.5 is not supported: .*adaptive RMSNorm"
    ):
        convert_checkpoint("pi0", src, tmp_path / "dst", text_tokenizer=tokenizer, **OPTIONS)
    # openpi's config does not say pi05: its adaptive norms do
    pi05 = {k: v for k, v in state.items() if "layernorm" not in k or not k.startswith(EX)}
    pi05.update(random_state(gemma_layer(f"{EX}model.layers.0.", EXPERT, EXPERT_MLP, pi05=True)))
    config = {"action_dim": ACT, "action_horizon": CHUNK}
    src = write_checkpoint(tmp_path / "openpi05", openpi_state(pi05), config)
    with pytest.raises(WeightImportError, match=r"holds pi0\.5 tensors .*layernorm\.dense"):
        convert_checkpoint("pi0", src, tmp_path / "dst", text_tokenizer=tokenizer, **OPTIONS)
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expert_depth": 1}, "depth: PaliGemma 2 layers, action expert 1"),
        ({"max_action_dim": 7}, "max_action_dim 7, but action_in_proj takes 8"),
        ({"image_resolution": [16, 16]}, r"image_resolution \[16, 16\], but the position"),
        ({"time_sampling_offset": 0.0}, "time_sampling_offset 0.0 \\+ time_sampling_scale"),
        ({"max_period": 10.0}, "max_period 10.0"),
        ({"use_relative_actions": True}, "use_relative_actions true"),
        ({"type": "smolvla"}, "type 'smolvla', expected 'pi0'"),
        ({"vision_heads": None}, "pass vision_heads="),
        ({"chunk": 9}, "chunk=9, but .* says chunk_size: 4"),
    ],
)
def test_inconsistent_sources_are_refused(
    change: dict, message: str, state, tokenizer: Path, tmp_path: Path
) -> None:
    change = dict(change)
    options = {**OPTIONS, "text_tokenizer": tokenizer}
    weights = state
    if "expert_depth" in change:
        shapes = lerobot_shapes(expert_depth=change.pop("expert_depth"))
        weights = {k: v for k, v in state.items() if k in shapes}
    for key in ("vision_heads", "chunk"):
        if key in change:
            options[key] = change.pop(key)
    src = write_checkpoint(tmp_path / "src", weights, lerobot_config(**change))
    with pytest.raises(WeightImportError, match=message):
        convert_checkpoint("pi0", src, tmp_path / "dst", **options)


# ---------------------------------------------------------------- targets and conventions


def test_paper_size_pi0_plans_to_the_paper_sized_no_gen_f1(tokenizer: Path, tmp_path: Path) -> None:
    """pi0_base's 778 tensors (4.03 B parameters, headers only): the shapes give the paper's
    trunk, So400m's 16 heads need no option, the variant names agree, every tensor is planned."""
    shapes = lerobot_shapes(PAPER)
    assert len(shapes) == 778 and round(sum(math.prod(s) for s in shapes.values()) / 1e9, 2) == 4.03
    root = tmp_path / "pi0_base"
    root.mkdir()
    write_shapes_only(root / WEIGHTS, shapes)
    config = lerobot_config(chunk_size=50, n_action_steps=50, max_state_dim=32, max_action_dim=32,
                            num_inference_steps=10, tokenizer_max_length=48,
                            image_resolution=[224, 224])  # fmt: skip
    (root / "config.json").write_text(json.dumps(config))
    imported = IMPORTERS["pi0"](SourceTensors(root), text_tokenizer=tokenizer)
    paper = F1Config.paper({"generation": None, "trunk": {"generation": None}})
    assert imported.config.trunk == paper.trunk
    assert imported.config.text_vocab == paper.text_vocab
    vision = imported.config.vision.args
    assert (vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"]) == (
        1152, 27, 16,
    )  # fmt: skip
    assert (vision["intermediate_size"], vision["image_size"], vision["patch_size"]) == (
        4304,
        224,
        14,
    )
    action = imported.config.action
    assert (action.action_dim, action.state_dim, action.chunk) == (32, 32, 50)
    assert "variant_notes" not in imported.info
    assert len(imported.dropped) == 2  # the two LM heads


def test_generation_target_needs_its_new_parts_named_random(
    source: Path, converted: Path, tokenizer: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "with-g"
    found = convert_checkpoint(
        "pi0", source, dst, generation=True, generation_width=24, generation_mlp_width=48,
        text_tokenizer=tokenizer, **OPTIONS,
    )  # fmt: skip
    assert found.parts == (UNDERSTANDING, ACTION)
    assert found.config.trunk.generation is not None and found.config.trunk.generation.width == 24
    assert found.config.generation is not None
    assert found.config.generation.tokenizer.preset == "var_256"
    assert load_file(dst / WEIGHTS).keys() == load_file(converted / WEIGHTS).keys()
    # an F1 with G (the micro tokenizer instead of VAR's only to keep the test fast)
    gen = found.config.generation.model_copy(
        update={"tokenizer": found.config.generation.tokenizer.model_validate(MICRO_TOKENIZER)}
    )
    model = F1(found.config.model_copy(update={"generation": gen}))
    with pytest.raises(ModelDirError, match=r"random: \['generation', 'tokenizer'\]"):
        init_from(model, dst)
    assert init_from(model, dst, random=["generation", "tokenizer"]) == (UNDERSTANDING, ACTION)


def inputs(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, TokenizedText, torch.Tensor]:
    """Images in [-1, 1] [b, 1, 3, S, S], text ids [b, TEXT] (row 1 padded), padded state."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, 3, IMAGE, IMAGE, generator=g) * 2 - 1
    ids = torch.randint(4, VOCAB, (batch, TEXT), generator=g)
    valid = torch.ones(batch, TEXT, dtype=torch.bool)
    valid[1:, 4:] = False
    ids[~valid] = 0
    return images, TokenizedText(ids, valid), torch.randn(batch, STATE, generator=g)


def test_pi0_convention_velocity_and_sampler(converted: Path) -> None:
    """With the pi0 convention, our velocity at tau is minus the network's output at t = 1 - tau,
    and predict is pi0's own sampler: Euler from t = 1 down to 0 on the raw output."""
    model = f1_from(converted)
    head = model.action_head
    images, text, state = inputs()
    with torch.no_grad():
        bound, cache = model.start(model.encode_prefix(images, text))
        net = ActionExpert(bound, cache)
        token = head.embed_state(state)

        def raw(x: torch.Tensor, t: float) -> torch.Tensor:  # pi0's network, in its own time
            tokens, _ = head.embed(x, torch.full((x.shape[0],), t))
            return head.project(net(tokens, None, token))

        x = torch.randn(2, CHUNK, ACT)
        tau = torch.full((2,), 0.25)
        ours = head.velocity(x, tau, context=token, network=net)
        assert torch.allclose(ours, -raw(x, 0.75), atol=1e-6)
        assert not torch.allclose(ours, raw(x, 0.25), atol=1e-3)  # the flip is not a no-op
        assert not torch.allclose(ours, -raw(x, 0.25), atol=1e-3)

        noise = torch.randn(2, CHUNK, ACT)
        predicted = model.predict(images, text, state, noise=noise).actions
        expected, dt = noise.clone(), -1.0 / STEPS
        for step in range(STEPS):
            expected = expected + dt * raw(expected, 1.0 + step * dt)
    assert predicted.shape == (2, CHUNK, ACT) and torch.isfinite(predicted).all()
    assert torch.allclose(predicted, expected, atol=1e-5), (predicted - expected).abs().max()


def test_beta_time_sampler_is_pi0s_after_the_flip() -> None:
    """pi0 draws t = 0.001 + 0.999 s, s ~ Beta(1.5, 1); with tau = 1 - t that is
    tau = 0.999 (1 - s), our BetaTime(1.5, 1, 0.999): P(tau <= x) = 1 - (1 - x / 0.999)^1.5."""
    tau = BetaTime(alpha=1.5, beta=1.0, scale=0.999)(
        40_000, generator=torch.Generator().manual_seed(0)
    )
    assert float(tau.min()) > 0 and float(tau.max()) <= 0.999
    grid = torch.linspace(0.0, 0.999, 101)
    empirical = (tau[None, :] <= grid[:, None]).float().mean(1)
    pi0 = 1 - (1 - grid / 0.999).clamp(min=0) ** 1.5
    assert float((empirical - pi0).abs().max()) < 0.01
    mirrored = 1 - (1 - (1 - grid) / 0.999).clamp(min=0, max=1) ** 1.5  # had we not flipped
    assert float((empirical - (1 - mirrored)).abs().max()) > 0.1


# ---------------------------------------------------------------- parity with lerobot itself

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "check_pi0_parity.py"


def lerobot_python() -> str | None:
    """A Python with lerobot 0.6 and transformers (pi0's extra), or None."""
    candidates = [
        Path("/tmp/pi0venv/bin/python"),
        Path.home() / ".cache/f1kit/lerobot-venv/bin/python",
    ]
    for python in candidates:
        if not python.is_file():
            continue
        probe = "import transformers, lerobot.policies.pi0.modeling_pi0"
        done = subprocess.run([str(python), "-c", probe], capture_output=True, timeout=300)
        if done.returncode == 0:
            return str(python)
    return None


def test_lerobot_parity(tmp_path: Path) -> None:
    python = lerobot_python()
    if python is None:
        pytest.skip(
            "no Python with lerobot 0.6 and transformers (/tmp/pi0venv or "
            "~/.cache/f1kit/lerobot-venv): scripts/check_pi0_parity.py needs lerobot's PI0"
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--python", python, "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"], report
    assert math.isfinite(report["actions_max_abs_diff"])


def test_the_paper_recipe_starts_from_a_converted_pi0(tokenizer: Path, tmp_path: Path) -> None:
    """recipes/f1-paper.yaml's ``model.init_from`` (pi0, G random, the tokenizer from its path)
    fits what `f1kit convert --from pi0 ... -o generation=true` makes of pi0_base: the same parts,
    settings and tensor shapes (headers only; no 4 B-parameter file is written)."""
    from f1kit.model.importers import ModelDir, part_problems
    from f1kit.model.importers.registry import expected_shapes
    from f1kit.recipe import load_recipe
    from f1kit.recipe.init_checks import model_parts, provided_parts

    root = tmp_path / "pi0_base"
    root.mkdir()
    write_shapes_only(root / WEIGHTS, lerobot_shapes(PAPER))
    config = lerobot_config(chunk_size=50, n_action_steps=50, max_state_dim=32, max_action_dim=32,
                            num_inference_steps=10, tokenizer_max_length=48,
                            image_resolution=[224, 224])  # fmt: skip
    (root / "config.json").write_text(json.dumps(config))
    imported = IMPORTERS["pi0"](SourceTensors(root), text_tokenizer=tokenizer, generation=True)
    recipe = load_recipe(Path(__file__).parents[4] / "recipes" / "f1-paper.yaml")
    init = recipe.model.init_from
    assert init is not None
    found = ModelDir(root, imported.config, imported.parts, {}, {})
    ours = recipe.model.f1_config()
    assert (
        part_problems(found, model_parts(recipe), init.random, provided_parts(recipe), ours) == []
    )
    assert expected_shapes(ours, imported.parts) == expected_shapes(imported.config, imported.parts)
