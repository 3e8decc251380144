"""`MultiScaleVQVAE`: VAR's image tokenizer (encoder, multi-scale quantizer, decoder).

images [b, ch, H, W] in [-1, 1] --encoder--> quant_conv --> f [b, z, L, L]
    --quantizer--> token pyramid (K tensors [b, s_k^2]) / f_hat --post_quant_conv--> decoder.

The default configuration is VAR's released ``vae_ch160v4096z32`` (DESIGN.md s3): 256 px,
channels 160, multipliers (1, 1, 2, 2, 4), latent dim 32, 4096 codes, scales
(1, 2, 3, 4, 5, 6, 8, 10, 13, 16) -> 680 tokens. ``VQVAEConfig.small_64()`` is a light 64 px
variant with scales (1, 2, 3, 4) -> 30 tokens (F1's generated scales).

Example:
    >>> vae = MultiScaleVQVAE(VQVAEConfig.small_64())
    >>> tokens = vae.encode(torch.rand(2, 3, 64, 64) * 2 - 1)   # [2,1], [2,4], [2,9], [2,16]
    >>> vae.decode(tokens[:2]).shape                            # first two scales only
    torch.Size([2, 3, 64, 64])
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from foresight.autoencoder import Decoder, Encoder
from foresight.quantizer import MultiScaleQuantizer, QuantizerOutput, check_scales


@dataclass(frozen=True)
class VQVAEConfig:
    """Hyper-parameters of the tokenizer (VAR's names in brackets).

    phi_count: number of phi convs [share_quant_resi]: 1 shared, len(scales) per scale, else
        partially shared (4 in VAR). VAR's 0 ("one per scale") is written len(scales) here.
    norm_groups: GroupNorm groups (32 in VAR); every width channels * m must divide by it.
    """

    image_size: int = 256
    in_channels: int = 3
    channels: int = 160  # [ch]
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    depth: int = 2  # [num_res_blocks]
    latent_dim: int = 32  # [z_channels, Cvae]
    vocab_size: int = 4096  # [vocab_size]
    scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # [v_patch_nums]
    beta: float = 0.25
    phi_count: int = 4
    phi_ratio: float = 0.5  # [quant_resi]
    quant_conv_kernel: int = 3  # [quant_conv_ks]
    attention: bool = True  # [using_sa]
    mid_attention: bool = True  # [using_mid_sa]
    norm_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "scales", tuple(self.scales))
        positive = ("image_size", "in_channels", "channels", "depth", "latent_dim", "norm_groups")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)!r}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult: expected positive ints, got {self.channel_mult}")
        check_scales(self.scales)
        down = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % down:
            raise ValueError(
                f"image_size: expected a multiple of the downsampling factor {down} "
                f"(2 ** (len(channel_mult) - 1)), got {self.image_size}"
            )
        if self.scales[-1] != self.image_size // down:
            raise ValueError(
                f"scales: the last scale must equal the latent size image_size / {down} = "
                f"{self.image_size // down}, got {self.scales}"
            )
        bad = [self.channels * m for m in self.channel_mult if self.channels * m % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups: {self.norm_groups} must divide every width, not {bad}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size: expected >= 2, got {self.vocab_size}")
        if not 1 <= self.phi_count <= len(self.scales):
            raise ValueError(
                f"phi_count: expected 1..{len(self.scales)} (scale count), got {self.phi_count}"
            )
        if not 0.0 < self.phi_ratio <= 1.0:
            raise ValueError(f"phi_ratio: expected 0 < phi_ratio <= 1, got {self.phi_ratio}")
        if self.quant_conv_kernel < 1 or self.quant_conv_kernel % 2 == 0:
            raise ValueError(
                f"quant_conv_kernel: expected an odd size, got {self.quant_conv_kernel}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected 0 <= dropout < 1, got {self.dropout}")

    @property
    def latent_size(self) -> int:
        return self.scales[-1]

    @property
    def num_tokens(self) -> int:
        return sum(s * s for s in self.scales)

    @classmethod
    def var_256(cls) -> "VQVAEConfig":
        """VAR's released vae_ch160v4096z32 (the defaults)."""
        return cls()

    @classmethod
    def small_64(cls) -> "VQVAEConfig":
        """A light 64 px tokenizer: 16x downsampling to 4 x 4, scales (1, 2, 3, 4), 1024 codes."""
        return cls(image_size=64, channels=32, vocab_size=1024, scales=(1, 2, 3, 4), phi_count=4)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "VQVAEConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"tokenizer config: unknown fields {unknown}")
        for name in ("channel_mult", "scales"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass
class VQVAEOutput:
    """A training forward pass: reconstruction [b, ch, H, W], VQ loss, tokens and code hits."""

    reconstruction: Tensor
    vq_loss: Tensor
    indices: list[Tensor]
    hits: Tensor


class MultiScaleVQVAE(nn.Module):
    """VAR's multi-scale residual VQ-VAE; see the module docstring."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VQVAEConfig()
        net = dict(
            channels=config.channels,
            channel_mult=config.channel_mult,
            depth=config.depth,
            latent_dim=config.latent_dim,
            groups=config.norm_groups,
            attention=config.attention,
            mid_attention=config.mid_attention,
            dropout=config.dropout,
        )
        self.encoder = Encoder(in_channels=config.in_channels, **net)
        self.decoder = Decoder(out_channels=config.in_channels, **net)
        ks = config.quant_conv_kernel
        self.quant_conv = nn.Conv2d(config.latent_dim, config.latent_dim, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(config.latent_dim, config.latent_dim, ks, padding=ks // 2)
        self.quantizer = MultiScaleQuantizer(
            vocab_size=config.vocab_size,
            dim=config.latent_dim,
            scales=config.scales,
            beta=config.beta,
            phi_count=config.phi_count,
            phi_ratio=config.phi_ratio,
        )

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def _check_images(self, images: Tensor) -> None:
        c, size = self.config.in_channels, self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, size, size):
            raise ValueError(f"images: expected [b, {c}, {size}, {size}], got {list(images.shape)}")

    # ---- continuous path -------------------------------------------------------------------

    def encode_latent(self, images: Float[Tensor, "b ch H W"]) -> Float[Tensor, "b z hl wl"]:
        """f = quant_conv(encoder(images)), the latent the quantizer sees."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    def decode_latent(
        self, f_hat: Float[Tensor, "b z hl wl"], clamp: bool = True
    ) -> Float[Tensor, "b ch H W"]:
        """decoder(post_quant_conv(f_hat)), clamped to [-1, 1] unless ``clamp=False``.

        f_hat is cast to the decoder's dtype (the quantizer may run in float32 under a bfloat16
        autoencoder).
        """
        out = self.decoder(self.post_quant_conv(f_hat.to(self.post_quant_conv.weight.dtype)))
        return out.clamp(-1, 1) if clamp else out

    # ---- token API -------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, images: Float[Tensor, "b ch H W"]) -> list[Int[Tensor, "b _"]]:
        """Images in [-1, 1] -> token pyramid: K index tensors [b, s_k^2] (row-major)."""
        return self.quantizer.tokenize(self.encode_latent(images))

    def running_reconstruction(
        self, indices: list[Int[Tensor, "b _"]], *, check: bool = True
    ) -> list[Float[Tensor, "b z hl wl"]]:
        """f_hat after each scale of a (possibly partial) pyramid, in latent space.

        check: validate the code range (one device sync); False = the caller validated the codes.
        """
        return self.quantizer.running_reconstruction(indices, check=check)

    def decode(
        self, indices: list[Int[Tensor, "b _"]], *, check: bool = True
    ) -> Float[Tensor, "b ch H W"]:
        """A token pyramid of the first m <= K scales -> image in [-1, 1].

        check: validate the code range (one device sync); False = the caller validated the codes.
        """
        return self.decode_latent(self.quantizer.running_reconstruction(indices, check=check)[-1])

    def decode_each_scale(
        self, indices: list[Int[Tensor, "b _"]], *, check: bool = True
    ) -> list[Float[Tensor, "b ch H W"]]:
        """The image decoded after each of the given scales (coarse to fine)."""
        f_hats = self.quantizer.running_reconstruction(indices, check=check)
        return [self.decode_latent(f) for f in f_hats]

    def teacher_forcing_inputs(
        self, indices: list[Int[Tensor, "b _"]], *, check: bool = True
    ) -> Float[Tensor, "b n z"]:
        """The next-scale generator's training inputs (see ``MultiScaleQuantizer``), in the
        quantizer's dtype. check=False: the caller validated the codes (skips a device sync)."""
        return self.quantizer.teacher_forcing_inputs(indices, check=check)

    def next_scale_inputs(
        self,
        f_hat: Float[Tensor, "b z hl wl"] | None,
        indices: Int[Tensor, "b n"],
        k: int,
        *,
        check: bool = True,
    ) -> tuple[Float[Tensor, "b z hl wl"], Float[Tensor, "b m z"]]:
        """One generation step of ``teacher_forcing_inputs``: (f_hat after scale k, inputs of
        scale k+1 [b, s_{k+1}^2, z]) from the f_hat after scale k-1 (None for k = 0) and scale
        k's codes [b, s_k^2]; bit for bit the matching slice (see ``MultiScaleQuantizer``)."""
        return self.quantizer.next_scale_inputs(f_hat, indices, k, check=check)

    # ---- training --------------------------------------------------------------------------

    def forward(self, images: Float[Tensor, "b ch H W"]) -> VQVAEOutput:
        """Training pass: reconstruction (not clamped), VQ loss, tokens, code hits per scale."""
        q: QuantizerOutput = self.quantizer(self.encode_latent(images))
        return VQVAEOutput(self.decode_latent(q.f_hat, clamp=False), q.loss, q.indices, q.hits)

    # ---- weights ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Weights as safetensors, the config as JSON in the file's metadata."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"f1kit.foresight.config": self.config.to_json()})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "MultiScaleVQVAE":
        """A tokenizer saved with ``save`` (config from the file's metadata)."""
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if "f1kit.foresight.config" not in meta:
            raise ValueError(f"{path}: no f1kit tokenizer config in the safetensors metadata")
        model = cls(VQVAEConfig.from_json(meta["f1kit.foresight.config"]))
        model.load_state_dict(load_file(str(path), device=str(device)))
        return model.to(device)
