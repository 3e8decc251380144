"""ODE solvers for sampling flow-matching models: native fixed-step ones and torchdiffeq's.

Sampling integrates dx/dtau = v(x, tau) from noise at tau = 0 to data at tau = 1 (DESIGN.md
section 4; pi0 and F1 use 10 Euler steps). One call signature serves every method:

    ODESolver(method="midpoint", steps=10)(velocity, x0) -> ODESolution(sample, nfe)

``velocity(x, tau)`` receives the state and a 0-dim tensor tau (float32, or float64 for float64
states) and returns dx/dtau with
the state's shape. Native methods (``euler``, ``midpoint``, ``heun``, ``rk4``) allocate their
buffers once per call and then update them in place; tau is a device tensor filled with Python
scalars, so a solve never syncs with the host and a whole solve can be captured in a CUDA
graph. Being in place, native solves run without autograd (use ``backend="torchdiffeq"`` to
differentiate through a solve). The stage values are copied out of whatever ``velocity``
returns, so a network that writes into one static output buffer (a graphed network) is safe.
``backend="torchdiffeq"`` runs ``torchdiffeq.odeint`` with any of its methods, including
adaptive ``dopri5``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor
from torchdiffeq import odeint
from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS

VelocityFn = Callable[[Tensor, Tensor], Tensor]
NativeMethod = Literal["euler", "midpoint", "heun", "rk4"]
NATIVE_METHODS: tuple[str, ...] = get_args(NativeMethod)
# "heun" names the same second-order method in both backends (torchdiffeq calls it "heun2").
TORCHDIFFEQ_METHODS: tuple[str, ...] = ("heun", *sorted(_TORCHDIFFEQ_SOLVERS))
ADAPTIVE_METHODS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "fehlberg2")
# Velocity evaluations per step of each native method.
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@dataclass(frozen=True)
class ODESolution:
    """The state at the end time and the number of velocity evaluations it took."""

    sample: Tensor
    nfe: int


@dataclass(frozen=True)
class ODESolver:
    """Integrate a velocity field from ``t0`` to ``t1``.

    method: a native method (``euler``, ``midpoint``, ``heun``, ``rk4``) or, with
        ``backend="torchdiffeq"``, any ``torchdiffeq.odeint`` method.
    steps: fixed steps of size (t1 - t0) / steps; ignored by adaptive torchdiffeq methods,
        which use ``rtol``/``atol``.
    """

    method: str = "euler"
    steps: int = 10
    backend: Literal["native", "torchdiffeq"] = "native"
    t0: float = 0.0
    t1: float = 1.0
    rtol: float = 1e-5
    atol: float = 1e-5

    def __post_init__(self) -> None:
        if self.backend not in ("native", "torchdiffeq"):
            raise ValueError(
                f"ODESolver.backend: expected 'native' or 'torchdiffeq', got {self.backend!r}"
            )
        allowed = NATIVE_METHODS if self.backend == "native" else TORCHDIFFEQ_METHODS
        if self.method not in allowed:
            raise ValueError(
                f"ODESolver.method: backend {self.backend!r} supports {allowed}, "
                f"got {self.method!r}"
            )
        if self.steps < 1:
            raise ValueError(f"ODESolver.steps: expected >= 1, got {self.steps}")
        if self.t0 == self.t1:
            raise ValueError(f"ODESolver: t0 and t1 must differ, both are {self.t0}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"ODESolver: rtol and atol must be > 0, got {self.rtol}, {self.atol}")

    @property
    def adaptive(self) -> bool:
        return self.backend == "torchdiffeq" and self.method in ADAPTIVE_METHODS

    def __call__(self, velocity: VelocityFn, x0: Float[Tensor, "..."]) -> ODESolution:
        """Solve from ``x0`` at ``t0``; ``x0`` itself is left untouched."""
        if not x0.is_floating_point():
            raise ValueError(f"x0: expected a floating-point tensor, got {x0.dtype}")
        if self.backend == "native":
            return _native(self.method, self.steps, self.t0, self.t1, velocity, x0)
        return _torchdiffeq(self, velocity, x0)


def solve(
    velocity: VelocityFn, x0: Float[Tensor, "..."], solver: ODESolver | None = None
) -> ODESolution:
    """Functional form of ``ODESolver.__call__`` (default: 10 native Euler steps, as pi0/F1)."""
    return (solver or ODESolver())(velocity, x0)


@torch.no_grad()
def _native(
    method: str, steps: int, t0: float, t1: float, velocity: VelocityFn, x0: Tensor
) -> ODESolution:
    dt = (t1 - t0) / steps
    x = x0.clone()
    acc = torch.empty_like(x0)  # weighted sum of stages
    probe = torch.empty_like(x0)  # state at an intermediate stage
    # Time is at least float32 even for bf16 states (bf16 cannot even hold 0.3 to 1e-3).
    tau = torch.empty((), dtype=_time_dtype(x0), device=x0.device)
    stage = torch.empty_like(tau)

    for i in range(steps):
        t = t0 + i * dt  # computed in Python double: no drift, no host sync
        tau.fill_(t)
        if method == "euler":
            x.add_(velocity(x, tau), alpha=dt)
            continue
        acc.copy_(velocity(x, tau))
        if method == "midpoint":
            torch.add(x, acc, alpha=dt / 2, out=probe)
            stage.fill_(t + dt / 2)
            x.add_(velocity(probe, stage), alpha=dt)
        elif method == "heun":
            torch.add(x, acc, alpha=dt, out=probe)
            stage.fill_(t + dt)
            acc.add_(velocity(probe, stage))
            x.add_(acc, alpha=dt / 2)
        else:  # classic RK4
            torch.add(x, acc, alpha=dt / 2, out=probe)
            stage.fill_(t + dt / 2)
            k = velocity(probe, stage)
            acc.add_(k, alpha=2)
            torch.add(x, k, alpha=dt / 2, out=probe)
            k = velocity(probe, stage)
            acc.add_(k, alpha=2)
            torch.add(x, k, alpha=dt, out=probe)
            stage.fill_(t + dt)
            acc.add_(velocity(probe, stage))
            x.add_(acc, alpha=dt / 6)
    return ODESolution(sample=x, nfe=steps * STAGES[method])


def _torchdiffeq(solver: ODESolver, velocity: VelocityFn, x0: Tensor) -> ODESolution:
    nfe = 0

    def func(t: Tensor, x: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(x, t)

    if solver.adaptive:
        grid = torch.tensor([solver.t0, solver.t1], dtype=_time_dtype(x0), device=x0.device)
    else:  # exactly `steps` fixed steps: odeint steps along the grid it is given
        grid = torch.linspace(
            solver.t0, solver.t1, solver.steps + 1, dtype=_time_dtype(x0), device=x0.device
        )
    method = "heun2" if solver.method == "heun" else solver.method  # same Butcher tableau
    path = odeint(func, x0, grid, method=method, rtol=solver.rtol, atol=solver.atol)
    return ODESolution(sample=path[-1], nfe=nfe)


def _time_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)
