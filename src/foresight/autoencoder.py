"""The convolutional encoder and decoder around VAR's multi-scale quantizer.

The architecture of VAR's tokenizer (arXiv 2404.02905, inherited from the VQGAN / latent-diffusion
"vq-f16" autoencoder): ResNet blocks with GroupNorm + SiLU, a 2x down/upsampling conv between
resolution levels, single-head self-attention at the lowest resolution level and in the middle.
With ``channel_mult = (1, 1, 2, 2, 4)`` the image is downsampled 16x.

Shapes: ``b`` batch, ``ch`` image channels, ``H W`` image size, ``z`` latent dim, ``hl wl`` latent
size (``H / 2**(len(channel_mult) - 1)``).

Our module names are our own; ``var_weights.py`` maps VAR's state-dict names onto them.
"""

import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # eps 1e-6 as in VAR; changing it would make released weights drift.
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), with a 1x1 shortcut when widths differ."""

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Float[Tensor, "b c1 y x"]) -> Float[Tensor, "b c2 y x"]:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class SpatialAttention(nn.Module):
    """Single-head self-attention over the positions of a feature map, with a residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Float[Tensor, "b c y x"]) -> Float[Tensor, "b c y x"]:
        qkv = rearrange(self.qkv(self.norm(x)), "b (three c) y x -> three b 1 (y x) c", three=3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = rearrange(out, "b 1 (y x) c -> b c y x", y=x.shape[2])
        return x + self.proj(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one row and column at the bottom/right (VQGAN's pad)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Float[Tensor, "b c y x"]) -> Float[Tensor, "b c y2 x2"]:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Float[Tensor, "b c y x"]) -> Float[Tensor, "b c y2 x2"]:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """One resolution level: ResBlocks, optional attention after each, optional resampling."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        depth: int,
        groups: int,
        attention: bool,
        resample: type[nn.Module] | None,
        dropout: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(c_in if i == 0 else c_out, c_out, groups, dropout) for i in range(depth)
        )
        self.attns = nn.ModuleList(
            SpatialAttention(c_out, groups) for _ in range(depth if attention else 0)
        )
        self.resample = resample(c_out) if resample is not None else None

    def forward(self, x: Float[Tensor, "b c1 y x"]) -> Float[Tensor, "b c2 y2 x2"]:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attns):
                x = self.attns[i](x)
        return self.resample(x) if self.resample is not None else x


class Middle(nn.Module):
    """ResBlock, attention (or identity), ResBlock at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool, dropout: float) -> None:
        super().__init__()
        self.block1 = ResBlock(channels, channels, groups, dropout)
        self.attn = SpatialAttention(channels, groups) if attention else nn.Identity()
        self.block2 = ResBlock(channels, channels, groups, dropout)

    def forward(self, x: Float[Tensor, "b c y x"]) -> Float[Tensor, "b c y x"]:
        return self.block2(self.attn(self.block1(x)))


class Encoder(nn.Module):
    """Image -> latent feature map (before VAR's ``quant_conv``).

    Level i has width ``channels * channel_mult[i]`` and ``depth`` ResBlocks; every level but the
    last halves the resolution; attention runs in the last level when ``attention``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        channel_mult: tuple[int, ...],
        depth: int,
        latent_dim: int,
        groups: int,
        attention: bool = True,
        mid_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in channel_mult]
        last = len(widths) - 1
        c_in = channels
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths):
            self.stages.append(
                Stage(
                    c_in,
                    width,
                    depth,
                    groups,
                    attention=attention and i == last,
                    resample=Downsample if i != last else None,
                    dropout=dropout,
                )
            )
            c_in = width
        self.mid = Middle(c_in, groups, mid_attention, dropout)
        self.norm_out = group_norm(c_in, groups)
        self.conv_out = nn.Conv2d(c_in, latent_dim, 3, padding=1)

    def forward(self, images: Float[Tensor, "b ch H W"]) -> Float[Tensor, "b z hl wl"]:
        h = self.conv_in(images)
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent feature map (after VAR's ``post_quant_conv``) -> image.

    Mirrors the encoder, coarsest level first: ``stages[0]`` has width
    ``channels * channel_mult[-1]``; each level runs ``depth + 1`` ResBlocks, and every level but
    the finest doubles the resolution at its end.
    """

    def __init__(
        self,
        out_channels: int,
        channels: int,
        channel_mult: tuple[int, ...],
        depth: int,
        latent_dim: int,
        groups: int,
        attention: bool = True,
        mid_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [channels * m for m in reversed(channel_mult)]
        c_in = widths[0]
        self.conv_in = nn.Conv2d(latent_dim, c_in, 3, padding=1)
        self.mid = Middle(c_in, groups, mid_attention, dropout)
        last = len(widths) - 1
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths):
            self.stages.append(
                Stage(
                    c_in,
                    width,
                    depth + 1,
                    groups,
                    attention=attention and i == 0,
                    resample=Upsample if i != last else None,
                    dropout=dropout,
                )
            )
            c_in = width
        self.norm_out = group_norm(c_in, groups)
        self.conv_out = nn.Conv2d(c_in, out_channels, 3, padding=1)

    def forward(self, latent: Float[Tensor, "b z hl wl"]) -> Float[Tensor, "b ch H W"]:
        h = self.mid(self.conv_in(latent))
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))
