"""The train/inference contract (docs/contract.md): the Action rows of a training pass read exactly
what `predict` builds, never the ground-truth future; the CE reads teacher-forced inputs."""

import pytest
import torch

from attention import ACTION
from f1kit.model import F1, Objective
from mot import KVCache
from tests.f1kit.model.helpers import micro_model, random_batch

ACTING = Objective(generation=0.1, action=1.0, scales=4)  # stages II/III


class _JointPassRecorder:
    """Wraps ``model.trunk.forward``: the uncached pass with action tokens (the training pass)
    runs with a fresh KV cache, so its per-layer K/V can be read; mask and positions are kept."""

    def __init__(self, model: F1) -> None:
        self.model, self.calls = model, []
        self.forward = model.trunk.forward
        model.trunk.forward = self  # type: ignore[method-assign]

    def __call__(self, xs, positions, mask, *, cache=None, update_cache=True, **kw):
        action = xs[self.model.experts.index(ACTION)]
        if cache is not None or action is None or action.shape[1] == 0:
            return self.forward(xs, positions, mask, cache=cache, update_cache=update_cache, **kw)
        n = sum(x.shape[1] for x in xs if x is not None)
        recorded = self.model.trunk.new_cache(xs[0].shape[0], n, dtype=xs[0].dtype)
        self.calls.append((recorded, mask.expand(xs[0].shape[0], -1, -1), positions))
        return self.forward(xs, positions, mask, cache=recorded, **kw)


def test_action_rows_read_exactly_the_cache_predict_builds():
    """Same observation, same seed: every K/V entry the training pass's action rows attend to,
    layer by layer and in order, is the entry `foresee` wrote into the cache `act` reads
    (float64; the two differ only by summation order, below 1e-12)."""
    model = micro_model(seed=7).double().eval()
    batch = random_batch(seed=7)
    batch["state"], batch["action"] = batch["state"].double(), batch["action"].double()
    prefix = model.encode_prefix(batch["images"], batch["task"], batch["history_codes"])
    _, bound, cache = model.foresee(prefix, generator=torch.Generator().manual_seed(5))
    recorder = _JointPassRecorder(model)
    with torch.no_grad():
        model(batch, torch.Generator().manual_seed(5), objective=ACTING)
    (train_kv, mask, _), *_ = recorder.calls  # the flow loss runs the network once
    n_act = 1 + model.config.action.chunk  # state + chunk rows, the last of the sequence
    for i in range(batch["state"].shape[0]):
        seen = torch.nonzero(mask[i, -1, :-n_act]).squeeze(1)  # what the action rows read
        cached = torch.nonzero(bound.valid[i, : cache.length]).squeeze(1)  # what act reads
        assert len(seen) == len(cached)
        for got, want in ((train_kv.k, cache.k), (train_kv.v, cache.v)):
            torch.testing.assert_close(
                got[:, i][:, :, seen], want[:, i][:, :, cached], rtol=0, atol=1e-12
            )
    # Counter-case: a cache from another draw differs in the foresight entries.
    _, _, other = model.foresee(prefix, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(other.k[:, 0], cache.k[:, 0])
    assert isinstance(cache, KVCache)


def test_actions_never_see_the_true_future_and_the_ce_is_teacher_forced():
    """Replacing the ground-truth future codes changes nothing the action loss sees (no oracle),
    while the generation loss equals the plain teacher-forced pass over the same 4 scales."""
    model = micro_model(seed=8).double()
    batch = random_batch(seed=8)
    batch["state"], batch["action"] = batch["state"].double(), batch["action"].double()
    other = {**batch, "foresight_codes": torch.randint(0, 64, (2, 30))}
    g = torch.Generator
    base = model(batch, g().manual_seed(1), objective=ACTING)[1]
    moved = model(other, g().manual_seed(1), objective=ACTING)[1]
    assert moved["loss/action"] == base["loss/action"]
    assert moved["loss/generation"] != base["loss/generation"]
    for b, metrics in ((batch, base), (other, moved)):
        teacher = model(b, objective=Objective(generation=1.0, action=0.0, scales=4))[1]
        assert metrics["loss/generation"] == pytest.approx(teacher["loss/generation"], rel=1e-12)
        assert metrics["accuracy/foresight"] == teacher["accuracy/foresight"]


def test_an_acting_pass_trains_on_the_inference_scale_count_only():
    model, batch = micro_model(), random_batch()
    assert model.config.generation.scales == 4
    with pytest.raises(ValueError, match=r"model\.generation\.scales"):
        model(batch, objective=Objective(generation=0.1, action=1.0, scales=3))
    loss, _ = model(batch, objective=Objective(generation=0.1, action=1.0))  # None = the 4
    assert loss.requires_grad


def test_one_scale_acting_pass_shares_the_sos_and_draws_like_inference():
    """With generation.scales = 1 the only G input is the SOS (nothing to twin); the draw still
    comes first, as at inference, so the flow's draws follow the same generator stream."""
    from tests.f1kit.model.helpers import MICRO_TOKENIZER, micro_config

    torch.manual_seed(0)
    cfg = micro_config(overrides={"generation": {"tokenizer": MICRO_TOKENIZER, "scales": 1}})
    model, batch = F1(cfg), random_batch(seed=3)
    acting = Objective(generation=0.1, action=1.0)
    loss, metrics = model(batch, torch.Generator().manual_seed(0), objective=acting)
    teacher = model(batch, objective=Objective(generation=1.0, action=0.0, scales=1))[1]
    assert metrics["loss/generation"] == pytest.approx(teacher["loss/generation"], rel=1e-6)
    assert loss.requires_grad


def test_a_bf16_model_regresses_the_actions_unrounded() -> None:
    """The flow head computes x_tau and the target a - eps in float32; the training pass hands it
    the batch's float32 actions (rounding them to the weights' bf16 first would move the target
    by up to 2^-8 of its size)."""
    model = micro_model(generation=False).to(torch.bfloat16)
    batch = random_batch(generation=False)
    seen = []
    loss = model.action_head.loss

    def spy(actions, **kw):
        seen.append(actions)
        return loss(actions, **kw)

    model.action_head.loss = spy  # type: ignore[method-assign]
    model(batch, torch.Generator().manual_seed(0), objective=Objective(action=1.0))
    assert seen[0].dtype == torch.float32
    assert torch.equal(seen[0], batch["action"])
