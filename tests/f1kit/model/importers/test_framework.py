"""The import framework: lazy sources, strict plans, F1's parts, model directories, init_from."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from f1kit.model import F1, F1Config
from f1kit.model.importers import (
    PARTS,
    ModelDirError,
    Rule,
    SourceError,
    SourceTensors,
    WeightImportError,
    check_plan,
    init_from,
    part_of,
    read_model_dir,
    write_model_dir,
)
from f1kit.model.importers.mapping import convert, gemma_norm


def _source(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> SourceTensors:
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return SourceTensors(tmp_path)


# ---- sources -------------------------------------------------------------------------------


def test_a_sharded_source_reads_shapes_from_headers_and_tensors_on_demand(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2, 3)}, str(tmp_path / "s1.safetensors"))
    save_file({"b": torch.zeros(4, dtype=torch.bfloat16)}, str(tmp_path / "s2.safetensors"))
    index = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    src = SourceTensors(tmp_path)
    assert sorted(src.keys()) == ["a", "b"]
    assert src.shape("a") == (2, 3) and src.dtype("b") == torch.bfloat16
    assert src.meta("a").device.type == "meta"
    assert torch.equal(src.get("a"), torch.ones(2, 3))


def test_a_broken_source_is_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        SourceTensors(tmp_path / "nothing")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "gone.safetensors"}})
    )
    with pytest.raises(SourceError, match=r"gone\.safetensors"):
        SourceTensors(tmp_path)
    two = tmp_path / "two"
    two.mkdir()
    for name in ("x", "y"):
        save_file({name: torch.ones(1)}, str(two / f"{name}.safetensors"))
    with pytest.raises(SourceError, match=r"x\.safetensors, y\.safetensors"):
        SourceTensors(two)


# ---- plans -----------------------------------------------------------------------------------


def test_a_plan_lists_every_problem_at_once(tmp_path: Path) -> None:
    src = _source(tmp_path, {"w": torch.ones(3, 2), "n": torch.zeros(4), "extra": torch.ones(1)})
    rules = [
        Rule.rename("lin.weight", "w"),  # wrong shape: f1kit wants (2, 3)
        Rule.rename("norm.weight", "n", gemma_norm),
        Rule.rename("gone.weight", "absent"),
    ]
    expected = {"lin.weight": (2, 3), "norm.weight": (4,), "gone.weight": (1,), "bias": (2,)}
    with pytest.raises(WeightImportError) as info:
        check_plan(src, rules, {}, expected, "toy")
    text = str(info.value)
    for needle in (
        "absent (for gone.weight)",
        "bias (no source",
        "extra (1,)",
        "lin.weight: f1kit (2, 3)",
    ):
        assert needle in text, text


def test_a_checked_plan_converts_with_transforms_and_names_what_it_drops(tmp_path: Path) -> None:
    src = _source(tmp_path, {"w": torch.ones(2, 3), "n": torch.zeros(4), "head": torch.ones(5)})
    rules = [Rule.rename("lin.weight", "w"), Rule.rename("norm.weight", "n", gemma_norm)]
    plan = check_plan(
        src, rules, {r"he.d": "unused"}, {"lin.weight": (2, 3), "norm.weight": (4,)}, "toy"
    )
    assert plan.dropped == {"head": "unused"}
    out = dict(convert(src, plan, torch.bfloat16))
    assert out["lin.weight"].dtype == torch.bfloat16
    assert torch.equal(out["norm.weight"], torch.ones(4, dtype=torch.bfloat16))  # 1 + w


# ---- parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", [True, False])
def test_every_tensor_belongs_to_the_part_that_trains_it(generation: bool) -> None:
    model = F1(F1Config.tiny(generation=generation))
    names = {id(p): n for n, p in model.named_parameters()}
    for expert in model.experts:
        for p in model.expert_parameters(expert):
            assert part_of(names[id(p)]) == expert
    parts = {part_of(k) for k in model.state_dict()}
    assert parts == (set(PARTS) if generation else {"understanding", "action"})
    with pytest.raises(ValueError, match="belongs to no part"):
        part_of("elsewhere.weight")


# ---- model directories and init_from ----------------------------------------------------------


def _write(tmp_path: Path, config: F1Config, parts: tuple[str, ...], seed: int = 1) -> Path:
    torch.manual_seed(seed)
    state = F1(config).state_dict()
    chosen = {k: v for k, v in state.items() if part_of(k) in parts}
    return write_model_dir(tmp_path / "dir", config, chosen.items(), source={"kind": "test"})


def test_init_from_loads_the_parts_it_holds_and_keeps_the_random_ones(tmp_path: Path) -> None:
    config = F1Config.tiny()
    directory = _write(tmp_path, config, ("understanding", "action"))
    assert read_model_dir(directory).parts == ("understanding", "action")
    torch.manual_seed(2)
    model = F1(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = init_from(model, directory, random=["generation", "tokenizer"])
    assert loaded == ("understanding", "action")
    stored = load_file(directory / "model.safetensors")
    for key, value in model.state_dict().items():
        if key in stored:
            assert torch.equal(value, stored[key]), key
        else:
            assert torch.equal(value, before[key]), key


def test_init_from_refuses_unnamed_gaps_named_holdings_and_other_settings(tmp_path: Path) -> None:
    config = F1Config.tiny()
    directory = _write(tmp_path, config, ("understanding", "action"))
    model = F1(config)
    with pytest.raises(ModelDirError, match=r"random: \['generation', 'tokenizer'\]"):
        init_from(model, directory)
    with pytest.raises(ModelDirError, match=r"\['action'\] are in"):
        init_from(model, directory, random=["generation", "tokenizer", "action"])
    with pytest.raises(ModelDirError, match="loads from elsewhere"):
        init_from(model, directory, random=["generation"], provided=["tokenizer", "action"])
    other = F1(F1Config.tiny(overrides={"action": {"weights_convention": "pi0"}}))
    with pytest.raises(ModelDirError, match=r"weights_convention: 'pi0', but .* 'paper'"):
        init_from(other, directory, random=["generation", "tokenizer"])


def test_init_from_lists_every_tensor_that_does_not_fit(tmp_path: Path) -> None:
    directory = _write(tmp_path, F1Config.tiny(generation=False), ("understanding", "action"))
    wider = F1Config.tiny(generation=False, overrides={"action": {"action_dim": 6}})
    with pytest.raises(ModelDirError) as info:
        init_from(F1(wider), directory)
    text = str(info.value)
    assert "shape mismatch (3)" in text
    assert "action_head.action_in.weight: file (64, 4) vs model (64, 6)" in text


def test_a_policy_directory_starts_a_model_too(tmp_path: Path) -> None:
    from f1kit.model import F1Policy

    torch.manual_seed(3)
    model = F1(F1Config.tiny(generation=False))
    F1Policy(model, cameras=("corner",)).save_pretrained(tmp_path / "policy")
    assert read_model_dir(tmp_path / "policy").parts == ("understanding", "action")
    fresh = F1(F1Config.tiny(generation=False))
    init_from(fresh, tmp_path / "policy")
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_model_directory_is_written_atomically(tmp_path: Path) -> None:
    config = F1Config.tiny(generation=False)

    def failing():
        yield "understanding.text_embedding.embed.weight", torch.ones(2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_model_dir(tmp_path / "dir", config, failing())
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_lerobot_folder_reads_model_safetensors_and_a_corrupt_file_is_named(
    tmp_path: Path,
) -> None:
    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    save_file({"mean": torch.zeros(2)}, str(tmp_path / "policy_preprocessor_step_3.safetensors"))
    assert SourceTensors(tmp_path).keys() == ["w"]
    bad = tmp_path / "bad.safetensors"
    bad.write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(SourceError, match="not a readable safetensors file"):
        SourceTensors(bad)


def test_a_bf16_conversion_keeps_the_tokenizer_and_gemma_gains_float32(tmp_path: Path) -> None:
    src = _source(tmp_path, {"c": torch.randn(4, 2), "n": torch.randn(3), "w": torch.randn(2)})
    rules = [
        Rule.rename("tokenizer.quantizer.codebook.weight", "c"),
        Rule.rename("norm.weight", "n", gemma_norm),
        Rule.rename("lin.weight", "w"),
    ]
    expected = {
        "tokenizer.quantizer.codebook.weight": (4, 2),
        "norm.weight": (3,),
        "lin.weight": (2,),
    }
    out = dict(convert(src, check_plan(src, rules, {}, expected, "toy"), torch.bfloat16))
    assert out["tokenizer.quantizer.codebook.weight"].dtype == torch.float32
    assert out["norm.weight"].dtype == torch.float32
    assert out["lin.weight"].dtype == torch.bfloat16


def test_convert_never_destroys_the_source_or_a_foreign_folder(tmp_path: Path) -> None:
    from f1kit.model.importers import convert_checkpoint
    from foresight import MultiScaleVQVAE, VQVAEConfig
    from foresight.var_weights import ours_to_var

    folder = tmp_path / "weights"
    folder.mkdir()
    vae = folder / "vae.safetensors"
    state = ours_to_var(MultiScaleVQVAE(VQVAEConfig.small_64()))
    save_file({k: v.contiguous() for k, v in state.items()}, str(vae))
    (folder / "notes.txt").write_text("keep me")
    options = {"scales": [1, 2, 3, 4]}
    for destination in (folder, vae, tmp_path):
        with pytest.raises(ValueError, match="is, holds or lies inside the source"):
            convert_checkpoint("var", vae, destination, **options)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_text("x")
    with pytest.raises(ValueError, match="not an f1kit model directory"):
        convert_checkpoint("var", vae, other, **options)
    convert_checkpoint("var", vae, tmp_path / "out", **options)
    with pytest.raises(ValueError, match="--overwrite"):
        convert_checkpoint("var", vae, tmp_path / "out", **options)
    convert_checkpoint("var", vae, tmp_path / "out", overwrite=True, **options)
    assert (folder / "notes.txt").read_text() == "keep me" and vae.is_file()
    assert (other / "data.bin").is_file()


def test_a_matched_part_must_be_equal_and_is_never_loaded(tmp_path: Path) -> None:
    config = F1Config.tiny()
    directory = _write(tmp_path, config, PARTS, seed=1)
    torch.manual_seed(1)
    same = F1(config)  # the directory's weights exactly (same seed, same build order)
    torch.manual_seed(5)
    other = F1(config)
    other.tokenizer.load_state_dict(same.tokenizer.state_dict())
    assert init_from(other, directory, match=["tokenizer"]) == (
        "understanding",
        "generation",
        "action",
    )
    torch.manual_seed(6)
    fresh = F1(config)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ModelDirError, match=r"holds a \['tokenizer'\] that differs"):
        init_from(fresh, directory, match=["tokenizer"])
    for key, value in fresh.state_dict().items():  # refused: nothing was loaded
        assert torch.equal(value, before[key]), key


def test_only_loads_one_part_of_a_whole_directory(tmp_path: Path) -> None:
    config = F1Config.tiny()
    directory = _write(tmp_path, config, PARTS, seed=1)
    torch.manual_seed(9)
    model = F1(config)
    trunk = model.trunk.state_dict()["final_norms.action.weight"].clone()
    assert init_from(model, directory, only=["tokenizer"]) == ("tokenizer",)
    stored = load_file(directory / "model.safetensors")
    assert torch.equal(
        model.tokenizer.quantizer.codebook.weight, stored["tokenizer.quantizer.codebook.weight"]
    )
    assert torch.equal(model.trunk.state_dict()["final_norms.action.weight"], trunk)


def test_settings_the_shapes_cannot_tell_are_compared(tmp_path: Path) -> None:
    """heads x head_dim 4 x 16 and 8 x 8 give the same q shapes: the geometry is compared."""
    base = F1Config.tiny(generation=False)
    directory = _write(tmp_path, base, ("understanding", "action"))
    other = F1Config.tiny(generation=False, overrides={"trunk": {"heads": 8, "head_dim": 8}})
    with pytest.raises(ModelDirError) as info:
        init_from(F1(other), directory)
    assert "model.trunk.heads: 8, but" in str(info.value)
    assert "model.trunk.head_dim: 8, but" in str(info.value)
