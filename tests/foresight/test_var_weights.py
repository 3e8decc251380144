"""Loading VAR's tokenizer state dict: names, shapes, and outputs against a functional VAR model.

The state dicts here are built from VAR's module layout (FoundationVision/VAR models/basic_vae.py,
models/quant.py: latent-diffusion Encoder/Decoder names, ``quantize.embedding``,
``quantize.quant_resi.*``) at reduced size, and ``var_forward`` below runs VAR's network directly
from those names, so a wrong rename (e.g. the decoder's reversed level order) shows up as an
output mismatch, not just a missing key.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight import (
    MultiScaleVQVAE,
    VARWeightsError,
    from_var,
    load_var_state_dict,
    ours_to_var,
    read_var_checkpoint,
    var_config,
)
from tests.foresight.helpers import tiny_config

CH, MULT, DEPTH, Z, VOCAB, GROUPS = 8, (1, 1, 2), 2, 4, 16, 4


def var_state_dict(phi="qresi_ls", phi_count=2, scales=(1, 2, 3, 4), seed=0):
    """Random weights under VAR's names for ch=8, ch_mult=(1,1,2), 2 res blocks, z=4, V=16."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, c_in, c_out, k):
        sd[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) / (c_in * k * k) ** 0.5
        sd[f"{name}.bias"] = torch.randn(c_out, generator=g) * 0.1

    def norm(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)

    def resblock(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        conv(f"{name}.qkv", c, 3 * c, 1)
        conv(f"{name}.proj_out", c, c, 1)

    last = len(MULT) - 1
    conv("encoder.conv_in", 3, CH, 3)
    c_in = CH
    for i, m in enumerate(MULT):
        for j in range(DEPTH):
            resblock(f"encoder.down.{i}.block.{j}", c_in, CH * m)
            c_in = CH * m
            if i == last:
                attn(f"encoder.down.{i}.attn.{j}", c_in)
        if i != last:
            conv(f"encoder.down.{i}.downsample.conv", c_in, c_in, 3)
    for part in ("encoder", "decoder"):
        c = CH * MULT[-1]
        resblock(f"{part}.mid.block_1", c, c)
        attn(f"{part}.mid.attn_1", c)
        resblock(f"{part}.mid.block_2", c, c)
    norm("encoder.norm_out", c_in)
    conv("encoder.conv_out", c_in, Z, 3)
    c_in = CH * MULT[-1]
    conv("decoder.conv_in", Z, c_in, 3)
    for i in reversed(range(len(MULT))):
        for j in range(DEPTH + 1):
            resblock(f"decoder.up.{i}.block.{j}", c_in, CH * MULT[i])
            c_in = CH * MULT[i]
            if i == last:
                attn(f"decoder.up.{i}.attn.{j}", c_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c_in, c_in, 3)
    norm("decoder.norm_out", c_in)
    conv("decoder.conv_out", c_in, 3, 3)
    conv("quant_conv", Z, Z, 3)
    conv("post_quant_conv", Z, Z, 3)
    sd["quantize.embedding.weight"] = torch.randn(VOCAB, Z, generator=g)
    sd["quantize.ema_vocab_hit_SV"] = torch.rand(len(scales), VOCAB, generator=g)
    for i in range(phi_count):
        prefix = {"qresi": "qresi", "qresi_ls": f"qresi_ls.{i}", "per_scale": str(i)}[phi]
        conv(f"quantize.quant_resi.{prefix}", Z, Z, 3)
    return sd


# ---- VAR's network, run straight from the state dict --------------------------------------


def _gn(sd, name, x):
    return F.group_norm(x, GROUPS, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _conv(sd, name, x, stride=1, padding=None):
    w = sd[f"{name}.weight"]
    pad = w.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, w, sd[f"{name}.bias"], stride=stride, padding=pad)


def _res(sd, name, x):
    h = _conv(sd, f"{name}.conv1", F.silu(_gn(sd, f"{name}.norm1", x)))
    h = _conv(sd, f"{name}.conv2", F.silu(_gn(sd, f"{name}.norm2", h)))
    skip = _conv(sd, f"{name}.nin_shortcut", x) if f"{name}.nin_shortcut.weight" in sd else x
    return skip + h


def _attn(sd, name, x):
    b, c, hh, ww = x.shape
    q, k, v = _conv(sd, f"{name}.qkv", _gn(sd, f"{name}.norm", x)).reshape(b, 3, c, -1).unbind(1)
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c**-0.5, dim=2)  # [b, query, key]
    h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
    return x + _conv(sd, f"{name}.proj_out", h)


def var_encode(sd, x):
    h = _conv(sd, "encoder.conv_in", x)
    for i in range(len(MULT)):
        for j in range(DEPTH):
            h = _res(sd, f"encoder.down.{i}.block.{j}", h)
            if f"encoder.down.{i}.attn.{j}.qkv.weight" in sd:
                h = _attn(sd, f"encoder.down.{i}.attn.{j}", h)
        if i != len(MULT) - 1:
            h = _conv(sd, f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), 2, 0)
    h = _res(
        sd,
        "encoder.mid.block_2",
        _attn(sd, "encoder.mid.attn_1", _res(sd, "encoder.mid.block_1", h)),
    )
    h = _conv(sd, "encoder.conv_out", F.silu(_gn(sd, "encoder.norm_out", h)))
    return _conv(sd, "quant_conv", h)


def var_decode(sd, f_hat):
    h = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", f_hat))
    h = _res(
        sd,
        "decoder.mid.block_2",
        _attn(sd, "decoder.mid.attn_1", _res(sd, "decoder.mid.block_1", h)),
    )
    for i in reversed(range(len(MULT))):
        for j in range(DEPTH + 1):
            h = _res(sd, f"decoder.up.{i}.block.{j}", h)
            if f"decoder.up.{i}.attn.{j}.qkv.weight" in sd:
                h = _attn(sd, f"decoder.up.{i}.attn.{j}", h)
        if i != 0:
            h = _conv(sd, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0))
    return _conv(sd, "decoder.conv_out", F.silu(_gn(sd, "decoder.norm_out", h)))


# ---- tests ----------------------------------------------------------------------------------


def test_config_is_read_off_the_shapes():
    cfg = var_config(var_state_dict(), scales=(1, 2, 3, 4), norm_groups=GROUPS)
    assert (cfg.channels, cfg.channel_mult, cfg.depth) == (CH, MULT, DEPTH)
    assert (cfg.latent_dim, cfg.vocab_size, cfg.phi_count) == (Z, VOCAB, 2)
    assert (cfg.image_size, cfg.attention, cfg.mid_attention) == (16, True, True)
    assert var_config(var_state_dict(phi="qresi", phi_count=1), (1, 2, 3, 4), 4).phi_count == 1
    assert var_config(var_state_dict(phi="per_scale", phi_count=4), (1, 2, 3, 4), 4).phi_count == 4


@pytest.mark.parametrize(("phi", "count"), [("qresi_ls", 2), ("qresi", 1), ("per_scale", 4)])
@torch.no_grad()
def test_loaded_model_runs_vars_network(phi, count):
    sd = var_state_dict(phi=phi, phi_count=count)
    model = from_var(sd, scales=(1, 2, 3, 4), norm_groups=GROUPS)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    f = model.encode_latent(x)
    torch.testing.assert_close(f, var_encode(sd, x), atol=1e-5, rtol=1e-4)
    f_hat = torch.randn(2, Z, 4, 4)
    torch.testing.assert_close(
        model.decode_latent(f_hat, clamp=False), var_decode(sd, f_hat), atol=1e-5, rtol=1e-4
    )
    assert torch.equal(model.quantizer.codebook.weight, sd["quantize.embedding.weight"])
    assert torch.equal(model.quantizer.ema_hits, sd["quantize.ema_vocab_hit_SV"])


@torch.no_grad()
def test_swapped_decoder_levels_would_be_caught():
    # Counter-case: blocks 1 and 2 of VAR's decoder levels 0 and 1 have identical shapes, so
    # only the outputs can tell a mapping that mixes up the level order.
    sd = var_state_dict()
    swapped = dict(sd)
    for j in (1, 2):
        for key in sd:
            for a, b in ((0, 1), (1, 0)):
                prefix = f"decoder.up.{a}.block.{j}."
                if key.startswith(prefix):
                    swapped[f"decoder.up.{b}.block.{j}." + key[len(prefix) :]] = sd[key]
    model = from_var(swapped, scales=(1, 2, 3, 4), norm_groups=GROUPS)
    f_hat = torch.randn(2, Z, 4, 4)
    assert not torch.allclose(
        model.decode_latent(f_hat, clamp=False), var_decode(sd, f_hat), atol=1e-3
    )


@settings(max_examples=25, deadline=None)  # each example builds and runs two conv models
@given(seed=st.integers(0, 2**16), phi_count=st.integers(1, 4))
def test_exported_then_loaded_model_reproduces_our_forward_exactly(seed, phi_count):
    torch.manual_seed(seed)
    ours = MultiScaleVQVAE(tiny_config(phi_count=phi_count)).eval()
    torch.nn.init.normal_(ours.quantizer.codebook.weight)
    sd = ours_to_var(ours)
    assert all(k.startswith(("encoder.", "decoder.", "quant", "post_quant")) for k in sd)
    loaded = from_var(sd, scales=ours.scales, norm_groups=ours.config.norm_groups)
    assert loaded.config == ours.config
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        tokens = ours.encode(x)
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode(x), tokens, strict=True))
        assert torch.equal(loaded.decode(tokens), ours.decode(tokens))
        assert torch.equal(
            loaded.teacher_forcing_inputs(tokens), ours.teacher_forcing_inputs(tokens)
        )
    back = ours_to_var(loaded)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_var_names_round_trip():
    sd = var_state_dict()
    model = from_var(sd, scales=(1, 2, 3, 4), norm_groups=GROUPS)
    back = ours_to_var(model)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_other_schedules_usage_statistics_are_dropped():
    sd = var_state_dict()
    sd["quantize.ema_vocab_hit_SV"] = torch.ones(10, VOCAB)
    model = from_var(sd, scales=(1, 2, 4), norm_groups=GROUPS)
    assert model.quantizer.ema_hits.shape == (3, VOCAB)


def test_mismatches_are_named():
    sd = var_state_dict()
    del sd["decoder.up.1.block.2.conv2.bias"]
    with pytest.raises(
        VARWeightsError, match=r"missing \['decoder.stages.1.blocks.2.conv2.bias'\]"
    ):
        from_var(sd, scales=(1, 2, 3, 4), norm_groups=GROUPS)
    sd = var_state_dict()
    sd["quantize.embedding.weight"] = torch.zeros(VOCAB, Z + 1)
    model = MultiScaleVQVAE(tiny_config(latent_dim=Z, vocab_size=VOCAB, depth=DEPTH))
    with pytest.raises(VARWeightsError, match=r"quantizer\.codebook\.weight"):
        load_var_state_dict(model, sd)
    with pytest.raises(VARWeightsError, match=r"encoder\.down"):
        var_config(
            {
                "encoder.conv_in.weight": torch.zeros(1),
                "quant_conv.weight": torch.zeros(1),
                "quantize.embedding.weight": torch.zeros(1),
            }
        )


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_files(tmp_path, suffix):
    from safetensors.torch import save_file

    sd = var_state_dict()
    path = tmp_path / f"vae{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)  # the released file's format
    else:
        save_file(sd, str(path))
    read = read_var_checkpoint(path)
    assert read.keys() == sd.keys() and all(torch.equal(read[k], sd[k]) for k in sd)
    model = from_var(path, scales=(1, 2, 3, 4), norm_groups=GROUPS)
    assert torch.equal(model.quantizer.codebook.weight, sd["quantize.embedding.weight"])
