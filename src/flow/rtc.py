"""Real-time chunking (RTC): guide a flow sample towards the previous chunk's remaining actions.

Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow Policies" (arXiv
2506.07339). While a chunk executes, the next one is sampled with the not-yet-executed actions of
the current chunk as a soft prefix, inpainted by guidance on the one-step denoised estimate
(Pi-GDM). Shapes: ``b`` batch, ``c`` chunk steps, ``a`` action dims, ``p`` prefix steps.

Convention (DESIGN.md section 4, the same as the RTC paper's): x_tau = (1 - tau) eps + tau a,
noise at tau = 0, v ~ a - eps. Since a - eps = (a - x_tau) / (1 - tau), the denoised estimate is

    a_hat(x, tau) = x + (1 - tau) v(x, tau)                                          (paper eq. 3)

and the guided velocity is (paper eqs. 2 and 4)

    v_rtc = v + g(tau) J^T e,     e = W * (y - a_hat),     J = d a_hat / d x,
    g(tau) = min(beta, (1 - tau) / (tau r^2)),     r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2).

Derivation in this convention: the score is s = -E[eps | x] / (1 - tau) and
E[eps | x] = x - tau v, so v = (x + (1 - tau) s) / tau: a score step ds moves the velocity by
(1 - tau) / tau * ds. Pi-GDM models p(a | x_tau) as N(a_hat, r^2 I) with r^2 the posterior
variance of unit-variance Gaussian data, (1 - tau)^2 / (tau^2 + (1 - tau)^2); its guidance score
is J^T W (y - a_hat) / r^2. Hence g = (1 - tau) / (tau r^2) = (tau^2 + (1 - tau)^2) /
(tau (1 - tau)), which is >= 2 (at tau = 1/2) and infinite at both ends, so ``max_guidance``
(beta) clips it. The mirrored pi0 convention (t = 1 - tau) needs no separate formula here:
``FlowMatchingHead`` already presents paper-convention velocities to solvers.

Prefix weights W over the chunk (paper eq. 5), with delay d and horizon h:

    W_i = 1 (i < d),   W_i = f(c_i), c_i = (h - i) / (h - d + 1) (d <= i < h),   W_i = 0 (i >= h)

f(c) = c (linear) or c (e^c - 1) / (e - 1) (exponential). ``delay`` counts the actions that will
certainly execute from the old chunk while the new one is computed; ``horizon`` is where the
overlap with the old chunk's plan ends (the paper's H - s; LeRobot's ``execution_horizon``).

Example::

    config = RTCConfig(delay=3, horizon=8, schedule="exp", max_guidance=5.0)
    guided = guided_velocity(velocity, prefix, config.weights(chunk), config.max_guidance)
    chunk = ODESolver()(guided, noise).sample
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
Schedule = Literal["linear", "exp"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass(frozen=True)
class RTCConfig:
    """Settings of real-time chunking.

    delay: d, the inference delay in controller steps (0 <= d <= horizon); those leading actions
        get weight 1. horizon: h >= 1, steps of the new chunk guided by the old one; weight 0 from
        step h on. schedule: the decay between d and h, ``"linear"`` or ``"exp"``.
        max_guidance: beta >= 0, the clip on the guidance weight g(tau) (the paper uses 5; about
        10 suits 10 flow steps; 0 switches guidance off).
    """

    delay: int
    horizon: int
    schedule: Schedule = "exp"
    max_guidance: float = 5.0

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"RTCConfig.horizon: expected >= 1, got {self.horizon}")
        if not 0 <= self.delay <= self.horizon:
            raise ValueError(
                f"RTCConfig.delay: expected 0 <= delay <= horizon ({self.horizon}), "
                f"got {self.delay}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"RTCConfig.schedule: expected one of {SCHEDULES}, got {self.schedule!r}"
            )
        if not (math.isfinite(self.max_guidance) and self.max_guidance >= 0):
            raise ValueError(
                f"RTCConfig.max_guidance: expected a finite value >= 0, got {self.max_guidance}"
            )

    def weights(
        self,
        chunk: int,
        *,
        prefix: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Float[Tensor, " c"]:
        """Prefix weights W [c] (paper eq. 5) for a chunk of ``chunk`` steps.

        prefix: how many steps of the old chunk remain (default: at least ``horizon``). The
        overlap cannot outlast them, so the horizon is cut to ``prefix``; a prefix shorter than
        ``delay`` cannot cover the inference delay and is refused.
        """
        if chunk < self.horizon:
            raise ValueError(f"chunk: expected >= horizon ({self.horizon}), got {chunk}")
        horizon = self.horizon
        if prefix is not None:
            if prefix < self.delay:
                raise ValueError(
                    f"prefix: {prefix} remaining steps cannot cover delay {self.delay}"
                )
            horizon = min(horizon, prefix)
        i = torch.arange(chunk, dtype=torch.float64)
        c = ((horizon - i) / (horizon - self.delay + 1)).clamp(0, 1)
        decay = c if self.schedule == "linear" else c * torch.expm1(c) / math.expm1(1.0)
        w = torch.where(i < self.delay, torch.ones_like(c), torch.where(i < horizon, decay, 0))
        return w.to(device=device, dtype=dtype)


def guidance_weight(tau: Float[Tensor, "*t"], max_guidance: float) -> Float[Tensor, "*t"]:
    """The guidance weight g(tau) = min(beta, (1 - tau) / (tau r^2)) (paper eq. 2).

    Equal to min(beta, (tau^2 + (1 - tau)^2) / (tau (1 - tau))): >= 2, infinite at 0 and 1.
    """
    if max_guidance < 0:
        raise ValueError(f"max_guidance: expected >= 0, got {max_guidance}")
    tau = tau.to(torch.promote_types(tau.dtype, torch.float32))
    den = tau * (1 - tau)
    g = (tau**2 + (1 - tau) ** 2) / den.clamp_min(torch.finfo(tau.dtype).tiny)
    return torch.where(den > 0, g, torch.full_like(g, math.inf)).clamp_max(max_guidance)


def guided_velocity(
    velocity: VelocityFn,
    prefix: Float[Tensor, "#b c a"],
    weights: Float[Tensor, "..."],
    max_guidance: float,
) -> VelocityFn:
    """Wrap ``velocity(x, tau)`` into the RTC-guided one, v + g(tau) J^T (W * (y - a_hat)).

    prefix: y, the target chunk in the solver's units (steps past the overlap are ignored);
    weights: W, broadcastable to the state [b c a] (e.g. ``RTCConfig.weights`` as [c 1], or
    [c a] to leave padded action dims free). J^T e is one vector-Jacobian product through
    ``velocity`` with autograd enabled for x only (parameters get no ``.grad``), so each guided
    evaluation costs about one forward and one backward pass. The result carries no graph:
    guidance is not differentiated through. Works with every solver in ``flow.solvers``.
    """
    if max_guidance < 0:
        raise ValueError(f"max_guidance: expected >= 0, got {max_guidance}")
    if prefix.ndim != 3:
        raise ValueError(f"prefix: expected [b, c, a], got {list(prefix.shape)}")
    prefix = prefix.detach()
    weights = weights.detach()

    def guided(x: Tensor, tau: Tensor) -> Tensor:
        try:
            fits = torch.broadcast_shapes(prefix.shape, weights.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"prefix {list(prefix.shape)} / weights {list(weights.shape)}: "
                f"must broadcast to the state {list(x.shape)}"
            )
        t = tau.reshape(*tau.shape, *([1] * (x.ndim - tau.ndim)))  # [] or [b] -> broadcastable
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            v = velocity(x_in, tau)
            denoised = x_in + (1 - t) * v
            error = (weights * (prefix - denoised)).to(denoised.dtype).detach()
            (vjp,) = torch.autograd.grad(denoised, x_in, grad_outputs=error)
        g = guidance_weight(t, max_guidance)
        return (v.detach() + g * vjp).to(x.dtype)

    return guided


@dataclass(frozen=True)
class RTCGuide:
    """What a policy hands to ``FlowMatchingHead.sample(guide=...)``.

    prefix: the previous chunk's not-yet-executed actions [b p a] in the policy's raw units,
    aligned with the new chunk: ``prefix[:, i]`` is what the old chunk planned for the step the
    new chunk's ``i``-th action covers (the old chunk from the step where inference started).
    config: delay, horizon, schedule and guidance clip.

    Example::

        remaining = previous[:, executed:]                    # [b p a], p >= delay
        guide = RTCGuide(remaining, RTCConfig(delay=2, horizon=6))
        nxt = head.sample(b, guide=guide).sample              # nxt[:, :2] ~ remaining[:, :2]
    """

    prefix: Float[Tensor, "b p a"]
    config: RTCConfig

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, Tensor) or self.prefix.ndim != 3:
            shape = list(self.prefix.shape) if isinstance(self.prefix, Tensor) else self.prefix
            raise ValueError(f"RTCGuide.prefix: expected a tensor [b, p, a], got {shape!r}")
        if not self.prefix.is_floating_point():
            raise ValueError(f"RTCGuide.prefix: expected floating point, got {self.prefix.dtype}")
        if not isinstance(self.config, RTCConfig):
            raise ValueError(f"RTCGuide.config: expected an RTCConfig, got {self.config!r}")
