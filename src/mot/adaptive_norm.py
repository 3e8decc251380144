"""Adaptive RMSNorm (pi0.5's "adaRMS"): scale, shift and a residual gate from a conditioning vector.

An expert with adaptive norms (``ExpertSpec(norm="adaptive")``) takes its norms' modulation from a
per-sample vector ``cond`` [b, c] (pi0.5: the flow-time embedding of its action expert, c = the
expert's width) instead of a learned gain:

    scale, shift, gate = split3(dense(cond))                    dense: Linear(c -> 3 d), with bias
    y = x / sqrt(mean(x^2) + eps) * (1 + scale) + shift         in float32, cast back to x's dtype

and the layer adds its attention and MLP branches through the gate, ``x + gate * branch``
(`mot.layer`); the final norm's gate is unused. Initialisation: dense weight 0, bias 0 except the
gate's third, 1: a fresh adaptive expert computes exactly what a fresh plain expert (gain 1, no
gate) does, and learns to depend on ``cond`` from there.
"""

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class AdaptiveRMSNorm(nn.Module):
    """RMSNorm modulated by ``cond``: [..., n, d] with cond [..., c] -> (y [..., n, d], gate
    [..., 1, d]); scale / shift / gate broadcast over the tokens of each sample."""

    def __init__(self, width: int, cond_width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.width = width
        self.dense = nn.Linear(cond_width, 3 * width)
        with torch.no_grad():
            self.dense.weight.zero_()
            self.dense.bias.zero_()
            self.dense.bias[2 * width :] = 1.0

    def forward(
        self, x: Float[Tensor, "b n d"], cond: Float[Tensor, "b c"]
    ) -> tuple[Float[Tensor, "b n d"], Float[Tensor, "b 1 d"]]:
        if cond.ndim != 2 or cond.shape[0] != x.shape[0] or cond.shape[1] != self.dense.in_features:
            raise ValueError(
                f"cond: expected [{x.shape[0]}, {self.dense.in_features}] (one conditioning "
                f"vector per sample), got {list(cond.shape)}"
            )
        modulation = rearrange(self.dense(cond.to(self.dense.weight.dtype)), "b m -> b 1 m")
        scale, shift, gate = modulation.chunk(3, dim=-1)
        # At least float32 (bf16 inputs), float64 stays float64, as in `mot.RMSNorm`.
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        y = normed * (1 + scale.to(x32.dtype)) + shift.to(x32.dtype)
        return y.to(x.dtype), gate.to(x.dtype)
