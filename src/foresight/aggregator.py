"""`TemporalAggregator`: F1's history tokens from m past frames (DESIGN.md s3, F1 specifics).

Each history frame is turned into its teacher-forcing token sequence (n tokens of the tokenizer's
latent width z). The m sequences are collapsed across time, token by token, with one Conv1d whose
kernel and stride are both m (so each token's m-step history becomes one vector and tokens never
mix), then projected to the expert width d, plus a learned position embedding per token:

    y_i = W_proj( sum_j C_j x_{j,i} + c ) + p_i       x: [b, t=m, n, z] -> y: [b, n, d]

F1 uses m = 4 frames (offsets -9, -6, -3, 0 steps) and the 680-token VAR sequences.

Example:
    >>> agg = TemporalAggregator(frames=4, tokens=29, latent_dim=32, width=64)
    >>> agg(torch.randn(2, 4, 29, 32)).shape
    torch.Size([2, 29, 64])
"""

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class TemporalAggregator(nn.Module):
    """Per-token temporal Conv1d (kernel = stride = ``frames``), projection, position embedding."""

    def __init__(self, frames: int, tokens: int, latent_dim: int, width: int) -> None:
        super().__init__()
        for name, value in (
            ("frames", frames),
            ("tokens", tokens),
            ("latent_dim", latent_dim),
            ("width", width),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.frames, self.tokens = frames, tokens
        self.temporal = nn.Conv1d(latent_dim, latent_dim, kernel_size=frames, stride=frames)
        self.proj = nn.Linear(latent_dim, width)
        self.position = nn.Parameter(torch.randn(tokens, width) * 0.02)

    def forward(self, history: Float[Tensor, "b t n z"]) -> Float[Tensor, "b n d"]:
        """History sequences [b, m, n, z] (oldest frame first) -> one sequence [b, n, d]."""
        b, t, n, z = history.shape
        if t != self.frames:
            raise ValueError(f"history frames: expected {self.frames}, got {t}")
        if n != self.tokens:
            raise ValueError(f"history tokens: expected {self.tokens} per frame, got {n}")
        if z != self.temporal.in_channels:
            raise ValueError(f"history latent_dim: expected {self.temporal.in_channels}, got {z}")
        x = rearrange(history, "b t n z -> (b n) z t").to(self.temporal.weight.dtype)
        x = rearrange(self.temporal(x), "(b n) z 1 -> b n z", b=b)
        return self.proj(x) + self.position
