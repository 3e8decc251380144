"""F1Policy (queue, history, normalisation), save/load, and the paper-size config on meta."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from f1kit.data import POSTPROCESSOR, PREPROCESSOR, NormalizeStep, Processor, UnnormalizeStep
from f1kit.model import F1, F1Config, F1Policy, PretrainedError, load_pretrained
from flow import Normalizer
from tests.f1kit.model.helpers import micro_model


def _observation(seed: int, b: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    shape = (64, 64, 3) if b is None else (b, 64, 64, 3)
    return {
        "observation.images.corner": rng.integers(0, 256, shape, dtype=np.uint8),
        "observation.state": rng.normal(size=(4,) if b is None else (b, 4)).astype(np.float32),
        "task": "reach the goal",
    }


def _norms() -> tuple[Normalizer, Normalizer]:
    state = Normalizer(
        torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([2.0, 1.0, 0.5, 1.0]), "mean_std"
    )
    action = Normalizer(
        torch.tensor([0.5, 0.0, -0.5, 0.2]), torch.tensor([3.0, 1.0, 2.0, 0.1]), "mean_std"
    )
    return state, action


def _processors() -> dict[str, Processor]:
    state, action = _norms()
    step = NormalizeStep({"observation.state": "mean_std"}, {"arm": {"observation.state": state}})
    back = UnnormalizeStep({"action": "mean_std"}, {"arm": {"action": action}})
    return {
        "preprocessor": Processor([step], PREPROCESSOR),
        "postprocessor": Processor([back], POSTPROCESSOR),
    }


def test_select_action_executes_n_of_each_chunk_then_replans():
    model = micro_model()  # chunk 3, execute 2
    policy = F1Policy(model, seed=0)
    calls = []
    original = model.predict

    def counting(*args, **kwargs):
        calls.append(args[3])  # history codes [b, t, N]
        return original(*args, **kwargs)

    model.predict = counting
    obs = [_observation(i) for i in range(5)]
    actions = [policy.select_action(o) for o in obs]
    assert len(calls) == 3  # steps 0, 2, 4 re-plan
    assert all(a.shape == (4,) for a in actions)
    # Step 4's history: frames 4-9, 4-6, 4-3, 4 -> clamped to 0, 0, 1, 4 (as the data window does).
    expected = [model.frame_codes(policy._images(obs[s])) for s in (0, 0, 1, 4)]
    assert torch.equal(calls[2], torch.stack(expected, dim=1))
    # Served from the queue: step 1's action is the second of step 0's chunk.
    policy.reset()
    model.predict = original
    chunk = F1Policy(model, seed=0).predict_action_chunk(obs[0])[0].numpy()
    first, second = policy.select_action(obs[0]), policy.select_action(obs[1])
    np.testing.assert_allclose(first, chunk[0], rtol=1e-6)
    np.testing.assert_allclose(second, chunk[1], rtol=1e-6)


def test_policy_normalises_state_and_unnormalises_actions():
    model = micro_model(generation=False)
    state_norm, action_norm = _norms()
    plain = F1Policy(model, seed=3)
    normed = F1Policy(model, seed=3, **_processors())
    obs = _observation(0)
    raw_state = obs["observation.state"]
    # The normalised policy on raw obs == the plain policy on pre-normalised obs, un-normalised.
    pre = {**obs, "observation.state": state_norm(torch.from_numpy(raw_state)).numpy()}
    expected = action_norm.inverse(plain.predict_action_chunk(pre))
    torch.testing.assert_close(normed.predict_action_chunk(obs), expected)


def test_batched_observations_give_batched_actions():
    policy = F1Policy(micro_model(generation=False), seed=0)
    obs = _observation(1, b=3)
    obs["task"] = ["a", "b", "c"]
    assert policy.select_action(obs).shape == (3, 4)
    with pytest.raises(ValueError, match="expected 3 instructions"):
        policy.predict_action_chunk({**obs, "task": ["a"]})
    with pytest.raises(ValueError, match=r"missing 'observation\.images\.corner'"):
        policy.predict_action_chunk({"task": "a"})


def test_predicted_frame_is_the_decoded_foresight():
    policy = F1Policy(micro_model(), seed=0, decode_foresight=True)
    assert policy.predicted_frame() is None
    policy.select_action(_observation(0))
    frame = policy.predicted_frame()
    assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3)


def test_save_load_round_trip_gives_identical_actions(tmp_path):
    policy = F1Policy(micro_model(), seed=5, **_processors())
    out = policy.save_pretrained(tmp_path / "policy")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "policy_postprocessor.json",
        "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "policy_preprocessor.json",
        "policy_preprocessor_step_0_normalizer_processor.safetensors",
    ]
    loaded = F1Policy.from_pretrained(out, seed=5)
    assert loaded.model.config == policy.model.config
    obs = _observation(2)
    torch.testing.assert_close(
        loaded.predict_action_chunk(obs), policy.predict_action_chunk(obs), rtol=0, atol=0
    )
    # Saving again over the same directory replaces it whole (no stale files, no temp dirs).
    policy.save_pretrained(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_loading_mismatched_weights_lists_every_problem(tmp_path):
    out = F1Policy(micro_model()).save_pretrained(tmp_path / "p")
    tensors = load_file(str(out / "model.safetensors"))
    del tensors["action_head.action_out.bias"]
    tensors["action_head.action_in.weight"] = torch.zeros(3, 3)
    tensors["stray.weight"] = torch.zeros(1)
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(PretrainedError) as err:
        load_pretrained(out)
    text = str(err.value)
    assert "missing (1): action_head.action_out.bias" in text
    assert "unexpected (1): stray.weight" in text
    assert "action_head.action_in.weight: file (3, 3)" in text


def test_loading_a_broken_directory_names_the_file(tmp_path):
    with pytest.raises(PretrainedError, match=r"config\.json: not found"):
        load_pretrained(tmp_path)
    out = F1Policy(micro_model(generation=False)).save_pretrained(tmp_path / "p")
    config = json.loads((out / "config.json").read_text())
    config["model"]["trunk"]["depth"] = "two"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match=r"trunk\.depth"):
        load_pretrained(out)


def test_an_alias_the_model_does_not_tie_is_refused(tmp_path):
    """``f1kit.aliases`` naming a real tensor must not load another tensor in its place."""
    out = F1Policy(micro_model(generation=False)).save_pretrained(tmp_path / "p")
    tensors = load_file(str(out / "model.safetensors"))
    by_shape: dict = {}
    for name, t in tensors.items():
        by_shape.setdefault((t.shape, t.dtype), []).append(name)
    source, victim = next(names for names in by_shape.values() if len(names) > 1)[:2]
    del tensors[victim]
    aliases = json.dumps({victim: source})
    save_file(tensors, str(out / "model.safetensors"), metadata={"f1kit.aliases": aliases})
    with pytest.raises(PretrainedError, match=f"{victim} -> {source}: the model does not tie"):
        load_pretrained(out)


def _trunk_expert_params(width: int, mlp: int, heads: int, kv: int, head_dim: int) -> int:
    attn = width * heads * head_dim * 2 + width * kv * head_dim * 2  # q, o; k, v (no biases)
    return attn + 3 * width * mlp + 2 * width  # GeGLU gate/up/down; input + post RMSNorm


def test_paper_configuration_builds_on_meta_with_the_published_size():
    config = F1Config.paper()
    with torch.device("meta"):
        model = F1(config)
    count = {name: sum(p.numel() for p in mod.parameters()) for name, mod in model.named_children()}
    per_layer = sum(
        _trunk_expert_params(w, m, 8, 1, 256)
        for w, m in ((2048, 16384), (1024, 4096), (1024, 4096))
    )
    assert count["trunk"] == 18 * per_layer + 2048 + 1024 + 1024  # + final norms
    # DESIGN.md s1: ~3.5 B useful parameters (Gemma-2B with its 257k embedding, SigLIP So400m,
    # two 0.3 B experts); the VAR tokenizer (frozen) comes on top.
    useful = sum(v for k, v in count.items() if k != "tokenizer")
    assert 3.4e9 < useful < 3.7e9, useful
    assert 80e6 < count["tokenizer"] < 130e6
    assert model.generator.scales == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert model.understanding.image_tokens == 256


def test_paper_recipe_model_section_is_the_paper_size_model() -> None:
    """recipes/f1-paper.yaml's model, its SigLIP tower given by geometry instead of a local
    checkpoint, builds on meta with SigLIP So400m + Gemma-2B + two 0.3 B experts."""
    from pathlib import Path

    from f1kit.recipe import load_recipe

    recipe = Path(__file__).resolve().parents[3] / "recipes" / "f1-paper.yaml"
    so400m = (
        "{hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: 27, "
        "num_attention_heads: 16, image_size: 224, patch_size: 14}"
    )
    config = load_recipe(recipe, [f"model.vision.args={so400m}"]).model
    assert config.trunk == F1Config.paper().trunk
    with torch.device("meta"):
        model = F1(config)
    useful = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("tokenizer."))
    assert 3.4e9 < useful < 3.7e9, useful
    assert model.understanding.image_tokens == 256


def _as_format_1(policy: F1Policy, out, foresight: str | None = None) -> dict:
    """Save ``policy`` as format 1 wrote it: normalization.safetensors instead of the processors,
    no weights dtype, and (``foresight``) the removed knob in its generation config."""
    state_norm, action_norm = _norms()
    policy.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config["format"] = "f1kit.policy/1"
    del config["policy"]["dtype"]
    if foresight is not None:
        config["model"]["generation"]["foresight"] = foresight
    (out / "config.json").write_text(json.dumps(config))
    for f in out.glob("policy_*processor*"):
        f.unlink()
    stats = {
        "state.center": state_norm.center,
        "state.scale": state_norm.scale,
        "action.center": action_norm.center,
        "action.scale": action_norm.scale,
    }
    modes = {"state.mode": "mean_std", "action.mode": "mean_std"}
    save_file(stats, str(out / "normalization.safetensors"), metadata=modes)
    return config


def _acts_alike(out, policy: F1Policy) -> None:
    obs = _observation(2)
    torch.testing.assert_close(
        F1Policy.from_pretrained(out, seed=5).predict_action_chunk(obs),
        policy.predict_action_chunk(obs),
        rtol=0,
        atol=0,
    )


def test_a_format_1_policy_directory_loads_its_normalization_file(tmp_path):
    policy = F1Policy(micro_model(generation=False), seed=5, **_processors())
    out = tmp_path / "policy"
    _as_format_1(policy, out)
    _acts_alike(out, policy)
    (out / "normalization.safetensors").unlink()
    with pytest.raises(PretrainedError, match=r"normalization\.safetensors: not found"):
        load_pretrained(out)


def test_a_format_1_f1_policy_with_the_removed_keys_still_loads(tmp_path):
    """A policy the previous version saved: `generation.foresight` in its config (the removed
    teacher/sampled knob) and the generator's untrained `null_context` among its weights."""
    from f1kit.train import load_model_weights, save_model_weights

    policy = F1Policy(micro_model(), seed=5, **_processors())
    out = tmp_path / "policy"
    config = _as_format_1(policy, out, foresight="teacher")
    weights = load_model_weights(out / "model.safetensors")
    weights["generator.null_context"] = torch.zeros(24)
    save_model_weights(weights, out / "model.safetensors")
    _acts_alike(out, policy)
    config["format"] = "f1kit.policy/2"  # format 2 never had the knob: still an error there
    config["policy"]["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match="foresight"):
        load_pretrained(out)
