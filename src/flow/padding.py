"""Zero-padding of state/action features to a shared max dim, with the mask of real features.

pi0 and F1 train one model on several robots by padding every state and action vector to a common
size (32 in pi0, DESIGN.md section 4); the padded features are masked out of the loss and dropped
from sampled chunks.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor


def pad_to_dim(
    x: Float[Tensor, "*batch a"], dim: int
) -> tuple[Float[Tensor, "*batch d"], Bool[Tensor, " d"]]:
    """Zero-pad the last axis to ``dim`` (pi0's multi-embodiment max action/state dim, 32).

    Returns the padded tensor and the mask of real (True) vs padded (False) features.
    """
    a = x.shape[-1]
    if a > dim:
        raise ValueError(f"last axis: {a} features do not fit the padded dim {dim}")
    mask = torch.arange(dim, device=x.device) < a
    return F.pad(x, (0, dim - a)), mask


def unpad(x: Float[Tensor, "*batch d"], dim: int) -> Float[Tensor, "*batch a"]:
    """Keep the first ``dim`` features (drop the zero padding ``pad_to_dim`` added)."""
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"dim: expected 1..{x.shape[-1]}, got {dim}")
    return x[..., :dim]
