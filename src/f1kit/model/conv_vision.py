"""`ConvEncoder`: a small convolutional camera encoder, optionally a conv-stem ViT.

images [b, v, 3, H, W] -> tokens [b, v * (S / 2^n)^2, out_width] for n = len(channels) stages.

Each stage is a stride-2 3x3 conv, GroupNorm and GELU, then a stride-1 3x3 conv residual block:
the kind of encoder behaviour-cloning policies use on small robot images (DrQ, Diffusion Policy's
ResNet trunk, PAD's ViT with convolutional stem). Its receptive fields overlap, so a 1-2 pixel
object (Meta-World reach's goal marker at 64 px) reaches a token intact, where a 16 px ViT patch
projects it linearly together with 255 other pixels. The final feature map's cells become tokens
(plus a learned position embedding); with ``depth > 0`` an x-transformers encoder mixes them (the
"early convolutions" ViT of Xiao et al. 2021), with ``depth = 0`` they go straight to the trunk,
whose joint attention mixes them anyway.

Example:
    >>> enc = ConvEncoder(ConvConfig(image_size=64, channels=(32, 64, 128, 128)), out_width=96)
    >>> enc(torch.zeros(2, 1, 3, 64, 64, dtype=torch.uint8)).shape   # 4 x 4 cells per camera
    torch.Size([2, 16, 96])
"""

import itertools
from dataclasses import dataclass, fields

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn
from x_transformers import Encoder

from f1kit.model.vision import CameraEncoder


@dataclass(frozen=True)
class ConvConfig:
    """Geometry of a `ConvEncoder`: one stride-2 stage per entry of ``channels``."""

    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 128)
    groups: int = 8  # GroupNorm groups; every channel count must divide by it
    depth: int = 0  # transformer layers over the cells (0: none)
    heads: int = 4
    mlp_width: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            low = 0 if f.name == "depth" else 1
            if not values or any(isinstance(x, bool) or not isinstance(x, int) for x in values):
                raise ValueError(f"{f.name}: expected int(s), got {value!r}")
            if any(x < low for x in values):
                raise ValueError(f"{f.name}: expected value(s) >= {low}, got {value!r}")
        down = 2 ** len(self.channels)
        if self.image_size % down:
            raise ValueError(
                f"image_size: expected a multiple of 2 ** len(channels) = {down}, "
                f"got {self.image_size}"
            )
        bad = [c for c in self.channels if c % self.groups]
        if bad:
            raise ValueError(f"groups: {self.groups} must divide every channel count, not {bad}")
        if self.depth and self.channels[-1] % self.heads:
            raise ValueError(
                f"heads: expected a divisor of the last channel count {self.channels[-1]}, "
                f"got {self.heads}"
            )

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** len(self.channels)

    @property
    def tokens_per_image(self) -> int:
        return self.grid**2


class _Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1),
            nn.GroupNorm(groups, cout),
            nn.GELU(),
        )
        self.residual = nn.Sequential(
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.GELU()
        )

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        return x + self.residual(x)


class ConvEncoder(CameraEncoder):
    """Strided conv stages -> cells as tokens (+ positions) [-> transformer] -> Linear."""

    def __init__(self, config: ConvConfig, out_width: int) -> None:
        super().__init__()
        self._set_geometry(config.image_size, config.tokens_per_image, out_width)
        self.config = config
        widths = (3, *config.channels)
        self.stages = nn.Sequential(
            *(_Stage(a, b, config.groups) for a, b in itertools.pairwise(widths))
        )
        width = config.channels[-1]
        self.pos_embed = nn.Parameter(torch.empty(1, config.tokens_per_image, width))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.encoder = (
            Encoder(
                dim=width,
                depth=config.depth,
                heads=config.heads,
                attn_dim_head=width // config.heads,
                ff_mult=(config.mlp_width + 0.5) / width,
                attn_flash=True,
            )
            if config.depth
            else nn.Identity()
        )
        self.proj = nn.Linear(width, out_width)

    def encode_pixels(self, pixels: Float[Tensor, "bv 3 S S"]) -> Float[Tensor, "bv p d"]:
        cells = rearrange(self.stages(pixels), "bv d h w -> bv (h w) d")
        return self.proj(self.encoder(cells + self.pos_embed))
