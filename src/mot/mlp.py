"""The per-expert MLP: GeGLU (Gemma), SwiGLU (Llama) or a plain GELU MLP, without biases.

x-transformers' FeedForward is not used: its gated branch always carries an input bias and fuses
[up, gate] in one projection, so Gemma weights could not be loaded one to one and the paper-size
parameter count would be off by 2 * mlp_width per layer and expert. GELU is the tanh approximation,
as in Gemma's GeGLU.
"""

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from mot.config import MLPKind


class MLP(nn.Module):
    """gated: down(act(gate(x)) * up(x)); plain: down(act(up(x))). Shapes [..., d] -> [..., d]."""

    def __init__(self, width: int, mlp_width: int, kind: MLPKind = "geglu") -> None:
        super().__init__()
        self.kind = kind
        self.gated = kind in ("geglu", "swiglu")
        if self.gated:
            self.gate = nn.Linear(width, mlp_width, bias=False)
        self.up = nn.Linear(width, mlp_width, bias=False)
        self.down = nn.Linear(mlp_width, width, bias=False)

    def _act(self, x: Tensor) -> Tensor:
        return F.silu(x) if self.kind == "swiglu" else F.gelu(x, approximate="tanh")

    def forward(self, x: Float[Tensor, "*b d"]) -> Float[Tensor, "*b d"]:
        if self.gated:
            return self.down(self._act(self.gate(x)) * self.up(x))
        return self.down(self._act(self.up(x)))
