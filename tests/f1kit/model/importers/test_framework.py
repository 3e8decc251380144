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
