"""F1 with pi0.5's Action expert: adaptive norms conditioned on the flow time, no state token."""

import pytest
import torch

from attention import ACTION, GENERATION, UNDERSTANDING
from f1kit.model import F1, JointPass, Objective
from f1kit.model.trunk import ActionExpert
from mot import AdaptiveRMSNorm
from tests.f1kit.model.helpers import micro_config, random_batch


def pi05_config(generation: bool = False, state: bool = False):
    cfg = micro_config(generation)
    data = cfg.model_dump()
    data["trunk"]["action"]["norm"] = "adaptive"
    if not state:
        data["action"]["state_dim"] = None
    return type(cfg).model_validate(data)


def pi05_model(generation: bool = False, state: bool = False, seed: int = 0) -> F1:
    """Random dense layers, so every scale / shift / gate depends on the flow time."""
    torch.manual_seed(seed)
    model = F1(pi05_config(generation, state)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdaptiveRMSNorm):
                module.dense.weight.normal_(0, 0.3)
                module.dense.bias.normal_(0, 0.3)
    return model


def test_config_builds_the_pi05_action_expert() -> None:
    model = pi05_model()
    assert model.config.adaptive_action
    assert model.action_head.config.conditioning == "adanorm"
    assert model.action_head.state_in is None
    layout = model.layout(5, 0)
    assert "state" not in layout and layout.segment("actions").expert == ACTION
    spec = model.trunk.config.expert(ACTION)
    assert spec.norm == "adaptive" and model.trunk.config.expert(UNDERSTANDING).norm == "rms"
    # the default (plain) model keeps its concat head and state row
    plain = F1(micro_config(False))
    assert plain.action_head.config.conditioning == "concat" and "state" in plain.layout(5, 0)


@pytest.mark.parametrize("generation", [False, True])
@pytest.mark.parametrize("state", [False, True])
def test_cached_action_flow_matches_full_joint_passes(generation: bool, state: bool) -> None:
    """predict() (read-only flow steps over the cache, cond per step) == an uncached joint pass
    at every step, for No-Gen and F1, with and without a state token."""
    model, batch = pi05_model(generation, state, seed=2), random_batch(seed=2)
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    history = batch["history_codes"] if generation else None
    given = batch["state"] if state else None
    pred = model.predict(batch["images"], batch["task"], given, history,
                         generator=torch.Generator().manual_seed(3), noise=noise)  # fmt: skip
    prefix = model.encode_prefix(batch["images"], batch["task"], history)
    parts = {UNDERSTANDING: prefix.tokens}
    k = 0
    if generation:
        k = model.config.generation.scales
        inputs = model.tokenizer.teacher_forcing_inputs(pred.foresight[: k - 1])
        scales = model.generator.embed_scales(prefix.history, inputs)
        parts[GENERATION] = torch.cat([prefix.history, scales], 1)
    joint = JointPass(model.bind(prefix, k), parts)
    with torch.no_grad():
        ref = model.action_head.sample(2, state=given, noise=noise, network=joint).sample
    torch.testing.assert_close(pred.actions, ref, atol=1e-5, rtol=1e-5)
    assert (pred.actions - noise).abs().max() > 1e-2


def test_time_reaches_the_actions_only_through_the_norms() -> None:
    """The chunk tokens carry no time (action_in(x) alone); the velocity still depends on it, and
    stops depending on it when the dense layers ignore the conditioning vector."""
    model, batch = pi05_model(seed=4), random_batch(seed=4)
    head = model.action_head
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net = ActionExpert(*model.start(model.encode_prefix(batch["images"], batch["task"])))
        tokens_a, cond_a = head.embed(x, torch.full((2,), 0.2))
        tokens_b, cond_b = head.embed(x, torch.full((2,), 0.7))
        assert torch.equal(tokens_a, tokens_b) and not torch.allclose(cond_a, cond_b)
        v = [head.velocity(x, torch.full((2,), t), network=net) for t in (0.2, 0.7)]
        assert (v[0] - v[1]).abs().max() > 1e-3
        for module in model.modules():
            if isinstance(module, AdaptiveRMSNorm):
                module.dense.weight.zero_()
        v = [head.velocity(x, torch.full((2,), t), network=net) for t in (0.2, 0.7)]
        assert torch.equal(v[0], v[1])


def test_training_runs_without_reading_the_state() -> None:
    model, batch = pi05_model(generation=True, seed=5), random_batch(seed=5)
    model.train()
    objective = Objective(generation=0.1, action=1.0, scales=4)
    loss, _ = model(batch, torch.Generator().manual_seed(0), objective=objective)
    loss.backward()
    dense = model.trunk.layers[0].experts[ACTION].attn_norm.dense.weight
    assert dense.grad is not None and dense.grad.abs().sum() > 0
    assert model.action_head.time_mlp[0].weight.grad.abs().sum() > 0
    del batch["state"]
    again, _ = model(batch, torch.Generator().manual_seed(0), objective=objective)
    assert torch.equal(loss.detach(), again.detach())


def test_unsupported_combinations_are_named() -> None:
    data = micro_config(True).model_dump()
    data["trunk"]["generation"]["norm"] = "adaptive"
    with pytest.raises(ValueError, match=r"trunk.generation.norm: 'adaptive' needs a conditioning"):
        type(micro_config()).model_validate(data)
    model, batch = pi05_model(), random_batch(generation=False)
    with pytest.raises(ValueError, match=r"no state token .* pass state=None"):
        model.predict(batch["images"], batch["task"], batch["state"])
    stateful = F1(micro_config(False)).eval()
    with pytest.raises(ValueError, match=r"has a state token .* got None"):
        stateful.predict(batch["images"], batch["task"], None)
