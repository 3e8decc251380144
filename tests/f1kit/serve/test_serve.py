"""f1kit serve: handshake, round trips equal to the in-process policy, refusals, tokens, drops.

Everything runs on 127.0.0.1 with a free port, each test bounded by the client's timeout.
"""

import pickle
import socket
import time
from typing import ClassVar

import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from f1kit.data import POSTPROCESSOR, PREPROCESSOR, NormalizeStep, Processor, UnnormalizeStep
from f1kit.model import F1Policy
from f1kit.serve import (
    PROTOCOL,
    PolicyClient,
    PolicyServer,
    ServedAgent,
    ServeError,
    ServerError,
    WireError,
    decode,
    encode,
)
from f1kit.sim import EvalConfig, evaluate  # sets MUJOCO_GL before anything imports MuJoCo
from flow import Normalizer, RTCConfig, RTCGuide
from tests.f1kit.model.helpers import micro_model

TIMEOUT = 20.0


def _observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation.images.corner": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=(4,)).astype(np.float32),
        "task": "reach the goal",
    }


def _policy(generation: bool = True) -> F1Policy:
    state = Normalizer(torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.ones(4) * 2, "mean_std")
    action = Normalizer(torch.tensor([0.5, 0.0, -0.5, 0.2]), torch.ones(4) * 3, "mean_std")
    pre = NormalizeStep({"observation.state": "mean_std"}, {"arm": {"observation.state": state}})
    post = UnnormalizeStep({"action": "mean_std"}, {"arm": {"action": action}})
    return F1Policy(
        micro_model(generation).eval(),
        preprocessor=Processor([pre], PREPROCESSOR),
        postprocessor=Processor([post], POSTPROCESSOR),
        seed=3,
    )


@pytest.fixture(scope="module")
def served():
    policy = _policy()
    with PolicyServer(policy, port=0) as server:
        yield policy, server


def _client(server: PolicyServer, **kwargs) -> PolicyClient:
    return PolicyClient("127.0.0.1", server.port, timeout=TIMEOUT, **kwargs)


def test_handshake_describes_the_policy(served):
    policy, server = served
    with _client(server) as client:
        spec = client.spec
    cfg = policy.model.config.action
    assert spec["cameras"] == ["corner"] and spec["foresight"] is True
    assert (spec["chunk"], spec["execute"], spec["state_dim"]) == (cfg.chunk, cfg.execute, 4)
    assert spec["action_dims"] == {"arm": 4} and spec["image_size"] == 32
    assert client.server["protocol"] == PROTOCOL


def test_round_trip_equals_the_in_process_policy(served):
    """Same seed, same observations: the same chunks and the same select_action actions."""
    _, server = served
    local = _policy()
    observations = [_observation(i) for i in range(5)]
    with _client(server, foresight=True) as client:
        chunk = client.predict_action_chunk(observations[0])
        expected = local.predict_action_chunk(observations[0])[0].numpy()
        np.testing.assert_array_equal(chunk, expected)
        assert client.last_foresight is not None and client.last_foresight.dtype == np.uint8
        client.reset()
        local.reset()
        remote = [client.select_action(o) for o in observations]
    mine = [local.select_action(o) for o in observations]
    for a, b in zip(remote, mine, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o.pop("observation.state"), "missing 'observation.state'"),
        (lambda o: o.update({"observation.images.corner": np.zeros((5, 5), np.uint8)}), "corner"),
        (lambda o: o["observation.state"].__setitem__(0, np.nan), "NaN"),
        (lambda o: o.pop("task"), "task"),
    ],
)
def test_bad_observations_are_refused_and_the_connection_keeps_serving(served, change, message):
    _, server = served
    with _client(server) as client:
        bad = _observation(0)
        change(bad)
        with pytest.raises(ServerError, match=message):
            client.predict_action_chunk(bad)
        assert client.predict_action_chunk(_observation(1)).shape == (3, 4)


def test_a_pickle_or_garbage_frame_is_refused_not_loaded(served):
    _, server = served

    class Boom:  # would run on unpickling
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    with connect(f"ws://127.0.0.1:{server.port}", open_timeout=TIMEOUT) as ws:
        ws.send(encode({"type": "hello", "version": PROTOCOL, "id": 0}))
        assert decode(ws.recv(timeout=TIMEOUT))["type"] == "ready"
        for frame in (pickle.dumps({"type": "predict", "x": Boom()}), b"\xc1", "text"):
            ws.send(frame)
            reply = decode(ws.recv(timeout=TIMEOUT))
            assert reply["type"] == "error" and "frame" in reply["message"]
        ws.send(encode({"type": "reset", "id": 1}))  # still served
        assert decode(ws.recv(timeout=TIMEOUT)) == {"type": "ok", "id": 1}


def test_wire_refuses_what_it_cannot_type():
    with pytest.raises(WireError, match="dtype"):
        encode({"type": "x", "a": np.array(["text"], dtype=object)})
    with pytest.raises(WireError, match="plain data"):
        encode({"type": "x", "a": object()})
    ok = decode(encode({"type": "x", "a": np.arange(6, dtype=np.int32).reshape(2, 3)}))
    assert ok["a"].dtype == np.int32 and ok["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(WireError, match="limit"):
        decode(encode({"type": "x", "a": np.zeros(100, np.uint8)}), max_frame=50)


def test_a_token_is_required_beyond_loopback_and_checked():
    policy = _policy(generation=False)
    with pytest.raises(ServeError, match="token"):
        PolicyServer(policy, host="0.0.0.0", port=0)
    with PolicyServer(policy, port=0, token="s3cret") as server:
        with pytest.raises(ServerError, match="token"):
            _client(server)
        with pytest.raises(ServerError, match="token"):
            PolicyClient("127.0.0.1", server.port, token="wrong", timeout=TIMEOUT)
        with PolicyClient("127.0.0.1", server.port, token="s3cret", timeout=TIMEOUT) as client:
            assert client.predict_action_chunk(_observation(0)).shape == (3, 4)


def test_a_client_that_drops_mid_request_leaks_nothing(served):
    _, server = served
    before = server.connections
    ws = connect(f"ws://127.0.0.1:{server.port}", open_timeout=TIMEOUT).__enter__()
    ws.send(encode({"type": "hello", "version": PROTOCOL, "id": 0}))
    decode(ws.recv(timeout=TIMEOUT))
    ws.send(encode({"type": "observe", "id": 1, "observation": _observation(0)}))
    ws.send(encode({"type": "predict", "id": 2}))
    ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close handshake
    ws.socket.close()
    deadline = time.monotonic() + TIMEOUT
    while server.connections > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connections == before
    with _client(server) as client:  # the others are still served
        assert client.predict_action_chunk(_observation(2)).shape == (3, 4)


def test_async_loop_plans_ahead_and_merges(served):
    """observe/action: a new chunk is asked for at the threshold; its past steps are dropped."""
    _, server = served
    with _client(server, threshold=0.5) as client:
        client.reset()
        actions = []
        for step in range(7):
            client.observe(_observation(step))
            actions.append(client.action())
        assert all(a.shape == (4,) for a in actions)
        assert client._acted == 7 and all(t >= 7 for t in client._plan)


def test_rtc_pulls_the_new_chunk_towards_the_prefix():
    """In process and through the server: the guided chunk's first steps move to the prefix."""
    policy = _policy()
    observation = _observation(0)
    free = policy.predict_action_chunk(observation)[0]
    target = free + 2.0  # raw units: the policy normalises the prefix as its data
    config = RTCConfig(delay=2, horizon=2, max_guidance=10.0)
    policy.reset()
    guided = policy.predict_action_chunk(observation, rtc=RTCGuide(target[None, :2], config))[0]
    assert (guided[:2] - target[:2]).abs().mean() < 0.5 * (free[:2] - target[:2]).abs().mean()

    with PolicyServer(_policy(), port=0) as server, _client(server, rtc=config) as client:
        client._call({"type": "observe", "observation": observation})  # step 0, no auto-request
        client._step = 0
        client._plan = {0: target[0].numpy(), 1: target[1].numpy()}  # the old chunk's plan
        request = client._predict_request()
        assert request["rtc"]["prefix"].shape == (2, 4) and request["rtc"]["horizon"] == 2
        reply = client._call(request)
        np.testing.assert_allclose(reply["actions"], guided.numpy(), rtol=1e-4, atol=1e-4)
        request["rtc"]["prefix"][0, 0] = np.nan
        with pytest.raises(ServerError, match="NaN"):
            client._call(request)


class _Recorder:
    def __init__(self, policy) -> None:
        self.policy, self.actions = policy, []

    def reset(self) -> None:
        self.policy.reset()

    def select_action(self, observation):
        action = np.asarray(self.policy.select_action(observation), dtype=np.float32)
        self.actions.append(action)
        return action


@pytest.mark.sim
def test_closed_loop_through_the_server_equals_in_process():
    """Meta-World through PolicyClient.select_action, no delay: every action the in-process
    policy takes on the same layouts; with a delay the real-time loop runs to the end."""
    pytest.importorskip("metaworld")
    config = EvalConfig(tasks=("reach-v3",), episodes=2, max_steps=12, size=64)
    local = _Recorder(_policy())
    reference = evaluate(local, config, progress=False)
    with PolicyServer(_policy(), port=0) as server:
        with _client(server) as client:
            remote = _Recorder(client)
            served = evaluate(remote, config, progress=False)
        rtc = RTCConfig(delay=1, horizon=2)
        with _client(server, threshold=0.75, rtc=rtc, delay_steps=1) as client:
            delayed = evaluate(ServedAgent(client), config, progress=False)
            assert client.requests >= 2 * 12 // 3  # a chunk at least every 3 of 12 steps
    assert len(local.actions) == len(remote.actions) == 24
    for a, b in zip(local.actions, remote.actions, strict=True):
        np.testing.assert_array_equal(a, b)
    assert served.tasks["reach-v3"].outcomes == reference.tasks["reach-v3"].outcomes
    assert delayed.tasks["reach-v3"].episodes == 2


class _StubServer(PolicyServer):
    """Chunks whose action i, planned at step s, is [s + i, s, 0, 0]: the step it covers and the
    step it was planned at; RTC prefixes received are recorded."""

    prefixes: ClassVar[list] = []

    def _predict(self, session, rid, foresight, guide):
        s = session.step
        if guide is not None:
            self.prefixes.append((s, guide.prefix[0].numpy().copy()))
        actions = np.zeros((self.handshake.chunk, 4), np.float32)
        actions[:, 0] = s + np.arange(self.handshake.chunk)
        actions[:, 1] = s
        return {"type": "chunk", "id": rid, "actions": actions, "step": s, "server_ms": 0.0}


@pytest.mark.parametrize(
    "settings",
    [
        {"threshold": 0.5},
        {"threshold": 1.0, "delay_steps": 1},
        {"threshold": 1.0, "delay_steps": 2},
        {"threshold": 1.0, "delay_steps": 1, "rtc": RTCConfig(delay=1, horizon=2)},
        {"threshold": 1.0, "delay_steps": 1, "merge": "average", "merge_weight": 0.25},
    ],
    ids=["threshold", "delay1", "delay2", "rtc", "average"],
)
def test_the_real_time_loop_serves_each_step_its_own_action(settings):
    """Action t is the one that covers step t, however chunks overlap, wait or merge."""
    _StubServer.prefixes = []
    with _StubServer(_policy(generation=False), port=0) as server, _client(server, **settings) as c:
        for t in range(12):
            c.observe(_observation(t))
            action = c.action()
            assert action[0] == t, (t, action)
            if settings.get("merge") == "average" and t >= 2:
                planned = [t - 1, t - 2]  # the last two chunks both cover t: 0.25 new, 0.75 old
                assert action[1] == pytest.approx(0.25 * planned[0] + 0.75 * planned[1])
    for s, prefix in _StubServer.prefixes:  # prefix[i] is the old plan for step s + i
        np.testing.assert_array_equal(prefix[:, 0], s + np.arange(len(prefix)))
    assert bool(_StubServer.prefixes) == ("rtc" in settings)


def test_a_refused_step_in_the_loop_raises_and_reset_recovers(served):
    _, server = served
    with _client(server) as client:
        bad = _observation(0)
        bad["observation.state"] = bad["observation.state"][:2]
        client.observe(bad)
        with pytest.raises(ServerError, match="observe refused"):
            for t in range(3):  # raised at the next observe or action, once answered
                client.action()
                client.observe(_observation(t))
        client.reset()
        client.observe(_observation(1))
        assert client.action().shape == (4,)
        with pytest.raises(ValueError, match="one robot"):
            client.observe({**_observation(2), "observation.images.corner": np.zeros((2, 8, 8, 3))})


def test_an_unauthenticated_client_cannot_make_the_server_decode_much(served):
    _, server = served
    with connect(f"ws://127.0.0.1:{server.port}", open_timeout=TIMEOUT) as ws:
        ws.send(encode({"type": "hello", "version": PROTOCOL, "id": 0, "pad": "x" * 8000}))
        assert "limit" in decode(ws.recv(timeout=TIMEOUT))["message"]
    with pytest.raises(WireError, match="not one msgpack"):  # a frame of 5000 empty maps
        decode(b"\x91\xdd" + (5000).to_bytes(4, "big") + b"\x80" * 5000)


def test_a_non_ascii_token_is_compared_not_crashed():
    with PolicyServer(_policy(generation=False), port=0, token="sécret") as server:
        with PolicyClient("127.0.0.1", server.port, token="sécret", timeout=TIMEOUT) as client:
            assert client.spec["chunk"] == 3
        with pytest.raises(ServerError, match="token"):
            PolicyClient("127.0.0.1", server.port, token="sëcret", timeout=TIMEOUT)


def test_cli_refuses_a_public_bind_without_token_and_an_unreachable_server(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from f1kit.cli import app

    monkeypatch.delenv("F1KIT_SERVE_TOKEN", raising=False)
    _policy(generation=False).save_pretrained(tmp_path / "policy")
    runner = CliRunner(env={"COLUMNS": "300"})  # usage errors in one line, not a wrapped box
    result = runner.invoke(app, ["serve", str(tmp_path / "policy"), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "needs a token" in result.output
    (tmp_path / "empty").write_text("\n")
    result = runner.invoke(
        app, ["serve", str(tmp_path / "policy"), "--token-file", str(tmp_path / "empty")]
    )
    assert result.exit_code == 2 and "is empty" in result.output
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["eval", "--server", f"127.0.0.1:{port}"])
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.output
    result = runner.invoke(app, ["eval", "--server", "127.0.0.1:1", "--rtc-horizon", "3"])
    assert result.exit_code == 2 and "--delay-steps" in result.output


def test_batching_gathers_connections_into_one_call():
    """Two clients asking together share one model call; each gets its own rows back, a lone
    request equals the unbatched policy (same seed, batch of one)."""
    import threading

    local = _policy()
    with PolicyServer(_policy(), port=0, batch_window_ms=300.0) as server:
        with _client(server) as client:
            alone = client.predict_action_chunk(_observation(0))
        np.testing.assert_array_equal(alone, local.predict_action_chunk(_observation(0))[0])
        chunks: dict[int, np.ndarray] = {}
        barrier = threading.Barrier(2)

        def ask(i: int) -> None:
            with _client(server) as c:
                c._call({"type": "observe", "observation": _observation(10 + i)})
                barrier.wait()
                chunks[i] = c._call({"type": "predict"})["actions"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=TIMEOUT)
        assert sorted(chunks) == [0, 1] and all(c.shape == (3, 4) for c in chunks.values())
        assert not np.array_equal(chunks[0], chunks[1])  # each its own observation's rows
        assert server.batcher.sizes == [1, 2]


def test_a_batched_observation_with_one_task_per_row_round_trips(served):
    """Lists travel as sent: a batch's task list reaches the policy as a list of str."""
    _, server = served
    rows = [_observation(i) for i in range(2)]
    batched = {
        "observation.images.corner": np.stack([r["observation.images.corner"] for r in rows]),
        "observation.state": np.stack([r["observation.state"] for r in rows]),
        "task": ["reach the goal", "open the drawer"],
    }
    with _client(server) as client:
        assert client.predict_action_chunk(batched).shape == (2, 3, 4)
