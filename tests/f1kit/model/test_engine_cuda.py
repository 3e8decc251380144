"""The GPU-ready predict path on CUDA: no synchronising call, compiled and captured == eager.

Skipped without a CUDA device (`benchmarks/gpu_check.sh` runs them on a lent GPU). The micro
model keeps inductor's compile short; the paper-size figures come from
`benchmarks/f1_inference.py --size paper`.
"""

import pytest
import torch
import torch._dynamo

from f1kit.model.engine import Engine
from tests.f1kit.model.helpers import micro_model, random_batch

pytestmark = pytest.mark.cuda


def _inputs(model, generation=True, seed=0):
    batch = random_batch(b=2, seed=seed, generation=generation)
    device = "cuda"
    texts = model.understanding.encode_text(batch["task"], device)  # as F1Policy keeps it
    history = batch.get("history_codes")
    return {
        "images": batch["images"].to(device),
        "texts": texts,
        "state": batch["state"].to(device),
        "history_codes": None if history is None else history.to(device),
        "noise": torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(9)).to(device),
    }


def _predict(model, inputs, engine=None):
    return model.predict(
        inputs["images"],
        inputs["texts"],
        inputs["state"],
        inputs["history_codes"],
        generator=torch.Generator(device="cuda").manual_seed(0),
        noise=inputs["noise"],
        engine=engine,
        check_codes=False,
    )


@pytest.mark.parametrize("generation", [True, False])
@pytest.mark.parametrize("mode", ["eager", "reduce-overhead"])
def test_predict_makes_no_synchronising_cuda_call(generation, mode):
    """After warm-up a chunk queues its kernels and returns: torch raises on any sync."""
    torch._dynamo.reset()
    model = micro_model(generation).cuda().eval()
    inputs = _inputs(model, generation)
    engine = Engine(model.trunk, mode)
    for _ in range(3):  # compile, record the CUDA graphs, replay
        _predict(model, inputs, engine)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pred = _predict(model, inputs, engine)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert pred.actions.is_cuda


# bf16 logits may tip a foresight draw (and then the actions differ by design): No-Gen there.
@pytest.mark.parametrize(("dtype", "generation"), [(torch.float32, True), (torch.bfloat16, False)])
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_and_captured_predict_match_eager(mode, dtype, generation):
    torch._dynamo.reset()
    model = micro_model(generation).to("cuda", dtype).eval()
    inputs = _inputs(model, generation)
    inputs["state"] = inputs["state"].to(dtype)
    ref = _predict(model, inputs)
    engine = Engine(model.trunk, mode)
    torch._dynamo.utils.counters.clear()
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 0.05, "atol": 0.05}
    kept = None
    for _ in range(3):
        pred = _predict(model, inputs, engine)
        torch.testing.assert_close(pred.actions, ref.actions, **tol)
        if generation:
            pairs = zip(pred.foresight, ref.foresight, strict=True)
            assert all(torch.equal(a, b) for a, b in pairs)
        if kept is not None:  # a returned chunk is the caller's: the next replay leaves it be
            torch.testing.assert_close(kept[0], kept[1], rtol=0, atol=0)
        kept = (pred.actions, pred.actions.clone())
    if mode == "reduce-overhead":  # the graphs were really captured, none skipped
        assert torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] == 0
    # another batch through the same engine: the rewound caches carry nothing over
    other = _inputs(model, generation, seed=4)
    other["state"] = other["state"].to(dtype)
    torch.testing.assert_close(
        _predict(model, other, engine).actions, _predict(model, other).actions, **tol
    )
