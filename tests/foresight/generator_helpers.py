"""Test material for the next-scale generator: a tokenizer for any schedule, tiny generators."""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from foresight.default_network import DefaultTransformer, TransformerConfig
from foresight.generator import NextScaleConfig, NextScaleGenerator
from foresight.quantizer import MultiScaleQuantizer


class QuantizerTokenizer:
    """A `ScaleTokenizer` made of VAR's multi-scale quantizer alone (latent space = "image").

    It accepts any schedule, so property tests can vary the scales; decoding returns f_hat.
    """

    def __init__(self, scales: tuple[int, ...], vocab_size: int, latent_dim: int, seed: int):
        torch.manual_seed(seed)
        self.quantizer = MultiScaleQuantizer(
            vocab_size, latent_dim, scales, phi_count=min(2, len(scales))
        ).eval()
        # Spread the codes (the default init is tiny) so that inputs differ visibly per token.
        torch.nn.init.normal_(self.quantizer.codebook.weight)

    @property
    def scales(self) -> tuple[int, ...]:
        return self.quantizer.scales

    @torch.no_grad()
    def teacher_forcing_inputs(self, indices: list[Int[Tensor, "b _"]]) -> Float[Tensor, "b n z"]:
        return self.quantizer.teacher_forcing_inputs(indices)

    @torch.no_grad()
    def decode(self, indices: list[Int[Tensor, "b _"]]) -> Float[Tensor, "b z H W"]:
        return self.quantizer.running_reconstruction(indices)[-1]

    def random_pyramid(self, batch: int, generator: torch.Generator) -> list[Tensor]:
        v = self.quantizer.vocab_size
        return [torch.randint(0, v, (batch, s * s), generator=generator) for s in self.scales]


def tiny_generator(
    scales: tuple[int, ...],
    *,
    vocab_size: int = 16,
    latent_dim: int = 4,
    width: int = 16,
    depth: int = 2,
    heads: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    **config,
) -> NextScaleGenerator:
    """A randomly initialised generator around the default transformer (float64: exact tests)."""
    torch.manual_seed(seed)
    cfg = NextScaleConfig(
        scales=scales, vocab_size=vocab_size, latent_dim=latent_dim, width=width, **config
    )
    net = DefaultTransformer(TransformerConfig(width=width, depth=depth, heads=heads))
    gen = NextScaleGenerator(cfg, net).to(dtype).eval()
    # Larger weights than the GPT-2 init: sharper, more input-dependent logits for the tests.
    with torch.no_grad():
        for p in gen.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.3)
    return gen
