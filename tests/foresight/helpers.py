"""Shared test material: tiny tokenizer configs and a moving-shapes image generator."""

import math

import torch
from torch import Tensor

from foresight import MultiScaleVQVAE, VQVAEConfig


def tiny_config(**overrides) -> VQVAEConfig:
    """16 px, 4x downsampling to 4 x 4, 8 base channels: builds and runs in milliseconds."""
    base = dict(
        image_size=16,
        channels=8,
        channel_mult=(1, 1, 2),
        depth=1,
        latent_dim=8,
        vocab_size=32,
        scales=(1, 2, 3, 4),
        phi_count=2,
        norm_groups=4,
    )
    return VQVAEConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> MultiScaleVQVAE:
    torch.manual_seed(seed)
    return MultiScaleVQVAE(tiny_config(**overrides)).eval()


def moving_shapes(sequences: int, frames: int, size: int, generator: torch.Generator) -> Tensor:
    """Clips of a coloured square and a coloured disc moving in straight lines over a grey
    background; returns [sequences * frames, 3, size, size] in [-1, 1]."""
    g = generator
    coords = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    out = []
    for _ in range(sequences):
        background = torch.rand(3, 1, 1, generator=g) * 0.4 - 0.2
        colours = torch.rand(2, 3, 1, 1, generator=g) * 2 - 1
        start = torch.rand(2, 2, generator=g) * 0.6 + 0.2
        velocity = (torch.rand(2, 2, generator=g) - 0.5) * 0.1
        radius = torch.rand(2, generator=g) * 0.1 + 0.12
        for t in range(frames):
            img = background.expand(3, size, size).clone()
            cy, cx = (start[0] + t * velocity[0]).tolist()
            square = ((yy - cy).abs() < radius[0]) & ((xx - cx).abs() < radius[0])
            img = torch.where(square, colours[0], img)
            cy, cx = (start[1] + t * velocity[1]).tolist()
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius[1] ** 2
            img = torch.where(disc, colours[1], img)
            out.append(img)
    return torch.stack(out).clamp(-1, 1)


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    return 10 * math.log10(4.0 / float(torch.mean((a - b) ** 2)))
