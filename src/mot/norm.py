"""RMSNorm as Gemma computes it: in float32, epsilon inside the root (DESIGN.md s1, eps 1e-6).

x-transformers' RMSNorm is not used: it normalizes with ``F.normalize`` (no epsilon inside the
root, so ``norm_eps`` could not be honoured) in the input dtype, which drifts from Gemma in bf16.
The gain here is stored as is (initialised to 1); Gemma checkpoints store ``gain - 1``.
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * gain, over the last axis; shapes [..., d] -> [..., d]."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Float[Tensor, "*b d"]) -> Float[Tensor, "*b d"]:
        # At least float32 (bf16 inputs), float64 stays float64.
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.to(x32.dtype)).to(x.dtype)
