"""Meta-device build + assigned, memory-mapped weights (`f1kit.model.loading`)."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from f1kit.model import (
    F1,
    F1Config,
    F1Policy,
    LoadingError,
    Objective,
    build_empty,
    load_into_empty,
    load_model,
    load_pretrained,
    read_weights,
)
from f1kit.train import save_model_weights
from flow import FlowHeadConfig, FlowMatchingHead
from foresight import NextScaleGenerator


def _batch(config: F1Config, b: int = 2, seed: int = 0) -> dict:
    """Frames (not codes), so the tokenizer runs too."""
    g = torch.Generator().manual_seed(seed)
    size, act = config.vision.args["image_size"], config.action

    def frames(*shape: int) -> torch.Tensor:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)

    batch = {
        "images": frames(b, 1, 3, size, size),
        "task": ["open the drawer", "push"][:b],
        "state": torch.randn(b, act.state_dim, generator=g),
        "action": torch.randn(b, act.chunk, act.action_dim, generator=g),
        "action_is_pad": torch.zeros(b, act.chunk, dtype=torch.bool),
    }
    if config.generation is not None:
        batch["history"] = frames(b, config.generation.history, 1, 3, size, size)
        batch["foresight"] = frames(b, 1, 3, size, size)
    return batch


def _run(model: F1, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor, list | None]:
    """Training loss and metrics, then one predicted chunk, each from a fixed generator."""
    objective = Objective(generation=0.1 if model.generator is not None else 0.0, action=1.0)
    loss, metrics = model(batch, torch.Generator().manual_seed(3), objective=objective)
    history = model.batch_codes(batch, "history") if model.generator is not None else None
    pred = model.predict(
        batch["images"],
        batch["task"],
        batch["state"],
        history,
        generator=torch.Generator().manual_seed(4),
    )
    return loss.detach(), metrics, pred.actions, pred.foresight


def _saved(tmp_path, generation: bool = True, seed: int = 0) -> tuple[F1, str]:
    torch.manual_seed(seed)
    model = F1(F1Config.tiny(generation=generation))
    path = tmp_path / "model.safetensors"
    save_model_weights(model.state_dict(), path)
    return model, str(path)


@pytest.mark.parametrize("generation", [True, False], ids=["F1", "No-Gen"])
def test_a_meta_built_model_loaded_from_its_file_runs_bit_identically(tmp_path, generation):
    model, path = _saved(tmp_path, generation)
    tensors = read_weights(path)
    loaded = load_into_empty(
        build_empty(model.config), tensors, dtype=None, device="cpu", source=path
    )
    # Assigned, not copied: the parameters are the memory-mapped tensors themselves.
    key = "action_head.action_out.weight"
    assert loaded.get_parameter(key).data_ptr() == tensors[key].data_ptr()
    assert isinstance(loaded.get_parameter(key), nn.Parameter)
    assert [(n, p.requires_grad) for n, p in loaded.named_parameters()] == [
        (n, p.requires_grad) for n, p in model.named_parameters()
    ]
    for (n, b), (_, ref) in zip(loaded.named_buffers(), model.named_buffers(), strict=True):
        assert torch.equal(b, ref), n  # generator.levels (never saved) recomputed
    batch = _batch(model.config)
    loss, metrics, actions, foresight = _run(loaded, batch)
    ref_loss, ref_metrics, ref_actions, ref_foresight = _run(model, batch)
    assert torch.equal(loss, ref_loss) and metrics == ref_metrics
    assert torch.equal(actions, ref_actions)
    if generation:
        assert all(torch.equal(a, b) for a, b in zip(foresight, ref_foresight, strict=True))
    # The mapping is private: writing a parameter (an optimiser step) never reaches the file.
    with torch.no_grad():
        loaded.get_parameter(key).add_(1)
    assert torch.equal(load_file(path)[key], model.get_parameter(key).detach())


def test_a_buffer_left_on_meta_is_an_error_naming_it(tmp_path, monkeypatch):
    """Counter-case of the test above: without `NextScaleGenerator.init_buffers` the
    non-persistent ``levels`` would stay on the meta device."""
    model, path = _saved(tmp_path)
    monkeypatch.delattr(NextScaleGenerator, "init_buffers")
    with pytest.raises(LoadingError, match=r"still on the meta device \(1\): generator\.levels"):
        load_into_empty(
            build_empty(model.config), read_weights(path), dtype=None, device="cpu", source=path
        )


def test_a_bf16_load_keeps_the_tokenizer_and_the_flow_math_float32(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    loaded = load_into_empty(
        build_empty(model.config),
        read_weights(path),
        dtype=torch.bfloat16,
        device="cpu",
        source=path,
    )
    for name, t in (*loaded.state_dict().items(), *loaded.named_buffers()):
        if t.is_floating_point():
            want = torch.float32 if name.startswith("tokenizer.") else torch.bfloat16
            assert t.dtype == want, name
    assert not any(p.requires_grad for p in loaded.tokenizer.parameters())
    batch = _batch(model.config)
    # The tokenizer is the float32 one: the same codes as the float32 model's, bit for bit.
    assert torch.equal(loaded.batch_codes(batch, "history"), model.batch_codes(batch, "history"))
    seen: list[torch.Tensor] = []
    embed = loaded.action_head.embed
    monkeypatch.setattr(loaded.action_head, "embed", lambda x, t: (seen.append(x), embed(x, t))[1])
    loss, _, actions, foresight = _run(loaded, batch)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert actions.dtype == torch.float32 and torch.isfinite(actions).all()
    assert foresight is not None and len(foresight) == model.config.generation.scales
    assert seen and all(x.dtype == torch.float32 for x in seen)  # x_tau, train and sample


def test_the_flow_interpolation_and_target_stay_float32_with_bf16_weights():
    cfg = FlowHeadConfig(action_dim=4, chunk=3, width=16)
    head = FlowMatchingHead(cfg).to(torch.bfloat16)

    def net(tokens, cond, context):
        return tokens

    nn.init.zeros_(head.action_out.weight)
    nn.init.zeros_(head.action_out.bias)  # the prediction is exactly 0: the loss is |target|^2
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(2, 3, 4, generator=g) * 3
    noise = torch.randn(2, 3, 4, generator=g)
    tau = torch.tensor([0.3, 0.77])
    seen = []
    embed = head.embed
    head.embed = lambda x, t: (seen.append(x), embed(x, t))[1]
    loss = head.loss(actions, tau=tau, noise=noise, network=net)
    w = tau.view(2, 1, 1)
    assert seen[0].dtype == torch.float32
    assert torch.equal(seen[0], (1 - w) * noise + w * actions)
    target = actions - noise
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, (target**2).mean(), rtol=1e-6, atol=0)
    # The tolerance can fail: the same target in bf16 misses it.
    bf16 = (actions.bfloat16() - noise.bfloat16()).float()
    assert not torch.allclose((bf16**2).mean(), (target**2).mean(), rtol=1e-6, atol=0)
    sample = head.sample(2, generator=g, network=net).sample
    assert sample.dtype == torch.float32


def test_every_mismatch_is_listed_and_dtype_is_the_cast(tmp_path):
    model, path = _saved(tmp_path, generation=False)
    tensors = load_file(path)
    del tensors["action_head.action_out.bias"]
    tensors["stray.weight"] = torch.zeros(1)
    tensors["action_head.action_in.weight"] = torch.zeros(3, 3)
    tensors["action_head.state_in.bias"] = torch.full_like(
        tensors["action_head.state_in.bias"], torch.nan
    )
    tensors["action_head.state_in.weight"] = tensors["action_head.state_in.weight"].half()
    tensors["action_head.time_mlp.0.bias"][-1] = float("inf")
    tensors["action_head.time_mlp.2.weight"][3, 5] = -float("inf")

    def load(dtype):
        return load_into_empty(
            build_empty(model.config), tensors, dtype=dtype, device="cpu", source="f.safetensors"
        )

    with pytest.raises(LoadingError) as err:
        load(None)
    text = str(err.value)
    assert "f.safetensors: does not match" in text
    assert "missing (1): action_head.action_out.bias" in text
    assert "unexpected (1): stray.weight" in text
    assert "shape mismatch (1): action_head.action_in.weight: file (3, 3)" in text
    non_finite = (
        "action_head.state_in.bias, action_head.time_mlp.0.bias, action_head.time_mlp.2.weight"
    )
    assert f"non-finite (NaN or inf) (3): {non_finite}" in text
    assert "dtype mismatch (1): action_head.state_in.weight: file torch.float16" in text
    with pytest.raises(LoadingError) as err:
        load(torch.bfloat16)
    assert "dtype mismatch" not in str(err.value)  # with dtype given it is the cast
    assert "missing (1): action_head.action_out.bias" in str(err.value)


def test_ties_survive_and_undeclared_aliases_are_refused(tmp_path):
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.head = nn.Linear(4, 5, bias=False)
            self.head.weight = self.embed.weight

    path = tmp_path / "tied.safetensors"
    save_model_weights(Tied().state_dict(), path)
    with torch.device("meta"):
        empty = Tied()
    model = load_into_empty(
        empty, read_weights(path), dtype=torch.bfloat16, device="cpu", source=str(path)
    )
    assert model.head.weight is model.embed.weight and model.head.weight.dtype == torch.bfloat16
    assert len(list(model.parameters())) == 1

    class Untied(Tied):
        def __init__(self) -> None:
            super().__init__()
            self.head.weight = nn.Parameter(self.embed.weight.detach().clone())

    with torch.device("meta"):
        empty = Untied()
    with pytest.raises(
        LoadingError, match=r"head\.weight -> embed\.weight: the model does not tie"
    ):
        load_into_empty(empty, read_weights(path), dtype=None, device="cpu", source=str(path))


def test_load_model_reads_a_complete_model_directory(tmp_path):
    from f1kit.model.importers.model_dir import write_model_dir

    torch.manual_seed(0)
    model = F1(F1Config.tiny())
    out = write_model_dir(tmp_path / "m", model.config, model.state_dict().items())
    batch = _batch(model.config)
    loaded = load_model(out)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(_run(loaded, batch)[2], _run(model, batch)[2])
    assert load_model(out, dtype=torch.bfloat16).trunk.final_norms["action"].weight.dtype == (
        torch.bfloat16
    )
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("action_head.")}
    state = {k: v for k, v in state.items() if ".experts.action." not in k}
    state = {k: v for k, v in state.items() if "final_norms.action" not in k}
    partial = write_model_dir(tmp_path / "p", model.config, state.items())
    with pytest.raises(LoadingError, match=r"not \['action'\].*init_from"):
        load_model(partial)


def test_load_pretrained_casts_to_the_dtype_asked(tmp_path):
    torch.manual_seed(0)
    policy = F1Policy(F1(F1Config.tiny()), seed=1)
    out = policy.save_pretrained(tmp_path / "p")
    loaded = load_pretrained(out, dtype=torch.bfloat16, seed=1)
    assert loaded.model.tokenizer.quant_conv.weight.dtype == torch.float32
    assert loaded.model.action_head.action_out.weight.dtype == torch.bfloat16
    # The weights file is float32: without dtype the recorded dtype is the contract.
    same = load_pretrained(out, seed=1)
    assert same.model.action_head.action_out.weight.dtype == torch.float32
    path = out / "model.safetensors"
    save_file({k: v.bfloat16() for k, v in load_file(str(path)).items()}, str(path))
    with pytest.raises(LoadingError, match="dtype mismatch"):
        load_pretrained(out)


def test_a_siglip_policy_loads_and_acts_like_the_saved_one(tmp_path):
    """transformers' SigLIP keeps a non-persistent ``position_ids`` buffer: a meta build must
    rebuild it (every pi0 / PaliGemma / F1-VLA import uses this encoder)."""
    siglip = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "patch_size": 16, "image_size": 64}  # fmt: skip
    data = F1Config.tiny(generation=False).model_dump()
    data["vision"] = {"name": "siglip", "args": siglip}
    config = F1Config.model_validate(data)
    torch.manual_seed(0)
    policy = F1Policy(F1(config), seed=1)
    out = policy.save_pretrained(tmp_path / "p")
    loaded = load_pretrained(out, seed=1)
    images = torch.randint(0, 256, (1, 1, 3, 64, 64), dtype=torch.uint8)
    state = torch.randn(1, 4)
    want = policy.model.predict(
        images, ["open"], state, None, generator=torch.Generator().manual_seed(0)
    )
    got = loaded.model.predict(
        images, ["open"], state, None, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(want.actions, got.actions)


def test_a_stateless_model_is_refused_by_the_policy_by_name():
    data = F1Config.tiny(generation=False).model_dump()
    data["action"]["state_dim"] = None
    data["trunk"]["action"]["norm"] = "adaptive"
    with pytest.raises(ValueError, match="no state token"):
        F1Policy(F1(F1Config.model_validate(data)))


def test_casts_that_lose_values_or_are_not_floats_are_refused(tmp_path):
    torch.manual_seed(0)
    model = F1(F1Config.tiny(generation=False))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["action_head.action_out.bias"][0] = 1e6  # beyond float16's 65504
    config = model.config
    with pytest.raises(LoadingError, match=r"overflows 1 tensors: action_head\.action_out\.bias"):
        load_into_empty(build_empty(config), state, dtype=torch.float16, device="cpu", source="x")
    load_into_empty(build_empty(config), state, dtype=torch.bfloat16, device="cpu", source="x")
    with pytest.raises(LoadingError, match="16 bits or more"):
        load_into_empty(build_empty(config), state, dtype=torch.int64, device="cpu", source="x")
