"""Probability-path conventions: the paper's (noise at tau = 0) and pi0/openpi's mirror image.

F1 (arXiv 2509.06951, section 3.3) and the pi0 paper write the linear path as

    x_tau = (1 - tau) * eps + tau * a,      u = dx/dtau = a - eps,      noise at tau = 0,

and integrate from tau = 0 to tau = 1 (DESIGN.md section 4). The official F1 code and openpi use
the mirrored time t = 1 - tau:

    x_t = t * eps + (1 - t) * a,            v = dx/dt = eps - a,        noise at t = 1,

and integrate from t = 1 down to t = 0. The same point of the path therefore has
``t = 1 - tau`` and the velocity flips sign, ``v = -u``. Everything in this package speaks the
paper convention; a network trained in the mirrored one is wrapped once with
:func:`adapt_velocity` (weights are unchanged, only its time input and its output are mapped).
"""

from collections.abc import Callable
from enum import Enum

from jaxtyping import Float
from torch import Tensor

# A velocity field in some convention: (state, time) -> d state / d time.
VelocityFn = Callable[[Tensor, Tensor], Tensor]


class Convention(Enum):
    """Which end of the path holds the noise; names the time variable in use."""

    PAPER = "paper"  # tau: noise at 0, data at 1, target a - eps
    PI0 = "pi0"  # t = 1 - tau: noise at 1, data at 0, target eps - a

    @property
    def noise_time(self) -> float:
        """Time at which the path is pure noise (where sampling starts)."""
        return 0.0 if self is Convention.PAPER else 1.0

    @property
    def data_time(self) -> float:
        """Time at which the path is pure data (where sampling ends)."""
        return 1.0 if self is Convention.PAPER else 0.0

    def interpolate(
        self,
        noise: Float[Tensor, "b ..."],
        data: Float[Tensor, "b ..."],
        time: Float[Tensor, " b"],
    ) -> Float[Tensor, "b ..."]:
        """The point of the linear path at ``time`` (one time per batch row)."""
        w = time.reshape(time.shape + (1,) * (data.ndim - 1)).to(data.dtype)
        if self is Convention.PAPER:
            return (1 - w) * noise + w * data
        return w * noise + (1 - w) * data

    def target(
        self, noise: Float[Tensor, "b ..."], data: Float[Tensor, "b ..."]
    ) -> Float[Tensor, "b ..."]:
        """The regression target: the path's velocity d x / d time, constant along the path."""
        return data - noise if self is Convention.PAPER else noise - data


def convert_time(
    time: Float[Tensor, "*shape"], src: Convention, dst: Convention
) -> Float[Tensor, "*shape"]:
    """Map a time value between conventions (identity when they agree, ``1 - time`` otherwise)."""
    return time if src is dst else 1 - time


def convert_velocity(
    velocity: Float[Tensor, "*shape"], src: Convention, dst: Convention
) -> Float[Tensor, "*shape"]:
    """Map a velocity between conventions: the time axis flips, so the velocity changes sign."""
    return velocity if src is dst else -velocity


def adapt_velocity(fn: VelocityFn, src: Convention, dst: Convention) -> VelocityFn:
    """Wrap a velocity field written in ``src`` so it can be integrated in ``dst``.

    Example: ``adapt_velocity(openpi_net, Convention.PI0, Convention.PAPER)`` is a field in tau
    that our solvers integrate from 0 to 1; it calls the network at ``t = 1 - tau``.
    """
    if src is dst:
        return fn

    def adapted(x: Tensor, time: Tensor) -> Tensor:
        return convert_velocity(fn(x, convert_time(time, dst, src)), src, dst)

    return adapted
