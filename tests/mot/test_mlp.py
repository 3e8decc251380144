"""Per-expert MLP kinds against their formulas; no biases (Gemma layout)."""

import pytest
import torch
import torch.nn.functional as F

from mot import MLP


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("kind", ["geglu", "swiglu", "gelu"])
def test_mlp_kinds_match_formulas(kind: str) -> None:
    torch.manual_seed(0)
    mlp = MLP(6, 10, kind)
    x = torch.randn(2, 3, 6)
    up = x @ mlp.up.weight.T
    if kind == "geglu":
        hidden = _gelu_tanh(x @ mlp.gate.weight.T) * up
    elif kind == "swiglu":
        gate = x @ mlp.gate.weight.T
        hidden = gate * torch.sigmoid(gate) * up
    else:
        hidden = _gelu_tanh(up)
    torch.testing.assert_close(mlp(x), hidden @ mlp.down.weight.T)


def test_mlp_parameter_counts_have_no_biases() -> None:
    assert sum(p.numel() for p in MLP(6, 10, "geglu").parameters()) == 3 * 6 * 10
    assert sum(p.numel() for p in MLP(6, 10, "gelu").parameters()) == 2 * 6 * 10


def test_geglu_uses_the_tanh_gelu() -> None:
    """Exact-erf GELU differs measurably at this input: the approximation is pinned."""
    torch.manual_seed(1)
    mlp = MLP(4, 4, "gelu")
    x = torch.randn(64, 4) * 3
    exact = F.gelu(x @ mlp.up.weight.T) @ mlp.down.weight.T
    assert not torch.allclose(mlp(x), exact, atol=1e-6)
