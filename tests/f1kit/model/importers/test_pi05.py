"""pi0.5 importer: tiny random checkpoints in lerobot's and openpi's pi0.5 key layouts, converted
and run; the prompt rule; parity with lerobot's own PI05 where a lerobot environment exists."""

import doctest
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from attention import ACTION, UNDERSTANDING
from f1kit.model import F1
from f1kit.model.config import F1Config
from f1kit.model.importers import (
    IMPORTERS,
    SourceTensors,
    WeightImportError,
    convert_checkpoint,
    init_from,
    read_model_dir,
)
from f1kit.model.importers import pi05_prompt as prompt_module
from f1kit.model.importers.pi05_prompt import discretize_state, pi05_prompt, pi05_prompts
from flow import sinusoidal_time_features
from mot import AdaptiveRMSNorm
from tests.f1kit.model.importers.test_pi0 import (
    ACT,
    CHUNK,
    DEPTH,
    EX,
    EXPERT,
    EXPERT_MLP,
    OPTIONS,
    PAPER,
    PG,
    SCRIPT,
    TEXT,
    TINY,
    WEIGHTS,
    Sizes,
    assert_every_tensor_lands,
    f1kit_name,
    gemma_layer,
    inputs,
    lerobot_config,
    lerobot_python,
    lerobot_shapes,
    openpi_state,
    random_state,
    write_checkpoint,
    write_shapes_only,
)
from tests.f1kit.model.test_text import make_hf_tokenizer

pytest.importorskip("transformers")  # the siglip encoder and the hf tokenizer


def pi05_shapes(sizes: Sizes = TINY) -> dict[str, tuple]:
    """lerobot's pi0.5 key template (spec s1): pi0's without state_proj, the expert's norms
    adaptive (dense [3W, W] + bias), the time MLP square and named time_mlp_*."""
    w = sizes.expert
    shapes = {
        k: v
        for k, v in lerobot_shapes(sizes).items()
        if not k.startswith(("model.state_proj", "model.action_time_mlp"))
        and not (k.startswith(EX) and "norm" in k)
    }
    for i in range(sizes.depth):
        layer = gemma_layer(f"{EX}model.layers.{i}.", w, sizes.expert_mlp, True, sizes.head_dim)
        shapes.update({k: v for k, v in layer.items() if ".dense." in k})
    shapes[f"{EX}model.norm.dense.weight"] = (3 * w, w)
    shapes[f"{EX}model.norm.dense.bias"] = (3 * w,)
    for name in ("time_mlp_in", "time_mlp_out"):
        shapes[f"model.{name}.weight"] = (w, w)
        shapes[f"model.{name}.bias"] = (w,)
    return shapes


def pi05_config(**overrides) -> dict:
    config = lerobot_config(type="pi05", **overrides)
    del config["max_state_dim"]  # unused by pi0.5 (kept in lerobot's file, not needed here)
    return config


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_tokenizer(tmp_path_factory.mktemp("tok") / "paligemma-tokenizer")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state(pi05_shapes(), seed=3)


@pytest.fixture(scope="module")
def converted(state, tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = write_checkpoint(tmp_path_factory.mktemp("pi05") / "src", state, pi05_config())
    dst = tmp_path_factory.mktemp("converted") / "pi05-f1kit"
    convert_checkpoint("pi05", src, dst, text_tokenizer=tokenizer, **OPTIONS)
    return dst


def f1_from(directory: Path) -> F1:
    model = F1(read_model_dir(directory).config).eval()
    assert init_from(model, directory) == (UNDERSTANDING, ACTION)
    return model


# ---------------------------------------------------------------- the mapping, tensor by tensor

PI05_RENAMES = (  # written independently of the importer
    ("input_layernorm.dense.", "attn_norm.dense."),
    ("post_attention_layernorm.dense.", "mlp_norm.dense."),
)


def pi05_name(key: str) -> tuple[str, bool] | None:
    """f1kit's name of a lerobot pi0.5 tensor and whether it is a Gemma norm (stored gain - 1:
    PaliGemma's only; the adaptive norms are copied as they are); None for the LM heads."""
    if key.startswith(f"{EX}model.layers."):
        i, rest = key.removeprefix(f"{EX}model.layers.").split(".", 1)
        for old, new in PI05_RENAMES:
            if rest.startswith(old):
                return f"trunk.layers.{i}.experts.action.{new}{rest.removeprefix(old)}", False
    if key.startswith(f"{EX}model.norm.dense."):
        return "trunk.final_norms.action.dense." + key.rsplit(".", 1)[1], False
    for old, new in (("model.time_mlp_in.", "action_head.time_mlp.0."),
                     ("model.time_mlp_out.", "action_head.time_mlp.2.")):  # fmt: skip
        if key.startswith(old):
            return new + key.removeprefix(old), False
    named = f1kit_name(key)  # pi0's map for everything pi0.5 shares with it
    assert named is None or not named[1] or key.startswith(PG), key  # no plain expert norm left
    return named


def test_every_tensor_lands_where_pi05_uses_it(state, converted: Path) -> None:
    model = f1_from(converted)
    assert_every_tensor_lands(state, model, pi05_name)
    assert isinstance(model.trunk.final_norms[ACTION], AdaptiveRMSNorm)


def test_model_directory_records_a_stateless_adaptive_no_gen_f1(converted: Path) -> None:
    found = read_model_dir(converted)
    config = found.config
    assert found.parts == (UNDERSTANDING, ACTION)
    assert config.generation is None and config.trunk.generation is None
    assert config.trunk.action.norm == "adaptive" and config.trunk.understanding.norm == "rms"
    assert (config.trunk.action.width, config.trunk.action.mlp_width) == (EXPERT, EXPERT_MLP)
    assert config.trunk.depth == DEPTH
    action = config.action
    assert action.state_dim is None and action.action_dim == ACT
    assert (action.chunk, action.execute, action.weights_convention) == (CHUNK, CHUNK - 1, "pi0")
    assert config.text.args["max_length"] == TEXT and config.text.args["append_eos"] is False
    assert sorted(found.dropped) == [f"{EX}lm_head.weight", f"{PG}lm_head.weight"]
    assert found.source["config"] == "lerobot config.json (type pi05)"
    assert "State:" in found.source["prompt"]
    model = F1(config)
    assert model.action_head.config.conditioning == "adanorm"
    assert model.action_head.state_in is None and "state" not in model.layout(4, 0)


def test_time_conditioning_and_action_tokens_follow_pi05(state, converted: Path) -> None:
    """cond = silu(out(silu(in(sincos(t))))) and tokens = action_in_proj(x) alone, from the
    source tensors; the Action expert's velocity depends on t only through cond."""
    model = f1_from(converted)
    head = model.action_head
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, CHUNK, ACT, generator=g), torch.tensor([0.9, 0.25])
    tokens, cond = head.embed(x, t)
    w = {k.removeprefix("model."): v for k, v in state.items() if not k.startswith(f"model.{EX}")}
    sincos = sinusoidal_time_features(t, EXPERT)
    hidden = F.silu(sincos @ w["time_mlp_in.weight"].T + w["time_mlp_in.bias"])
    expected = F.silu(hidden @ w["time_mlp_out.weight"].T + w["time_mlp_out.bias"])
    torch.testing.assert_close(cond, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        tokens, x @ w["action_in_proj.weight"].T + w["action_in_proj.bias"], atol=1e-6, rtol=1e-6
    )


def test_predict_is_pi05s_sampler(converted: Path) -> None:
    """predict = Euler from t = 1 down to 0 on the raw network (pi0.5's own time), cached; the
    state is refused (it belongs in the prompt)."""
    from f1kit.model.trunk import ActionExpert

    model = f1_from(converted)
    head = model.action_head
    images, text, state = inputs()
    noise = torch.randn(2, CHUNK, ACT, generator=torch.Generator().manual_seed(1))
    steps = model.config.action.solver.args["steps"]
    with torch.no_grad():
        predicted = model.predict(images, text, None, noise=noise).actions
        net = ActionExpert(*model.start(model.encode_prefix(images, text)))
        expected, dt = noise.clone(), -1.0 / steps
        for step in range(steps):
            tokens, cond = head.embed(expected, torch.full((2,), 1.0 + step * dt))
            expected = expected + dt * head.project(net(tokens, cond, None))
    torch.testing.assert_close(predicted, expected, atol=1e-5, rtol=1e-5)
    assert (predicted - noise).abs().max() > 1e-2
    with pytest.raises(ValueError, match="no state token"):
        model.predict(images, text, state, noise=noise)


# ---------------------------------------------------------------- openpi's layout, refusals


def test_openpi_layout_converts_to_the_same_weights(
    state, converted: Path, tokenizer: Path, tmp_path: Path
) -> None:
    config = {"action_dim": ACT, "action_horizon": CHUNK, "paligemma_variant": "gemma_2b",
              "action_expert_variant": "gemma_300m", "precision": "float32"}  # fmt: skip
    src = write_checkpoint(tmp_path / "openpi", openpi_state(state), config)
    found = convert_checkpoint("pi05", src, tmp_path / "dst", text_tokenizer=tokenizer, **OPTIONS)
    ours, reference = load_file(found.weights), load_file(converted / WEIGHTS)
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    assert found.source["layout"] == "openpi"
    assert found.config.text.args["max_length"] == 200  # pi0.5's prompt length, not pi0's 48
    assert found.config.action.state_dim is None


def test_time_mlp_under_pi0s_name_is_read(state, converted: Path, tokenizer, tmp_path) -> None:
    renamed = {k.replace("model.time_mlp", "model.action_time_mlp"): v for k, v in state.items()}
    src = write_checkpoint(tmp_path / "src", renamed, pi05_config())
    found = convert_checkpoint("pi05", src, tmp_path / "dst", text_tokenizer=tokenizer, **OPTIONS)
    ours, reference = load_file(found.weights), load_file(converted / WEIGHTS)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_pi0_and_pi05_each_refuse_the_other(state, tokenizer: Path, tmp_path: Path) -> None:
    pi0 = random_state(lerobot_shapes())
    src = write_checkpoint(tmp_path / "pi0", pi0, lerobot_config())
    with pytest.raises(WeightImportError, match="type pi0; convert it with --from pi0"):
        convert_checkpoint("pi05", src, tmp_path / "d1", text_tokenizer=tokenizer, **OPTIONS)
    (src / "config.json").unlink()  # the tensors alone tell
    with pytest.raises(WeightImportError, match=r"not a pi0\.5 checkpoint .*\n.*plain \(pi0\)"):
        convert_checkpoint(
            "pi05", src, tmp_path / "d2", text_tokenizer=tokenizer, chunk=CHUNK, **OPTIONS
        )
    src = write_checkpoint(tmp_path / "pi05", state, pi05_config())
    with pytest.raises(WeightImportError, match=r"type pi05\. .*convert it with --from pi05"):
        convert_checkpoint("pi0", src, tmp_path / "d3", text_tokenizer=tokenizer, **OPTIONS)
    broken = dict(state)
    del broken[f"{EX}model.layers.1.post_attention_layernorm.dense.bias"]
    src = write_checkpoint(tmp_path / "broken", broken, pi05_config())
    with pytest.raises(WeightImportError, match=r"trunk\.layers\.1\.experts\.action\.mlp_norm"):
        convert_checkpoint("pi05", src, tmp_path / "d4", text_tokenizer=tokenizer, **OPTIONS)
    assert not any((tmp_path / d).exists() for d in ("d1", "d2", "d3", "d4"))


def test_paper_size_pi05_plans_to_the_paper_sized_no_gen_f1(tokenizer: Path, tmp_path: Path):
    """pi05_base's 813 tensors (4.14 B parameters, headers only) -> the paper's trunk with an
    adaptive Action expert."""
    shapes = pi05_shapes(PAPER)
    assert len(shapes) == 813 and round(sum(math.prod(s) for s in shapes.values()) / 1e9, 2) == 4.14
    root = tmp_path / "pi05_base"
    root.mkdir()
    write_shapes_only(root / WEIGHTS, shapes)
    config = pi05_config(chunk_size=50, n_action_steps=50, max_action_dim=32,
                         tokenizer_max_length=200, num_inference_steps=10,
                         image_resolution=[224, 224])  # fmt: skip
    (root / "config.json").write_text(json.dumps(config))
    imported = IMPORTERS["pi05"](SourceTensors(root), text_tokenizer=tokenizer)
    paper = F1Config.paper({"generation": None, "trunk": {"generation": None}})
    trunk = imported.config.trunk
    assert trunk.action.norm == "adaptive"
    assert trunk.model_copy(update={"action": paper.trunk.action}) == paper.trunk
    assert (trunk.action.width, trunk.action.mlp_width) == (1024, 4096)
    assert imported.config.text.args["max_length"] == 200 and len(imported.dropped) == 2


# ---------------------------------------------------------------- the prompt


def test_state_bins_follow_numpys_digitize_rule() -> None:
    """The spec's rule: np.digitize(s, linspace(-1, 1, 257)[:-1]) - 1, edges and outliers too."""
    g = torch.Generator().manual_seed(0)
    edges = torch.linspace(-1, 1, 257)[:-1]
    states = torch.cat([torch.rand(500, generator=g) * 2.4 - 1.2, edges, edges - 1e-6,
                        torch.tensor([-1.0, 1.0, 0.9921875, 0.99218745, -1.0000001])])  # fmt: skip
    reference = np.digitize(states.numpy(), np.linspace(-1, 1, 257)[:-1]) - 1
    assert discretize_state(states).tolist() == reference.tolist()
    assert discretize_state(torch.tensor([-1.0, 0.0, 0.999, 1.5, -1.5])).tolist() == [
        0, 128, 255, 255, -1,
    ]  # fmt: skip
    assert discretize_state(states.reshape(-1, 1)).shape == (states.numel(), 1)


def test_prompt_text() -> None:
    state = torch.tensor([-1.0, -0.5, 0.0, 0.5])
    assert pi05_prompt("  pick_up the\nred cube ", state) == (
        "Task: pick up the red cube, State: 0 64 128 192;\nAction: "
    )
    assert pi05_prompts(["a", "b_c"], torch.zeros(2, 2)) == [
        "Task: a, State: 128 128;\nAction: ",
        "Task: b c, State: 128 128;\nAction: ",
    ]
    with pytest.raises(ValueError, match=r"states: expected \[3, s\]"):
        pi05_prompts(["a", "b", "c"], torch.zeros(2, 2))
    result = doctest.testmod(prompt_module)  # the module's example
    assert result.attempted > 0 and result.failed == 0
    with pytest.raises((ValueError, TypeError)):  # TypeError: the test suite's jaxtyping hook
        discretize_state(torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- parity with lerobot itself


def test_lerobot_pi05_parity(tmp_path: Path) -> None:
    python = lerobot_python()
    if python is None:
        pytest.skip(
            "no Python with lerobot 0.6 and transformers (/tmp/pi0venv or "
            "~/.cache/f1kit/lerobot-venv): scripts/check_pi0_parity.py needs lerobot's PI05"
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--python", python, "--workdir", str(tmp_path),
         "--variant", "pi05"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["variant"] == "pi05", report
    assert report["counter_cases_actions_max_abs_diff"]["gates_forced_to_one"] > 1e-3
