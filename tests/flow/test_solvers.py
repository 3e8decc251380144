"""Solvers: measured convergence orders, native == torchdiffeq, NFE, in-place/no-allocation loop."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from flow import NATIVE_METHODS, ODESolver, solve

# Test problem with a closed form: dy/dt = y cos(t), y(t) = y0 exp(sin t).
# Both y and t enter the field, so a solver that gets the stage times wrong loses its order.
Y0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
T1 = 2.0


def field(y: Tensor, t: Tensor) -> Tensor:
    return y * torch.cos(t)


def exact(t: float) -> Tensor:
    return Y0 * math.exp(math.sin(t))


def error(solver: ODESolver) -> float:
    return (solver(field, Y0).sample - exact(solver.t1)).abs().max().item()


def slope(method: str, backend: str, steps: tuple[int, ...]) -> float:
    """Least-squares slope of log(error) against log(step size)."""
    h = torch.tensor([T1 / n for n in steps], dtype=torch.float64).log()
    e = torch.tensor(
        [error(ODESolver(method, n, backend=backend, t1=T1)) for n in steps], dtype=torch.float64
    ).log()
    hc = h - h.mean()
    return float((hc * (e - e.mean())).sum() / (hc * hc).sum())


ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("backend", ["native", "torchdiffeq"])
@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_measured_order_of_convergence(method: str, backend: str):
    # Step counts inside the asymptotic regime: on this problem native midpoint's error ratios
    # run 2.3, 3.0, 3.5, 3.7, 3.9 from 4 steps up, torchdiffeq's RK4 (3/8 rule) 4.8, 10, 13,
    # 15; at 256 steps RK4's error (~1e-10) is still far above float64 round-off.
    steps = (32, 64, 128, 256)
    order = ORDERS[method]
    measured = slope(method, backend, steps)
    assert abs(measured - order) < 0.15, f"{method}/{backend}: slope {measured:.3f}, want {order}"


def test_orders_are_distinguishable():
    # Counter-case for the band above: the slopes really differ between methods.
    s = {m: slope(m, "native", (32, 64, 128)) for m in ("euler", "heun")} | {
        "rk4": slope("rk4", "native", (4, 8, 16))
    }
    assert s["euler"] < 1.2 < 1.8 < s["heun"] < 2.2 < 3.7 < s["rk4"]


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun"])
def test_native_matches_torchdiffeq_same_tableau(method: str):
    for steps in (1, 3, 10):
        native = ODESolver(method, steps, t1=T1)(field, Y0)
        ref = ODESolver(method, steps, backend="torchdiffeq", t1=T1)(field, Y0)
        torch.testing.assert_close(native.sample, ref.sample, rtol=1e-13, atol=1e-13)
        assert native.nfe == ref.nfe


def test_native_rk4_matches_torchdiffeq_rk4_to_fifth_order():
    # torchdiffeq's "rk4" is the 3/8 rule, ours the classic tableau: both 4th order, so they
    # differ by O(h^4) globally. Measured gaps: 4.4e-5, 3.0e-6, 1.9e-7 at 10, 20, 40 steps.
    gaps = []
    for steps in (10, 20, 40):
        a = ODESolver("rk4", steps, t1=T1)(field, Y0).sample
        b = ODESolver("rk4", steps, backend="torchdiffeq", t1=T1)(field, Y0).sample
        gaps.append((a - b).abs().max().item())
        midpoint = ODESolver("midpoint", steps, t1=T1)(field, Y0).sample
        assert gaps[-1] < 0.05 * (a - midpoint).abs().max().item()
    assert gaps[0] / gaps[1] > 12 and gaps[1] / gaps[2] > 12  # 2^4 = 16 in the limit
    assert gaps[2] < 1e-6


def test_adaptive_dopri5_is_accurate_and_counts_its_evaluations():
    calls = 0

    def counted(y: Tensor, t: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return field(y, t)

    out = ODESolver("dopri5", backend="torchdiffeq", t1=T1, rtol=1e-10, atol=1e-10)(counted, Y0)
    torch.testing.assert_close(out.sample, exact(T1), rtol=1e-8, atol=1e-8)
    assert out.nfe == calls > 6  # more than one step of a 6-stage method was needed
    loose = ODESolver("dopri5", backend="torchdiffeq", t1=T1, rtol=1e-3, atol=1e-3)(field, Y0)
    assert loose.nfe < out.nfe  # tolerance drives the work


@given(
    method=st.sampled_from(NATIVE_METHODS),
    steps=st.integers(1, 6),
    t0=st.floats(-1, 1),
    span=st.floats(0.1, 2) | st.floats(-2, -0.1),
)
def test_nfe_times_and_untouched_input(method: str, steps: int, t0: float, span: float):
    seen: list[float] = []

    def recorder(y: Tensor, t: Tensor) -> Tensor:
        seen.append(t.item())
        return -y + t

    x0 = torch.randn(2, 3, dtype=torch.float64)
    before = x0.clone()
    out = ODESolver(method, steps, t0=t0, t1=t0 + span)(recorder, x0)
    assert out.nfe == len(seen) == steps * {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method]
    assert torch.equal(x0, before)
    dt = span / steps
    first_stage = seen[:: out.nfe // steps]  # every step evaluates at its own start first
    assert first_stage == pytest.approx([t0 + i * dt for i in range(steps)], abs=1e-12)
    assert min(seen) >= min(t0, t0 + span) - 1e-12 and max(seen) <= max(t0, t0 + span) + 1e-12


def test_rk4_is_exact_on_a_quartic():
    # dy/dt = 4 t^3 -> y = t^4: RK4 reduces to Simpson's rule, exact for cubics, in one step.
    def quartic(y: Tensor, t: Tensor) -> Tensor:
        return torch.ones_like(y) * 4 * t**3

    y0 = torch.zeros(1, dtype=torch.float64)
    assert ODESolver("rk4", 1)(quartic, y0).sample.item() == pytest.approx(1.0, abs=1e-15)
    assert ODESolver("midpoint", 1)(quartic, y0).sample.item() != pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_static_output_buffer_network_is_safe(method: str):
    # A graphed network writes every result into one buffer; the solver must copy stages out.
    out_buffer = torch.empty_like(Y0)

    def static(y: Tensor, t: Tensor) -> Tensor:
        return torch.mul(y, torch.cos(t), out=out_buffer)

    a = ODESolver(method, 7, t1=T1)(static, Y0).sample
    b = ODESolver(method, 7, t1=T1)(field, Y0).sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Allocations(TorchDispatchMode):
    """Counts ops that create a new tensor (not in-place, no out=) outside the velocity call,
    and device-to-host reads (``.item()``, ``bool(t)``), which would break CUDA-graph capture."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.host_reads = 0
        self.inside_velocity = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in ("aten::_local_scalar_dense", "aten::is_nonzero"):
            self.host_reads += 1
        views = ("aten::expand", "aten::view", "aten::alias", "aten::detach")
        in_place = name.endswith("_") or "out" in kwargs or name in views
        if not self.inside_velocity and not in_place:
            self.count += 1
        return func(*args, **kwargs)


def allocations(solver_call, steps: int) -> _Allocations:
    mode = _Allocations()

    def velocity(y: Tensor, t: Tensor) -> Tensor:
        mode.inside_velocity = True
        try:
            return y * torch.cos(t)
        finally:
            mode.inside_velocity = False

    x0 = torch.randn(4, 5)
    with mode:
        solver_call(velocity, x0, steps)
    return mode


@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_native_loop_allocates_nothing_per_step_and_never_syncs(method: str):
    def native(v, x0, steps):
        return ODESolver(method, steps)(v, x0)

    assert allocations(native, 2).count == allocations(native, 20).count
    assert allocations(native, 20).host_reads == 0

    # Counter-case: the obvious out-of-place loop allocates every step, and a loop that reads
    # tau back to the host syncs every step; the probe sees both.
    def naive(v, x0, steps):
        x, tau = x0, torch.zeros(())
        for _ in range(steps):
            x = x + v(x, tau) / steps
            tau = tau + 1 / steps
            if tau.item() > 1:
                break
        return x

    assert allocations(naive, 20).count > allocations(naive, 2).count + 18
    assert allocations(naive, 20).host_reads == 20


def test_bfloat16_state_keeps_float32_time():
    dtypes = set()

    def v(y: Tensor, t: Tensor) -> Tensor:
        dtypes.add(t.dtype)
        return torch.ones_like(y)

    x0 = torch.zeros(3, dtype=torch.bfloat16)
    out = solve(v, x0, ODESolver("midpoint", 10))
    assert dtypes == {torch.float32}
    assert out.sample.dtype == torch.bfloat16
    torch.testing.assert_close(out.sample.float(), torch.ones(3), rtol=0, atol=1e-2)


def test_solve_defaults_to_ten_euler_steps():
    out = solve(lambda y, t: torch.ones_like(y), torch.zeros(2))
    assert out.nfe == 10
    torch.testing.assert_close(out.sample, torch.ones(2))


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"method": "dopri5"}, "method"),  # adaptive needs torchdiffeq
        ({"method": "nope", "backend": "torchdiffeq"}, "method"),
        ({"backend": "scipy"}, "backend"),
        ({"steps": 0}, "steps"),
        ({"t0": 1.0, "t1": 1.0}, "t0"),
        ({"rtol": 0.0}, "rtol"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict, field_name: str):
    # TypeError: under the test suite's runtime type checking, a value outside a Literal is
    # refused before __post_init__ runs; the message still names the field.
    with pytest.raises((ValueError, TypeError), match=field_name):
        ODESolver(**kwargs)


def test_integer_state_is_rejected():
    with pytest.raises((ValueError, TypeError), match="x0"):  # TypeError: runtime type check
        solve(lambda y, t: y, torch.zeros(3, dtype=torch.long))


@settings(max_examples=50)  # each example builds and runs a small network a few times
@given(b=st.integers(1, 3), c=st.integers(1, 4), steps=st.integers(1, 5))
def test_native_equals_torchdiffeq_on_a_network_field(b: int, c: int, steps: int):
    torch.manual_seed(b * 100 + c * 10 + steps)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def v(x: Tensor, t: Tensor) -> Tensor:
        return net(torch.cat([x, t.expand(*x.shape[:-1], 1).to(x.dtype)], dim=-1))

    x0 = torch.randn(b, c, 2)
    with torch.no_grad():
        for method in ("euler", "midpoint"):
            a = ODESolver(method, steps)(v, x0).sample
            r = ODESolver(method, steps, backend="torchdiffeq")(v, x0).sample
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_native_solve_is_captured_and_replayed_by_a_cuda_graph(method: str):
    device = torch.device("cuda")
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))
    net = net.to(device)

    def v(x: Tensor, t: Tensor) -> Tensor:
        return net(torch.cat([x, t.expand(*x.shape[:-1], 1)], dim=-1))

    solver = ODESolver(method, 10)
    static_x0 = torch.randn(8, 2, device=device)
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            solver(v, static_x0)  # warm-up outside the graph
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = solver(v, static_x0).sample
        fresh = torch.randn(8, 2, device=device)
        static_x0.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static_out, solver(v, fresh).sample)
