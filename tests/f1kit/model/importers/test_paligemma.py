"""PaliGemma importer: a tiny random transformers PaliGemma, saved, converted, run by F1.

The Understanding expert must reproduce transformers' own forward (hidden states after Gemma's
final norm) on the same image and text; the import is strict (one error lists every problem) and
reads every key layout transformers and the hub have used.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from attention import UNDERSTANDING
from f1kit.model import F1
from f1kit.model.importers import (
    SourceError,
    WeightImportError,
    convert_checkpoint,
    init_from,
    read_model_dir,
)
from f1kit.model.text import TokenizedText, build_text_tokenizer
from tests.f1kit.model.helpers import MICRO_TOKENIZER
from tests.f1kit.model.test_text import make_hf_tokenizer

transformers = pytest.importorskip("transformers")

IMAGE, PATCH, WIDTH, VOCAB = 16, 4, 64, 300
IMAGE_TOKEN = VOCAB - 1  # inside the vocabulary, as in PaliGemma (257152 of 257216)
TEXT = 6  # instruction tokens
OPTIONS = {
    "expert_width": 32,
    "expert_mlp_width": 64,
    "action_dim": 4,
    "state_dim": 4,
    "chunk": 2,
    "text_max_length": TEXT,
}
WEIGHTS = "model.safetensors"


def tiny_paligemma(seed: int = 0) -> "transformers.PaliGemmaForConditionalGeneration":
    """SigLIP 32 wide (16 patches of a 16 px image, with a pooling head), Gemma 64 wide with MQA.

    Every parameter gets noise on top of transformers' init: its norms start at zero (gain 1)
    and its biases at zero, which would hide a missing +1 or a dropped bias.
    """
    config = transformers.PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": PATCH,
            "image_size": IMAGE,
            "vision_use_head": True,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": WIDTH,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": VOCAB,
        },
        image_token_index=IMAGE_TOKEN,
        projection_dim=WIDTH,
    )
    torch.manual_seed(seed)
    model = transformers.PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_model() -> "transformers.PaliGemmaForConditionalGeneration":
    return tiny_paligemma()


@pytest.fixture(scope="module")
def source(hf_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model as ``save_pretrained`` writes it (safetensors), with a tokenizer beside it."""
    root = tmp_path_factory.mktemp("paligemma") / "src"
    hf_model.save_pretrained(root)
    make_hf_tokenizer(root)
    return root


@pytest.fixture(scope="module")
def converted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "pg-f1kit"
    convert_checkpoint("paligemma", source, dst, generation=False, **OPTIONS)
    return dst


def f1_from(directory: Path) -> F1:
    model = F1(read_model_dir(directory).config).eval()
    assert init_from(model, directory, random=["action"]) == (UNDERSTANDING,)
    return model


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels [2, 3, S, S] in [-1, 1], text ids [2, TEXT] (no image token), valid [2, TEXT]
    (row 1 padded after 4 tokens)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(2, 3, IMAGE, IMAGE, generator=g) * 2 - 1
    ids = torch.randint(3, IMAGE_TOKEN, (2, TEXT), generator=g)
    valid = torch.ones(2, TEXT, dtype=torch.bool)
    valid[1, 4:] = False
    return pixels, ids, valid


@torch.no_grad()
def f1_hidden(model: F1, pixels: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor):
    """U's outputs (after its final norm) on the prefix [image tokens, text] alone, through F1's
    own layout machinery: one bidirectional block, RoPE positions 0..n-1 over valid tokens."""
    prefix = model.encode_prefix(pixels.unsqueeze(1), TokenizedText(ids, valid))
    bound = model.bind(prefix, 0, actions=False)
    return bound.run({UNDERSTANDING: prefix.tokens}, bound.layout.slice("prefix"))[UNDERSTANDING]


@torch.no_grad()
def hf_hidden(hf_model, pixels: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor):
    """transformers' last hidden state (after Gemma's final norm) of [<image> x 16, text].

    token_type_ids = 0 everywhere: the whole sequence is PaliGemma's *prefix* (image + prompt),
    which its prefix-LM mask makes one bidirectional block (type 1, the answer suffix, would be
    causal): the same attention as F1's U block. Its positions start at 1, F1's at 0; RoPE
    depends only on their differences.
    """
    images = torch.full((ids.shape[0], (IMAGE // PATCH) ** 2), IMAGE_TOKEN)
    input_ids = torch.cat([images, ids], dim=1)
    mask = torch.cat([torch.ones_like(images, dtype=torch.bool), valid], dim=1).long()
    out = hf_model.model(
        input_ids=input_ids,
        pixel_values=pixels,
        attention_mask=mask,
        token_type_ids=torch.zeros_like(input_ids),
        output_hidden_states=True,
    )
    return out.last_hidden_state


def close_on_valid(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> bool:
    rows = torch.cat([torch.ones(valid.shape[0], a.shape[1] - valid.shape[1]).bool(), valid], 1)
    return torch.allclose(a[rows], b[rows], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- equivalence


def test_understanding_expert_reproduces_transformers(hf_model, converted: Path) -> None:
    model = f1_from(converted)
    pixels, ids, valid = inputs()
    ours, theirs = f1_hidden(model, pixels, ids, valid), hf_hidden(hf_model, pixels, ids, valid)
    assert ours.shape == theirs.shape == (2, 16 + TEXT, WIDTH)
    assert close_on_valid(ours, theirs, valid), (ours - theirs).abs().max()
    # The prompt is bidirectional on both sides: the first image token sees the last word.
    later = ids.clone()
    later[0, 3] = 4 if int(ids[0, 3]) == 3 else 3  # a word, never the image placeholder
    assert not torch.allclose(hf_hidden(hf_model, pixels, later, valid)[0, 0], theirs[0, 0])
    assert not torch.allclose(f1_hidden(model, pixels, later, valid)[0, 0], ours[0, 0])


def test_equivalence_fails_without_the_norm_offset_or_with_a_wrong_image_scale(
    hf_model, converted: Path
) -> None:
    """The comparison can fail: Gemma's stored gain - 1 loaded as the gain, or the image tokens
    divided by sqrt(width) (transformers 4.x's get_image_features without Gemma's multiply)."""
    pixels, ids, valid = inputs(1)
    theirs = hf_hidden(hf_model, pixels, ids, valid)
    assert close_on_valid(f1_hidden(f1_from(converted), pixels, ids, valid), theirs, valid)

    raw_norms = f1_from(converted)
    with torch.no_grad():
        for name, p in raw_norms.trunk.named_parameters():
            if "norm" in name and UNDERSTANDING in name:  # layer norms and the final norm
                p.sub_(1.0)
    assert not close_on_valid(f1_hidden(raw_norms, pixels, ids, valid), theirs, valid)

    scaled = f1_from(converted)
    with torch.no_grad():
        for p in scaled.understanding.vision.proj.parameters():
            p.div_(WIDTH**0.5)
    assert not close_on_valid(f1_hidden(scaled, pixels, ids, valid), theirs, valid)


# ---------------------------------------------------------------- what is written


def test_model_directory_holds_understanding_and_names_what_was_dropped(converted: Path) -> None:
    found = read_model_dir(converted)
    assert found.parts == (UNDERSTANDING,)
    assert found.config.generation is None and found.config.trunk.generation is None
    trunk = found.config.trunk
    assert (trunk.depth, trunk.heads, trunk.kv_heads, trunk.head_dim) == (2, 4, 1, 16)
    assert (trunk.understanding.width, trunk.understanding.mlp_width) == (WIDTH, 128)
    assert (trunk.action.width, trunk.action.mlp_width) == (32, 64)
    assert found.config.text_vocab == VOCAB
    assert found.config.vision.name == "siglip"
    assert found.config.vision.args["image_size"] == IMAGE
    # Only the pooling head is dropped (save_pretrained leaves the tied LM head out).
    assert found.dropped and all(".head." in k for k in found.dropped)
    assert all("pooling head" in reason for reason in found.dropped.values())
    assert found.source["kind"] == "paligemma"


def test_tokenizer_files_are_copied_and_the_text_path_resolves_there(
    source: Path, converted: Path
) -> None:
    copied = sorted(p.name for p in (converted / "tokenizer").iterdir())
    assert "tokenizer.json" in copied and "tokenizer_config.json" in copied
    for name in copied:
        assert (converted / "tokenizer" / name).read_bytes() == (source / name).read_bytes()
    record = json.loads((converted / "config.json").read_text())
    assert record["model"]["text"]["args"]["path"] == "tokenizer"  # relative: the dir can move
    config = read_model_dir(converted).config
    assert config.text.args["path"] == str(converted / "tokenizer")
    tok = build_text_tokenizer(config.text.name, **config.text.args)
    reference = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    words = reference("open the drawer")["input_ids"]
    assert tok(["open the drawer"]).ids[0, : len(words)].tolist() == words
    assert tok.vocab_size <= config.text_vocab
    # Through the model: an imported U (text_vocab given) builds its HF tokenizer on first use.
    model = F1(config)
    assert (
        model.understanding.encode_text(["open the drawer"]).ids[0, : len(words)].tolist() == words
    )


def test_generation_target_adds_g_and_keeps_the_same_understanding_weights(
    source: Path, converted: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "with-g"
    convert_checkpoint("paligemma", source, dst, generation=True, **OPTIONS)
    found = read_model_dir(dst)
    assert found.parts == (UNDERSTANDING,)
    assert found.config.trunk.generation is not None
    assert found.config.trunk.generation.width == 32
    assert found.config.generation is not None
    assert found.config.generation.tokenizer.preset == "var_256"
    assert load_file(dst / WEIGHTS).keys() == load_file(converted / WEIGHTS).keys()
    # U fits an F1 with G (the micro tokenizer instead of VAR's only to keep the test fast).
    gen = found.config.generation.model_copy(
        update={"tokenizer": found.config.generation.tokenizer.model_validate(MICRO_TOKENIZER)}
    )
    model = F1(found.config.model_copy(update={"generation": gen}))
    loaded = init_from(model, dst, random=["generation", "action", "tokenizer"])
    assert loaded == (UNDERSTANDING,)


# ---------------------------------------------------------------- key layouts


def relayout(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """transformers 5.x ``save_pretrained`` keys (language_model.model.*, vision_tower.*,
    multi_modal_projector.*) rewritten in another layout, with an (untied) LM head where that
    layout carries one."""
    renames = {
        "hub": (
            ("language_model.model.", "language_model.model."),
            ("vision_tower.", "vision_tower.vision_model."),
            ("multi_modal_projector.", "multi_modal_projector."),
        ),
        "transformers-4.52": (
            ("language_model.model.", "model.language_model."),
            ("vision_tower.", "model.vision_tower.vision_model."),
            ("multi_modal_projector.", "model.multi_modal_projector."),
        ),
        "transformers-5": (
            ("language_model.model.", "model.language_model."),
            ("vision_tower.", "model.vision_tower."),
            ("multi_modal_projector.", "model.multi_modal_projector."),
        ),
    }[layout]
    out = {}
    for key, tensor in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        out[key] = tensor
    head = "language_model.lm_head.weight" if layout == "hub" else "lm_head.weight"
    out[head] = state["language_model.model.embed_tokens.weight"].clone()
    return out


def checkpoint_like(source: Path, root: Path, state: dict[str, torch.Tensor]) -> Path:
    """A copy of ``source`` (config, tokenizer) whose weights are ``state``."""
    shutil.copytree(source, root, ignore=shutil.ignore_patterns(WEIGHTS))
    save_file(state, str(root / WEIGHTS))
    return root


@pytest.mark.parametrize("layout", ["hub", "transformers-4.52", "transformers-5"])
def test_every_key_layout_converts_to_the_same_weights(
    layout: str, source: Path, converted: Path, tmp_path: Path
) -> None:
    state = relayout(load_file(source / WEIGHTS), layout)
    src = checkpoint_like(source, tmp_path / "src", state)
    found = convert_checkpoint("paligemma", src, tmp_path / "dst", generation=False, **OPTIONS)
    ours, reference = load_file(found.weights), load_file(converted / WEIGHTS)
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    head = "language_model.lm_head.weight" if layout == "hub" else "lm_head.weight"
    assert "never decodes text" in found.dropped[head]
    pooling = len(read_model_dir(converted).dropped)  # SigLIP's head: probe, attention, MLP
    assert sum("pooling head" in r for r in found.dropped.values()) == pooling == 11


# ---------------------------------------------------------------- refusals


def test_broken_checkpoint_lists_every_problem_in_one_error(source: Path, tmp_path: Path) -> None:
    state = load_file(source / WEIGHTS)
    del state["language_model.model.layers.1.mlp.up_proj.weight"]
    state["language_model.model.layers.0.self_attn.rotary.inv_freq"] = torch.ones(8)
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    state[q] = torch.zeros(state[q].shape[0] + 1, state[q].shape[1])
    src = checkpoint_like(source, tmp_path / "src", state)
    with pytest.raises(WeightImportError) as info:
        convert_checkpoint("paligemma", src, tmp_path / "dst", generation=False, **OPTIONS)
    message = str(info.value)
    assert "language_model.model.layers.1.mlp.up_proj.weight" in message  # missing
    assert "trunk.layers.1.experts.understanding.mlp.up.weight" in message
    assert "layers.0.self_attn.rotary.inv_freq" in message  # unexpected
    assert "trunk.layers.0.experts.understanding.q.weight: f1kit (64, 64)" in message  # shape
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("as_file", [False, True])
def test_pickle_checkpoint_is_refused(as_file: bool, source: Path, tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns(WEIGHTS))
    torch.save(load_file(source / WEIGHTS), root / "pytorch_model.bin")
    path = root / "pytorch_model.bin" if as_file else root
    with pytest.raises(SourceError, match="pickle"):
        convert_checkpoint("paligemma", path, tmp_path / "dst", generation=False, **OPTIONS)


def test_unsupported_text_model_is_refused_naming_every_key(source: Path, tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(source, root)
    config = json.loads((root / "config.json").read_text())
    rope = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    config["text_config"].update(hidden_act="silu", attention_bias=True, rope_parameters=rope)
    config["projection_dim"] = 32
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightImportError) as info:
        convert_checkpoint("paligemma", root, tmp_path / "dst", generation=False, **OPTIONS)
    for key in (
        "text_config.hidden_act: 'silu'",
        "text_config.attention_bias",
        "rope_type 'linear'",
        "projection_dim: 32",
    ):
        assert key in str(info.value)
    config["text_config"] = {**config["text_config"], "model_type": "gemma2"}
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightImportError, match=r"text_config\.model_type: 'gemma2'"):
        convert_checkpoint("paligemma", root, tmp_path / "dst", generation=False, **OPTIONS)


def test_a_checkpoint_without_a_tokenizer_is_refused_unless_one_is_given(
    source: Path, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("tokenizer*", "special_*"))
    with pytest.raises(SourceError, match="text_tokenizer=<"):
        convert_checkpoint("paligemma", root, tmp_path / "dst", generation=False, **OPTIONS)
    found = convert_checkpoint(
        "paligemma", root, tmp_path / "dst", generation=False, text_tokenizer=source, **OPTIONS
    )
    assert (found.path / "tokenizer" / "tokenizer.json").is_file()
