"""Tiny MoT configs, randomised weights and UGA inputs shared by the mot tests."""

import torch
from hypothesis import strategies as st

from attention import ACTION, GENERATION, UNDERSTANDING, Layout, uga_layout
from mot import ExpertSpec, MoTConfig, MoTStack


def tiny_config(depth: int = 2, heads: int = 4, kv_heads: int = 2, head_dim: int = 8) -> MoTConfig:
    """Three experts of different widths and MLP kinds, so per-expert routing mistakes show."""
    return MoTConfig(
        experts=(
            ExpertSpec(UNDERSTANDING, 24, 48, "geglu"),
            ExpertSpec(GENERATION, 16, 40, "swiglu"),
            ExpertSpec(ACTION, 12, 20, "gelu"),
        ),
        depth=depth,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
    )


def random_stack(config: MoTConfig, seed: int = 0) -> MoTStack:
    """A stack whose every parameter (norm gains included) is random, in float32."""
    torch.manual_seed(seed)
    stack = MoTStack(config)
    with torch.no_grad():
        for name, p in stack.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return stack


def expert_inputs(
    layout: Layout, config: MoTConfig, batch: int, seed: int = 0
) -> list[torch.Tensor]:
    """One random [b, n_e, d_e] tensor per expert of ``config`` (empty for experts not in it)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = layout.expert_lengths()
    return [
        torch.randn(batch, lengths.get(s.name, 0), s.width, generator=gen) for s in config.experts
    ]


def rows_of(layout: Layout, segment: str, expert: str) -> slice:
    """Rows of ``segment`` inside its expert's input tensor."""
    seg, own = layout.slice(segment), layout.expert_slice(expert)
    return slice(seg.start - own.start, seg.stop - own.start)


@st.composite
def small_uga_layouts(draw: st.DrawFn) -> Layout:
    """UGA layouts of at most ~25 tokens, every optional part sometimes absent."""
    scales = draw(st.sampled_from([(), (1,), (1, 2), (1, 2, 3)]))
    return uga_layout(
        prefix=draw(st.integers(1, 4)),
        history=draw(st.integers(0, 2)),
        scales=scales,
        state=draw(st.integers(0, 1)),
        actions=draw(st.integers(0, 3)),
        history_in_prefix=draw(st.booleans()),
    )


@st.composite
def valid_masks(draw: st.DrawFn, layout: Layout, batch: int) -> torch.Tensor:
    """Padding masks with the first token of every sample valid."""
    bits = draw(st.lists(st.booleans(), min_size=batch * layout.n, max_size=batch * layout.n))
    valid = torch.tensor(bits, dtype=torch.bool).reshape(batch, layout.n)
    valid[:, 0] = True
    return valid
