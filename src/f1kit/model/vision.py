"""Vision encoders: camera images -> the Understanding expert's image prefix tokens (DESIGN.md s1).

Every encoder maps ``images [b, v, 3, H, W]`` (uint8 pixels, or floats already in [-1, 1]) to
``tokens [b, v * p, d]``: the ``p = tokens_per_image`` patch tokens of camera 0, then camera 1, ...
projected to the Understanding width ``d = out_width``. All cameras share the encoder and go
through it in one batched call; cameras never attend to each other (the joint attention of the
MoT stack does that later).

* `ViTEncoder`: a ViT on x-transformers' Encoder (random init, trains from scratch on small data).
* `ConvEncoder` (``conv_vision.py``): strided conv stages, cells as tokens (small robot images).
* `SiglipEncoder`: transformers' SigLIP vision tower (F1 / PaliGemma use So400m/14), loadable from a
  local directory; needs the optional ``transformers`` (``pip install 'f1kit[hf]'``).

Example:
    >>> enc = build_vision_encoder("vit", out_width=256, image_size=64, patch_size=8)
    >>> enc(torch.zeros(2, 3, 3, 64, 64, dtype=torch.uint8)).shape   # 3 cameras x 64 patches
    torch.Size([2, 192, 256])
"""

import abc
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, UInt8
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from x_transformers import Encoder

log = logging.getLogger(__name__)

HF_HINT = "pip install 'f1kit[hf]'"
PROJECTION_FILE = "f1kit_projection.safetensors"


def _check_images(images: Tensor) -> None:
    """User-facing validation of a camera batch (runs also when no type checker is installed)."""
    if images.ndim != 5:
        raise ValueError(
            f"images: expected rank 5 [b, v, 3, H, W], got rank {images.ndim} "
            f"with shape {tuple(images.shape)}"
        )
    if images.shape[2] != 3:
        raise ValueError(
            f"images: expected 3 colour channels at dim 2 of [b, v, 3, H, W], "
            f"got {images.shape[2]} (shape {tuple(images.shape)}; channels-last needs a permute)"
        )
    if images.shape[1] < 1:
        raise ValueError("images: expected at least one camera (v >= 1), got v = 0")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ValueError(
            f"images: expected uint8 pixels in [0, 255] or floats in [-1, 1], got {images.dtype}"
        )


def preprocess_images(
    images: UInt8[Tensor, "b v 3 H W"] | Float[Tensor, "b v 3 H W"],
    size: int,
    dtype: torch.dtype,
) -> Float[Tensor, "bv 3 S S"]:
    """Cameras flattened into the batch, in [-1, 1], resized to ``size`` x ``size``, in ``dtype``.

    uint8 maps by x / 127.5 - 1 (SigLIP's normalisation: mean 0.5, std 0.5 on [0, 1] pixels);
    floats are taken as already in [-1, 1] (not checked: a data-dependent check would sync the
    device). Other sizes are resized bilinearly with antialiasing (which matters when shrinking),
    computed in float32 since half-precision antialiased resizing is not available everywhere.
    Non-square frames are stretched to the square, as SigLIP's processor does.
    """
    _check_images(images)
    x = rearrange(images, "b v c H W -> (b v) c H W")
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 127.5 - 1.0
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return x.to(dtype)


class CameraEncoder(nn.Module, abc.ABC):
    """Shared contract of the vision encoders: subclasses implement ``encode_pixels``."""

    image_size: int
    tokens_per_image: int
    out_width: int

    def _set_geometry(self, image_size: int, tokens_per_image: int, out_width: int) -> None:
        """What every encoder states: input side, tokens per image, output width (checked)."""
        if isinstance(out_width, bool) or not isinstance(out_width, int) or out_width < 1:
            raise ValueError(f"out_width: expected a positive int, got {out_width!r}")
        self.image_size = image_size
        self.tokens_per_image = tokens_per_image
        self.out_width = out_width

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def preprocess(
        self, images: UInt8[Tensor, "b v 3 H W"] | Float[Tensor, "b v 3 H W"]
    ) -> Float[Tensor, "bv 3 S S"]:
        """Pixels as the backbone takes them; see `preprocess_images`."""
        return preprocess_images(images, self.image_size, self._dtype())

    @abc.abstractmethod
    def encode_pixels(self, pixels: Float[Tensor, "bv 3 S S"]) -> Float[Tensor, "bv p d"]:
        """Backbone tokens of preprocessed pixels, projected to ``out_width``."""

    def forward(
        self, images: UInt8[Tensor, "b v 3 H W"] | Float[Tensor, "b v 3 H W"]
    ) -> Float[Tensor, "b n d"]:
        """Image tokens ``[b, v * tokens_per_image, out_width]``, cameras in order."""
        pixels = self.preprocess(images)
        b, v = images.shape[:2]
        tokens = self.encode_pixels(pixels)
        return rearrange(tokens, "(b v) p d -> b (v p) d", b=b, v=v)


@dataclass(frozen=True)
class ViTConfig:
    """Geometry of a `ViTEncoder`. The defaults are a light 64 px model (64 tokens per image)."""

    image_size: int = 64
    patch_size: int = 8
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_width: int = 512

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name}: expected a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size: expected a multiple of patch_size {self.patch_size}, "
                f"got {self.image_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width: expected a multiple of heads {self.heads}, got {self.width}")

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def siglip_so400m(cls) -> "ViTConfig":
        """SigLIP So400m/14 at 224 px (F1 / PaliGemma's vision tower): 256 tokens per image."""
        return cls(image_size=224, patch_size=14, width=1152, depth=27, heads=16, mlp_width=4304)


class ViTEncoder(CameraEncoder):
    """A ViT: SigLIP-style patch embedding, x-transformers' ``Encoder``, a Linear to ``out_width``.

    images [b, v, 3, H, W] -> tokens [b, v * (image_size / patch_size)^2, out_width].

    Patches are embedded by a stride-``patch_size`` conv (a linear map of each patch, as in
    SigLIP) plus a learned position embedding, then a pre-norm encoder with a final norm and a
    GELU MLP of exactly ``mlp_width`` units. x-transformers' own ``ViTransformerWrapper`` is not
    used: it LayerNorms each flattened patch before embedding it, which erases every patch's
    mean and contrast (a black and a grey frame give identical tokens), information a policy
    needs. Differences from SigLIP that remain: x-transformers' LayerNorms have a gain but no
    bias, and its Q/K/V/output projections have no bias (0.05 % fewer parameters at So400m size).
    """

    def __init__(self, config: ViTConfig, out_width: int) -> None:
        super().__init__()
        self._set_geometry(config.image_size, config.tokens_per_image, out_width)
        self.config = config
        self.patch_embed = nn.Conv2d(
            3, config.width, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.pos_embed = nn.Parameter(torch.empty(1, config.tokens_per_image, config.width))
        nn.init.normal_(self.pos_embed, std=0.02)
        # x-transformers sizes the MLP as int(width * ff_mult); the half unit keeps float
        # rounding from truncating e.g. 1152 * (4304 / 1152) to 4303.
        self.encoder = Encoder(
            dim=config.width,
            depth=config.depth,
            heads=config.heads,
            attn_dim_head=config.width // config.heads,
            ff_mult=(config.mlp_width + 0.5) / config.width,
            attn_flash=True,  # SDPA kernels rather than an explicit softmax(QK^T)
        )
        self.proj = nn.Linear(config.width, out_width)
        hidden = self.encoder.layers[1][1].ff[0][0].out_features
        assert hidden == config.mlp_width, (hidden, config.mlp_width)

    def encode_pixels(self, pixels: Float[Tensor, "bv 3 S S"]) -> Float[Tensor, "bv p d"]:
        patches = rearrange(self.patch_embed(pixels), "bv d h w -> bv (h w) d")
        return self.proj(self.encoder(patches + self.pos_embed))


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(f"SigLIP / HF models need transformers: {HF_HINT}") from error
    return transformers


def _siglip_fields() -> set[str]:
    """Keyword names SiglipVisionConfig really takes (it would silently store unknown ones)."""
    params = inspect.signature(_transformers().SiglipVisionConfig.__init__).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD}


class SiglipEncoder(CameraEncoder):
    """transformers' ``SiglipVisionModel`` (its last_hidden_state) and a Linear to ``out_width``.

    images [b, v, 3, H, W] -> tokens [b, v * (image_size / patch_size)^2, out_width], same
    preprocessing as `ViTEncoder` (SigLIP normalises pixels to [-1, 1] too). The attention-pooling
    head is dropped (``vision_use_head=False``): PaliGemma and F1 use the patch tokens.

    Example:
        >>> enc = SiglipEncoder.from_pretrained("/models/siglip-so400m-patch14-224", 2048)
    """

    def __init__(self, backbone: nn.Module, out_width: int) -> None:
        super().__init__()
        config = backbone.config
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size: expected a multiple of patch_size {config.patch_size}, "
                f"got {config.image_size}"
            )
        self._set_geometry(
            config.image_size, (config.image_size // config.patch_size) ** 2, out_width
        )
        self.backbone = backbone
        self.proj = nn.Linear(config.hidden_size, out_width)

    @classmethod
    def from_config(cls, out_width: int, **config: Any) -> "SiglipEncoder":
        """Random weights; ``config`` holds ``SiglipVisionConfig`` fields (e.g. hidden_size)."""
        transformers = _transformers()
        unknown = sorted(set(config) - _siglip_fields())
        if unknown:
            raise ValueError(f"siglip config: unknown fields {unknown}")
        config.setdefault("vision_use_head", False)
        backbone = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**config))
        return cls(backbone, out_width)

    @classmethod
    def from_pretrained(cls, path: str | Path, out_width: int) -> "SiglipEncoder":
        """SigLIP weights from a LOCAL directory (never the hub).

        The projection is restored when the directory holds one written by `save_pretrained`
        (its width must equal ``out_width``); otherwise it starts from a fresh random init.
        """
        transformers = _transformers()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"siglip path: no local model at {path} (expected {path / 'config.json'}); "
                "weights are only read from local directories"
            )
        backbone = transformers.SiglipVisionModel.from_pretrained(
            path, local_files_only=True, vision_use_head=False
        )
        encoder = cls(backbone, out_width)
        stored = path / PROJECTION_FILE
        if stored.is_file():
            state = load_file(stored)
            width = state["weight"].shape[0]
            if width != out_width:
                raise ValueError(
                    f"out_width: {stored} holds a projection to {width}, asked for {out_width}"
                )
            encoder.proj.load_state_dict(state)
        else:
            log.info("%s: no %s, projection to %d starts random", path, PROJECTION_FILE, out_width)
        return encoder.to(backbone.dtype)

    def init_buffers(self, device: torch.device | str) -> None:
        """Rebuild the backbone's non-persistent buffers after a meta-device build (SigLIP's
        ``position_ids``: 0..num_positions-1; `f1kit.model.loading`)."""
        for module in self.backbone.modules():
            ids = module._buffers.get("position_ids")
            if ids is not None and ids.is_meta:
                positions = torch.arange(module.num_positions, device=device)
                module.position_ids = positions.expand(1, -1)

    def save_pretrained(self, path: str | Path) -> None:
        """The backbone in transformers' layout plus the projection, loadable by from_pretrained."""
        path = Path(path)
        self.backbone.save_pretrained(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.proj.state_dict().items()}
        save_file(state, path / PROJECTION_FILE)

    def encode_pixels(self, pixels: Float[Tensor, "bv 3 S S"]) -> Float[Tensor, "bv p d"]:
        return self.proj(self.backbone(pixel_values=pixels).last_hidden_state)


def _build_vit(out_width: int, **args: Any) -> ViTEncoder:
    known = {f.name for f in fields(ViTConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"vit: unknown args {unknown}; expected ViTConfig fields {sorted(known)}")
    return ViTEncoder(ViTConfig(**args), out_width)


def _build_siglip(out_width: int, path: str | Path | None = None, **config: Any) -> SiglipEncoder:
    if path is not None:
        if config:
            raise ValueError(
                f"siglip: give either path= (pretrained) or config fields, not both; "
                f"got path and {sorted(config)}"
            )
        return SiglipEncoder.from_pretrained(path, out_width)
    return SiglipEncoder.from_config(out_width, **config)


def _build_conv(out_width: int, **args: Any) -> CameraEncoder:
    from f1kit.model.conv_vision import ConvConfig, ConvEncoder  # it subclasses CameraEncoder

    known = {f.name for f in fields(ConvConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(
            f"conv: unknown args {unknown}; expected ConvConfig fields {sorted(known)}"
        )
    if isinstance(args.get("channels"), list):  # YAML gives lists
        args["channels"] = tuple(args["channels"])
    return ConvEncoder(ConvConfig(**args), out_width)


VISION_ENCODERS: dict[str, Callable[..., CameraEncoder]] = {
    "vit": _build_vit,
    "siglip": _build_siglip,
    "conv": _build_conv,
}


def build_vision_encoder(name: str, out_width: int, **args: Any) -> CameraEncoder:
    """The registered encoder ``name`` with output width ``out_width``.

    ``"vit"``: args are `ViTConfig` fields. ``"conv"``: `ConvConfig` fields (a small CNN, or a
    conv-stem ViT with ``depth > 0``; f1kit.model.conv_vision). ``"siglip"``: ``path=`` a local
    pretrained directory, or ``SiglipVisionConfig`` fields for random weights.
    """
    if name not in VISION_ENCODERS:
        raise ValueError(
            f"vision encoder: unknown name {name!r}; registered: {sorted(VISION_ENCODERS)}"
        )
    return VISION_ENCODERS[name](out_width, **args)
