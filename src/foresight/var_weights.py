"""Load (and export) VAR's released tokenizer weights, e.g. ``vae_ch160v4096z32.pth``.

VAR's state dict (FoundationVision/VAR, ``models/vqvae.py``) names modules after the
latent-diffusion autoencoder; ours are named for what they are. The renames, VAR -> ours:

    encoder.down.{i}.block.{j}.nin_shortcut    encoder.stages.{i}.blocks.{j}.shortcut
    encoder.down.{i}.attn.{j}.proj_out         encoder.stages.{i}.attns.{j}.proj
    encoder.down.{i}.downsample.conv           encoder.stages.{i}.resample.conv
    {en,de}coder.mid.block_1 / attn_1 / block_2   {en,de}coder.mid.block1 / attn / block2
    decoder.up.{i}.*  (i = resolution level, finest 0)   decoder.stages.{L-1-i}.* (run order)
    decoder.up.{i}.upsample.conv               decoder.stages.{L-1-i}.resample.conv
    quantize.embedding.weight                  quantizer.codebook.weight
    quantize.ema_vocab_hit_SV                  quantizer.ema_hits
    quantize.quant_resi.qresi.*                quantizer.phi.convs.0.*     (fully shared phi)
    quantize.quant_resi.qresi_ls.{i}.*         quantizer.phi.convs.{i}.*   (partially shared)
    quantize.quant_resi.{i}.*                  quantizer.phi.convs.{i}.*   (one per scale)

Everything else (conv_in, norm_out, conv_out, quant_conv, post_quant_conv, norm1/conv1/...)
keeps its name. The architecture is read off the tensor shapes; the scale schedule and GroupNorm
groups are not stored in the file and default to VAR's.
"""

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from foresight.vqvae import MultiScaleVQVAE, VQVAEConfig

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


class VARWeightsError(ValueError):
    """A VAR state dict that does not fit the tokenizer it is loaded into."""


Rule = tuple[str, str | Callable[[re.Match], str]]


def _var_to_ours_rules(levels: int) -> list[Rule]:
    return [
        (r"^encoder\.down\.(\d+)\.", r"encoder.stages.\1."),
        (r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.stages.{levels - 1 - int(m[1])}."),
        (r"\.block\.(\d+)\.", r".blocks.\1."),
        (r"\.attn\.(\d+)\.", r".attns.\1."),
        (r"\.(downsample|upsample)\.", ".resample."),
        (r"\.nin_shortcut\.", ".shortcut."),
        (r"\.proj_out\.", ".proj."),
        (r"\.mid\.block_1\.", ".mid.block1."),
        (r"\.mid\.block_2\.", ".mid.block2."),
        (r"\.mid\.attn_1\.", ".mid.attn."),
        (r"^quantize\.embedding\.", "quantizer.codebook."),
        (r"^quantize\.ema_vocab_hit_SV$", "quantizer.ema_hits"),
        (r"^quantize\.quant_resi\.qresi\.", "quantizer.phi.convs.0."),
        (r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.", r"quantizer.phi.convs.\1."),
        (r"^quantize\.quant_resi\.(\d+)\.", r"quantizer.phi.convs.\1."),
    ]


def _ours_to_var_rules(levels: int, phi_count: int) -> list[Rule]:
    phi = "qresi." if phi_count == 1 else r"qresi_ls.\1."
    return [
        (r"^encoder\.stages\.(\d+)\.", r"encoder.down.\1."),
        (r"^decoder\.stages\.(\d+)\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}."),
        (r"\.blocks\.(\d+)\.", r".block.\1."),
        (r"\.attns\.(\d+)\.", r".attn.\1."),
        (r"^(encoder\.down\.\d+)\.resample\.", r"\1.downsample."),
        (r"^(decoder\.up\.\d+)\.resample\.", r"\1.upsample."),
        (r"\.shortcut\.", ".nin_shortcut."),
        (r"\.proj\.", ".proj_out."),
        (r"\.mid\.block1\.", ".mid.block_1."),
        (r"\.mid\.block2\.", ".mid.block_2."),
        (r"\.mid\.attn\.", ".mid.attn_1."),
        (r"^quantizer\.codebook\.", "quantize.embedding."),
        (r"^quantizer\.ema_hits$", "quantize.ema_vocab_hit_SV"),
        (r"^quantizer\.phi\.convs\.(\d+)\.", "quantize.quant_resi." + phi),
    ]


def _rename(key: str, rules: list[Rule]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _levels(state: Mapping[str, Tensor]) -> int:
    found = {int(m[1]) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))}
    if not found:
        raise VARWeightsError("VAR state dict: no 'encoder.down.{i}.*' keys; is this VAR's VQVAE?")
    return max(found) + 1


def var_config(
    state: Mapping[str, Tensor],
    scales: tuple[int, ...] | None = None,
    norm_groups: int = 32,
) -> VQVAEConfig:
    """The tokenizer config implied by a VAR state dict's shapes.

    scales: the schedule (not stored in the file); VAR's default (1, 2, ..., 16) when omitted.
    The number of rows of ``quantize.ema_vocab_hit_SV`` is not checked against it: VAR's own
    loader also replaces that buffer when the scale count differs.
    """
    required = ("encoder.conv_in.weight", "quant_conv.weight", "quantize.embedding.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise VARWeightsError(f"VAR state dict: missing {missing}")
    levels = _levels(state)
    conv_in = state["encoder.conv_in.weight"]
    channels = conv_in.shape[0]
    mult = []
    for i in range(levels):
        width = state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]
        if width % channels:
            raise VARWeightsError(
                f"encoder.down.{i}: width {width} is not a multiple of {channels}"
            )
        mult.append(width // channels)
    depth = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
    phi_keys = {
        m[1] or "0"
        for k in state
        if (m := re.match(r"quantize\.quant_resi\.(?:qresi\.|(?:qresi_ls\.)?(\d+)\.)", k))
    }
    if not phi_keys:
        raise VARWeightsError("VAR state dict: no phi convs ('quantize.quant_resi.*')")
    scales = tuple(scales) if scales is not None else VAR_SCALES
    return VQVAEConfig(
        image_size=scales[-1] * 2 ** (levels - 1),
        in_channels=conv_in.shape[1],
        channels=channels,
        channel_mult=tuple(mult),
        depth=depth,
        latent_dim=state["quant_conv.weight"].shape[0],
        vocab_size=state["quantize.embedding.weight"].shape[0],
        scales=scales,
        phi_count=len(phi_keys),
        quant_conv_kernel=state["quant_conv.weight"].shape[-1],
        attention=f"encoder.down.{levels - 1}.attn.0.qkv.weight" in state,
        mid_attention="encoder.mid.attn_1.qkv.weight" in state,
        norm_groups=norm_groups,
    )


def var_to_ours(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a VAR tokenizer state dict to our parameter names (no shape checks)."""
    rules = _var_to_ours_rules(_levels(state))
    return {_rename(k, rules): v for k, v in state.items()}


def ours_to_var(model: MultiScaleVQVAE) -> dict[str, Tensor]:
    """Our tokenizer's weights under VAR's names (loadable by VAR's ``VQVAE``)."""
    rules = _ours_to_var_rules(len(model.config.channel_mult), model.config.phi_count)
    return {_rename(k, rules): v.detach().clone() for k, v in model.state_dict().items()}


def load_var_state_dict(model: MultiScaleVQVAE, state: Mapping[str, Tensor]) -> None:
    """Copy a VAR state dict into ``model``; every tensor must find its place and shape.

    Raises VARWeightsError naming unexpected, missing or mis-shaped parameters.
    """
    ours = var_to_ours(state)
    target = model.state_dict()
    hits = ours.get("quantizer.ema_hits")
    if hits is not None and hits.shape != target["quantizer.ema_hits"].shape:
        # Usage statistics of another schedule: meaningless here (VAR drops them the same way).
        ours["quantizer.ema_hits"] = target["quantizer.ema_hits"]
    ours.setdefault("quantizer.ema_hits", target["quantizer.ema_hits"])
    unexpected = sorted(set(ours) - set(target))
    missing = sorted(set(target) - set(ours))
    if unexpected or missing:
        raise VARWeightsError(
            f"VAR state dict does not match the tokenizer: unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}, missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}"
        )
    wrong = [
        f"{k}: {list(v.shape)} != {list(target[k].shape)}"
        for k, v in ours.items()
        if v.shape != target[k].shape
    ]
    if wrong:
        raise VARWeightsError(f"VAR state dict shapes do not match: {wrong[:8]}")
    model.load_state_dict(ours)


def read_var_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A VAR tokenizer file as a state dict: ``.safetensors``, or VAR's ``.pth`` (read with
    ``torch.load(weights_only=True)``, which refuses anything but tensors)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise VARWeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def from_var(
    source: str | Path | Mapping[str, Tensor],
    scales: tuple[int, ...] | None = None,
    norm_groups: int = 32,
) -> MultiScaleVQVAE:
    """A ``MultiScaleVQVAE`` built from VAR's released weights (file path or state dict).

    Example:
        >>> vae = from_var("vae_ch160v4096z32.pth")   # VAR's 256 px tokenizer
        >>> tokens = vae.encode(images)               # 10 scales, 680 tokens per image
    """
    state = read_var_checkpoint(source) if isinstance(source, str | Path) else source
    model = MultiScaleVQVAE(var_config(state, scales=scales, norm_groups=norm_groups))
    load_var_state_dict(model, state)
    return model.eval()
