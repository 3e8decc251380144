"""Flow-matching head: loss formula and masks, time conditioning, network hand-off, sampling."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_model, save_model
from torch import Tensor

from flow import (
    Convention,
    FlowHeadConfig,
    FlowMatchingHead,
    MLPVelocityNet,
    Normalizer,
    ODESolver,
    TransformerVelocityNet,
)

W = 32


def make_head(
    conditioning: str = "concat", net: str = "transformer", a: int = 5, c: int = 4, **kw
) -> FlowMatchingHead:
    adaptive = conditioning == "adanorm"
    network = (
        TransformerVelocityNet(W, depth=1, heads=2, adaptive=adaptive)
        if net == "transformer"
        else MLPVelocityNet(W, depth=2, adaptive=adaptive)
    )
    cfg = FlowHeadConfig(action_dim=a, chunk=c, width=W, conditioning=conditioning, **kw)
    return FlowMatchingHead(cfg, network)


def capture_predictions(head: FlowMatchingHead) -> dict[str, Tensor]:
    """Make ``head.project`` keep its last output (with its gradient) for inspection."""
    captured: dict[str, Tensor] = {}
    project = head.project

    def keep(hidden: Tensor) -> Tensor:
        out = project(hidden)
        out.retain_grad()
        captured["pred"] = out
        return out

    head.project = keep  # instance attribute shadows the method
    return captured


def fixed_draws(b: int, c: int, a: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, a, generator=g),
        torch.rand(b, generator=g),
        torch.randn(b, c, a, generator=g),
    )


@pytest.mark.parametrize("conditioning", ["concat", "adanorm"])
def test_loss_is_the_flow_matching_mse_in_the_paper_convention(conditioning: str):
    torch.manual_seed(0)
    head = make_head(conditioning)
    actions, tau, noise = fixed_draws(3, 4, 5)
    loss = head.loss(actions, tau=tau, noise=noise)
    # Written out independently: x_tau = (1 - tau) eps + tau a, target a - eps.
    w = tau[:, None, None]
    pred = head.velocity((1 - w) * noise + w * actions, tau)
    torch.testing.assert_close(loss, ((pred - (actions - noise)) ** 2).mean())


def test_padded_dims_and_steps_get_no_gradient_and_no_weight():
    torch.manual_seed(0)
    head = make_head()
    captured = capture_predictions(head)
    actions, tau, noise = fixed_draws(2, 4, 5)
    action_mask = torch.tensor([[True, True, True, False, False], [True] * 5])  # 2 embodiments
    chunk_mask = torch.tensor([[True] * 4, [True, True, False, False]])  # an episode ends
    loss = head.loss(actions, tau=tau, noise=noise, action_mask=action_mask, chunk_mask=chunk_mask)
    loss.backward()
    pred, grad = captured["pred"], captured["pred"].grad
    real = action_mask[:, None, :] & chunk_mask[:, :, None]
    assert torch.equal(grad[~real], torch.zeros(int((~real).sum())))
    assert (grad[real] != 0).all()
    err = (pred - (actions - noise)).detach() ** 2
    torch.testing.assert_close(loss, err[real].mean())  # mean over real entries only
    assert not torch.allclose(loss, err.mean())  # counter-case: the unmasked mean differs


def test_padded_chunk_steps_do_not_reach_the_loss_of_a_per_step_network():
    # With a per-step network, nothing at a padded step can influence the loss at all.
    torch.manual_seed(0)
    head = make_head(net="mlp")
    actions, tau, noise = fixed_draws(2, 4, 5)
    chunk_mask = torch.tensor([[True, True, True, False]] * 2)
    base = head.loss(actions, tau=tau, noise=noise, chunk_mask=chunk_mask)
    moved = actions.clone()
    moved[:, 3] += 100.0
    assert torch.equal(head.loss(moved, tau=tau, noise=noise, chunk_mask=chunk_mask), base)
    moved[:, 2] += 1.0  # counter-case: a real step does count
    assert not torch.equal(head.loss(moved, tau=tau, noise=noise, chunk_mask=chunk_mask), base)


def test_padded_action_dims_get_no_gradient_into_their_output_rows():
    torch.manual_seed(0)
    head = make_head()
    actions = torch.randn(3, 4, 3)  # a 3-dim robot on a 5-dim head: auto-padded and masked
    head.loss(actions, generator=torch.Generator().manual_seed(0)).backward()
    w, b = head.action_out.weight.grad, head.action_out.bias.grad
    assert torch.equal(w[3:], torch.zeros_like(w[3:])) and torch.equal(b[3:], torch.zeros(2))
    assert (w[:3].abs().sum(1) > 0).all()


def test_auto_padding_equals_explicit_padding_with_a_mask():
    torch.manual_seed(0)
    head = make_head()
    actions, tau, noise = fixed_draws(2, 4, 5)
    actions[..., 3:] = 0.0
    explicit = head.loss(
        actions, tau=tau, noise=noise, action_mask=torch.tensor([True, True, True, False, False])
    )
    auto = head.loss(actions[..., :3], tau=tau, noise=noise)
    assert torch.equal(auto, explicit)


def test_concat_time_conditioning_sees_tau_from_the_start():
    torch.manual_seed(0)
    head = make_head("concat")
    x = torch.randn(2, 4, 5)
    v0, v1 = head.velocity(x, torch.zeros(2)), head.velocity(x, torch.full((2,), 0.5))
    assert (v0 - v1).abs().max() > 1e-3


def test_adanorm_starts_time_blind_and_learns_to_use_tau():
    # adaLN-zero: modulation starts at 0, so the untrained field ignores tau; one step fixes it.
    torch.manual_seed(0)
    head = make_head("adanorm")
    x = torch.randn(2, 4, 5)
    t0, t1 = torch.zeros(2), torch.full((2,), 0.5)
    assert torch.equal(head.velocity(x, t0), head.velocity(x, t1))
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    for _ in range(2):  # the first step moves the output layer, the second the modulation
        opt.zero_grad()
        head.loss(torch.randn(8, 4, 5), generator=torch.Generator().manual_seed(1)).backward()
        opt.step()
    assert (head.velocity(x, t0) - head.velocity(x, t1)).abs().max() > 1e-4


def test_state_token_conditions_the_velocity():
    torch.manual_seed(0)
    head = make_head(state_dim=3)
    x, tau = torch.randn(2, 4, 5), torch.full((2,), 0.3)
    s = torch.randn(2, 3)
    v = lambda state: head.velocity(x, tau, context=head.embed_state(state))  # noqa: E731
    assert (v(s) - v(s + 1)).abs().max() > 1e-4
    loss_a = head.loss(torch.randn(2, 4, 5), state=s, generator=torch.Generator().manual_seed(0))
    loss_b = head.loss(
        torch.randn(2, 4, 5), state=s + 1, generator=torch.Generator().manual_seed(0)
    )
    assert loss_a != loss_b
    with pytest.raises(ValueError, match="state_dim"):
        make_head().embed_state(s)


def test_network_is_handed_in_per_call():
    torch.manual_seed(0)
    cfg = FlowHeadConfig(action_dim=5, chunk=4, width=W)
    bare = FlowMatchingHead(cfg)  # F1 style: the MoT expert comes with every call
    with pytest.raises(ValueError, match="network"):
        bare.loss(torch.randn(2, 4, 5))
    net = TransformerVelocityNet(W, depth=1, heads=2)
    owned = FlowMatchingHead(cfg, net)
    owned.load_state_dict(bare.state_dict(), strict=False)
    x, tau = torch.randn(2, 4, 5), torch.rand(2)
    assert torch.equal(bare.velocity(x, tau, network=net), owned.velocity(x, tau))
    calls = []

    def spy(tokens: Tensor, cond: Tensor | None, context: Tensor | None) -> Tensor:
        calls.append((tokens.shape, cond, context))
        return net(tokens, cond, context)

    out = bare.sample(2, generator=torch.Generator().manual_seed(0), network=spy)
    assert out.nfe == len(calls) == 10  # default: 10 Euler steps, as pi0/F1
    assert calls[0][0] == (2, 4, W) and calls[0][1] is None


def test_sampling_is_seeded_and_solver_backends_agree():
    torch.manual_seed(0)
    head = make_head()
    a = head.sample(3, generator=torch.Generator().manual_seed(7))
    b = head.sample(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.sample, b.sample) and a.sample.shape == (3, 4, 5)
    noise = torch.randn(3, 4, 5)
    native = head.sample(3, noise=noise, solver=ODESolver("midpoint", 4))
    with torch.no_grad():
        ref = head.sample(3, noise=noise, solver=ODESolver("midpoint", 4, backend="torchdiffeq"))
    torch.testing.assert_close(native.sample, ref.sample, rtol=1e-5, atol=1e-5)
    assert native.nfe == ref.nfe == 8


def test_normalizer_is_applied_in_training_and_inverted_at_inference(tmp_path):
    torch.manual_seed(0)
    raw = torch.randn(64, 4, 3) * torch.tensor([100.0, 1.0, 0.01]) + 50.0
    norm = Normalizer.fit(raw, "mean_std")
    head = make_head(a=5)
    with_norm = FlowMatchingHead(head.config, head.network, normalizer=norm)
    with_norm.load_state_dict(head.state_dict(), strict=False)  # same weights, plus the stats
    tau, noise = torch.rand(64), torch.randn(64, 4, 5)
    torch.testing.assert_close(
        with_norm.loss(raw, tau=tau, noise=noise), head.loss(norm(raw), tau=tau, noise=noise)
    )
    noise = torch.randn(2, 4, 5)
    sampled = with_norm.sample(2, noise=noise).sample
    assert sampled.shape == (2, 4, 3)  # cut to the robot's own dims
    torch.testing.assert_close(sampled, norm.inverse(head.sample(2, noise=noise).sample[..., :3]))

    # Stats travel with the weights in one safetensors file.
    path = tmp_path / "head.safetensors"
    save_model(with_norm, str(path))
    fresh = FlowMatchingHead(
        head.config,
        TransformerVelocityNet(W, depth=1, heads=2),
        normalizer=Normalizer(torch.zeros(3), torch.ones(3), "mean_std"),
    )
    load_model(fresh, str(path))
    assert torch.equal(fresh.sample(2, noise=noise).sample, sampled)


@settings(max_examples=30)  # each example builds a head and runs a forward and backward
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 4),
    a=st.integers(1, 4),
    conditioning=st.sampled_from(["concat", "adanorm"]),
    net=st.sampled_from(["transformer", "mlp"]),
)
def test_loss_is_finite_and_masks_broadcast_for_any_shape(b, c, a, conditioning, net):
    torch.manual_seed(b + 10 * c + 100 * a)
    head = make_head(conditioning, net, a=a + 1, c=c)
    actions = torch.randn(b, c, a)
    chunk_mask = torch.rand(b, c) > 0.3
    chunk_mask[:, 0] = True
    loss = head.loss(actions, chunk_mask=chunk_mask, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert head.action_out.weight.grad[a:].abs().sum() == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"action_dim": 0, "chunk": 4}, "action_dim"),
        ({"action_dim": 3, "chunk": 0}, "chunk"),
        ({"action_dim": 3, "chunk": 4, "width": 33}, "width"),
        ({"action_dim": 3, "chunk": 4, "state_dim": 0}, "state_dim"),
        ({"action_dim": 3, "chunk": 4, "conditioning": "film"}, "conditioning"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, match: str):
    with pytest.raises((ValueError, TypeError), match=match):  # TypeError: runtime type check
        FlowHeadConfig(**kwargs)


def test_wrong_chunk_shape_and_oversized_normalizer_are_refused():
    head = make_head(state_dim=2)
    with pytest.raises(ValueError, match="noise"):
        head.loss(torch.randn(2, 4, 3), noise=torch.randn(2, 4, 3))  # must be the padded shape
    with pytest.raises(ValueError, match="state: expected batch 3"):
        head.sample(3, state=torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"expected \[b, 4, 5\]"):
        head.loss(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="do not fit"):
        head.loss(torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="normalizer"):
        FlowMatchingHead(
            head.config, normalizer=Normalizer(torch.zeros(6), torch.ones(6), "min_max")
        )


def test_pi0_weights_convention_runs_their_network_in_our_convention():
    torch.manual_seed(0)
    paper = make_head()
    cfg = FlowHeadConfig(action_dim=5, chunk=4, width=W, weights_convention=Convention.PI0)
    pi0 = FlowMatchingHead(cfg, paper.network)
    pi0.load_state_dict(paper.state_dict())  # "imported" weights: the same numbers
    x, tau = torch.randn(2, 4, 5), torch.tensor([0.25, 0.625])
    # `paper.velocity` is the raw network here: v_pi0(x, t). Ours must be -v_pi0(x, 1 - tau).
    assert torch.equal(pi0.velocity(x, tau), -paper.velocity(x, 1 - tau))

    # Sampling == the official loop (t from 1 down, x += dt * v, dt = -1/8) on their network.
    noise = torch.randn(2, 4, 5)
    with torch.no_grad():
        theirs, t = noise.clone(), 1.0
        for _ in range(8):
            theirs = theirs + (-1 / 8) * paper.velocity(theirs, torch.full((2,), t))
            t -= 1 / 8
        ours = pi0.sample(2, noise=noise, solver=ODESolver("euler", 8)).sample
    assert torch.equal(ours, theirs)

    # Fine-tuning loss == their loss in their convention: x_t = t eps + (1 - t) a, target eps - a.
    actions = torch.randn(2, 4, 5)
    t = 1 - tau
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
    theirs_loss = ((paper.velocity(x_t, t) - (noise - actions)) ** 2).mean()
    torch.testing.assert_close(pi0.loss(actions, tau=tau, noise=noise), theirs_loss)
    # Counter-case: the same weights read in our convention give another field.
    assert not torch.allclose(paper.velocity(x, tau), pi0.velocity(x, tau), atol=1e-3)


def test_state_normalizer_and_padding_are_applied_before_the_state_token():
    torch.manual_seed(0)
    raw_states = torch.randn(64, 2) * torch.tensor([100.0, 0.1]) + 7.0
    snorm = Normalizer.fit(raw_states, "min_max")
    plain = make_head(state_dim=4)
    with_stats = FlowMatchingHead(plain.config, plain.network, state_normalizer=snorm)
    with_stats.load_state_dict(plain.state_dict(), strict=False)
    actions, tau, noise = fixed_draws(3, 4, 5)
    prepared = torch.nn.functional.pad(snorm(raw_states[:3]), (0, 2))
    torch.testing.assert_close(
        with_stats.loss(actions, state=raw_states[:3], tau=tau, noise=noise),
        plain.loss(actions, state=prepared, tau=tau, noise=noise),
    )
    assert set(with_stats.state_dict()) >= {"state_normalizer.center", "state_normalizer.scale"}
    with pytest.raises(ValueError, match="state_normalizer"):
        FlowMatchingHead(make_head().config, state_normalizer=snorm)  # no state_dim


@pytest.mark.cuda
def test_head_sampling_is_captured_by_a_cuda_graph():
    torch.manual_seed(0)
    head = make_head(state_dim=3).cuda()
    noise = torch.randn(2, 4, 5, device="cuda")
    state = torch.randn(2, 3, device="cuda")
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            head.sample(2, noise=noise, state=state)  # warm-up outside the graph
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = head.sample(2, noise=noise, state=state).sample
        fresh_noise, fresh_state = torch.randn_like(noise), torch.randn_like(state)
        noise.copy_(fresh_noise)
        state.copy_(fresh_state)
        graph.replay()
        torch.cuda.synchronize()
        expected = head.sample(2, noise=fresh_noise, state=fresh_state).sample
    torch.testing.assert_close(static_out, expected)
