"""The GPU-ready predict path: no host reads, reused buffers, compiled steps without graph breaks.

Compiled runs use the ``eager`` / ``aot_eager`` backends: dynamo's capture (``fullgraph=True``
raises on any break) and AOTAutograd's functionalisation of the in-place cache writes are what
can go wrong in our code; inductor's code generation costs minutes on a 2-core CPU and is covered
by `benchmarks/gpu_check.sh` on CUDA.
"""

import pytest
import torch
import torch._dynamo

from f1kit.host_reads import HostReadError, host_reads
from f1kit.model.engine import Engine, typechecks_off
from f1kit.model.trunk import ActionExpert, GenerationExpert
from tests.f1kit.model.helpers import micro_model, random_batch


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _predict(model, batch, engine=None, seed=0, check_codes=True):
    noise = torch.randn(batch["state"].shape[0], 3, 4, generator=torch.Generator().manual_seed(9))
    history = batch.get("history_codes")
    return model.predict(
        batch["images"],
        batch["task"],
        batch["state"],
        history,
        generator=torch.Generator().manual_seed(seed),
        noise=noise,
        engine=engine,
        check_codes=check_codes,
    )


@pytest.mark.parametrize("generation", [True, False])
def test_predict_reads_no_tensor_on_the_host(generation):
    """Prefix, scale and flow steps are tensor work only (any .item()/int()/bool() raises)
    once the history codes are known good (``check_codes=False``: the policy's own codes)."""
    model = micro_model(generation).eval()
    batch = random_batch(b=2, generation=generation)
    with host_reads(forbid=True):
        _predict(model, batch, check_codes=False)  # first call: builds layouts, reads nothing
        _predict(model, batch, Engine(model.trunk), check_codes=False)


def test_history_codes_are_checked_once_at_the_boundary():
    model = micro_model().eval()
    batch = random_batch(b=2)
    with host_reads() as reads:
        _predict(model, batch)
    assert reads.count == 1, reads.sites  # one range check of all the history codes
    batch["history_codes"][1, 2, 7] = 64  # the micro tokenizer has 64 codes
    with pytest.raises(ValueError, match=r"codes in \[0, 64\)"):
        _predict(model, batch)


def test_host_reads_counts_and_forbids():
    t = torch.tensor([1.0, 2.0])
    before = dict(vars(torch.Tensor))
    with host_reads() as reads:
        float(t[0]), t.tolist(), bool(t.any())
    assert reads.count == 3
    with pytest.raises(HostReadError, match="read on the host"), host_reads(forbid=True):
        t.sum().item()
    assert t.sum().item() == 3.0  # restored
    assert dict(vars(torch.Tensor)) == before  # inherited methods stay inherited


def test_an_engine_serves_only_its_own_trunk():
    model, other = micro_model(seed=0).eval(), micro_model(seed=1).eval()
    with pytest.raises(ValueError, match="another model's trunk"):
        _predict(model, random_batch(b=2), Engine(other.trunk))


def test_a_chunk_rewound_by_a_later_one_is_refused():
    """foresee's (bound, cache) is valid until the next chunk on its engine, and no longer."""
    model = micro_model().eval()
    engine, batch = Engine(model.trunk), random_batch(b=2)
    prefix = model.encode_prefix(batch["images"], batch["task"], batch["history_codes"])
    _, bound, cache = model.foresee(prefix, generator=0, engine=engine)
    model.act(bound, cache, batch["state"])  # still its own
    _predict(model, random_batch(b=2, seed=3), engine)  # takes and refills the same cache
    with pytest.raises(ValueError, match="later chunk on the same Engine"):
        model.act(bound, cache, batch["state"])


def test_engine_reuses_its_caches_and_matches_fresh_ones():
    model = micro_model().eval()
    engine = Engine(model.trunk)
    batch = random_batch(b=2)
    ref = _predict(model, batch)
    first = _predict(model, batch, engine)
    (cache,) = engine._caches.values()
    pointer = cache.k.data_ptr()
    # Another batch in between dirties the cache; the next chunk must not see its leftovers.
    _predict(model, random_batch(b=2, seed=5), engine, seed=3)
    second = _predict(model, batch, engine)
    assert len(engine._caches) == 1 and cache.k.data_ptr() == pointer
    for pred in (first, second):
        assert torch.equal(pred.actions, ref.actions)
        assert all(torch.equal(a, b) for a, b in zip(pred.foresight, ref.foresight, strict=True))


def test_compiled_predict_has_no_graph_break_and_matches_eager():
    """The trunk compiled with fullgraph=True (a break raises) for every step of a chunk (No-Gen's
    two graphs: tests/benchmarks/test_f1_inference.py's compiled records)."""
    model = micro_model().eval()
    batch = random_batch(b=2)
    ref = _predict(model, batch)
    engine = Engine(model.trunk, "default", backend="eager")
    counters = torch._dynamo.utils.counters
    for _ in range(2):  # the second call replays the graphs
        pred = _predict(model, batch, engine)
        torch.testing.assert_close(pred.actions, ref.actions, rtol=1e-5, atol=1e-5)
        pairs = zip(pred.foresight, ref.foresight, strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
        # one graph per step signature: the prefix pass (with the SOS), scales 2..4, a flow step
        assert counters["stats"]["unique_graphs"] == 5
    assert not counters["graph_break"]


def _filled(model, batch):
    prefix = model.encode_prefix(batch["images"], batch["task"], batch.get("history_codes"))
    return prefix, model.foresee(prefix, generator=torch.Generator().manual_seed(0))


def test_flow_step_compiles_as_one_graph():
    """One flow step (embed noisy chunk + time, the A slice over the cache, project)."""
    model = micro_model().eval()
    batch = random_batch(b=2)
    _, (_, bound, cache) = _filled(model, batch)
    head, net = model.action_head, ActionExpert(bound, cache)
    context = head.embed_state(batch["state"])

    def step(x, tau):
        return head.velocity(x, tau, context=context, network=net)

    x, tau = torch.randn(2, 3, 4), torch.full((2,), 0.3)
    with torch.no_grad():
        ref = step(x, tau)
        compiled = torch.compile(step, fullgraph=True, dynamic=False, backend="aot_eager")
        with typechecks_off():
            out = compiled(x, tau)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_scale_step_compiles_as_one_graph():
    """One foresight scale (embed its inputs, the G slice appending to the cache, the head)."""
    model = micro_model().eval()
    batch = random_batch(b=2)
    prefix, (tokens, bound, cache) = _filled(model, batch)
    gen, tok = model.generator, model.tokenizer
    net = GenerationExpert(bound, prefix.tokens)
    k = 2  # rerun scale 3 of the drawn pyramid: rewind the cache to just before its inputs
    start = prefix.tokens.shape[1] + model.aggregator.tokens + gen.tokens_upto(k)
    inputs = tok.teacher_forcing_inputs(tokens[:k])[:, -gen.config.token_counts[k] :]

    def step(inputs):
        x = gen.embed_scales(prefix.history, inputs, first_scale=k)
        return gen.head(net(x, None, torch.zeros(1, x.shape[1], dtype=torch.long), cache))

    with torch.no_grad():
        cache.truncate(start)
        ref = step(inputs)
        cache.truncate(start)
        compiled = torch.compile(step, fullgraph=True, dynamic=False, backend="aot_eager")
        with typechecks_off():
            out = compiled(inputs)
    assert cache.length == start + gen.config.token_counts[k]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
