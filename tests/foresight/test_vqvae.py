"""MultiScaleVQVAE: config validation, the token API's shapes and consistency, weights I/O."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from foresight import MultiScaleVQVAE, VQVAEConfig
from tests.foresight.helpers import tiny_config, tiny_model


def test_presets():
    var = VQVAEConfig.var_256()
    assert (var.image_size, var.latent_size, var.num_tokens) == (256, 16, 680)
    assert (var.channels, var.channel_mult, var.latent_dim, var.vocab_size) == (
        160,
        (1, 1, 2, 2, 4),
        32,
        4096,
    )
    small = VQVAEConfig.small_64()
    assert (small.image_size, small.scales, small.num_tokens) == (64, (1, 2, 3, 4), 30)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"scales": (1, 2, 8)}, "scales"),
        ({"scales": (2, 1, 4)}, "scales"),
        ({"image_size": 18}, "image_size"),
        ({"norm_groups": 3}, "norm_groups"),
        ({"phi_count": 5}, "phi_count"),
        ({"phi_ratio": 0.0}, "phi_ratio"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"quant_conv_kernel": 2}, "quant_conv_kernel"),
        ({"depth": 0}, "depth"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_config_json_round_trip():
    cfg = tiny_config()
    assert VQVAEConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        VQVAEConfig.from_json('{"bogus": 1}')


@torch.no_grad()
def test_token_api_is_consistent():
    vae = tiny_model()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    tokens = vae.encode(x)
    assert [tuple(t.shape) for t in tokens] == [(3, 1), (3, 4), (3, 9), (3, 16)]
    assert all(t.dtype == torch.long for t in tokens)
    # Encoding = quantizing the encoder's latent.
    f = vae.encode_latent(x)
    assert all(torch.equal(a, b) for a, b in zip(vae.quantizer.tokenize(f), tokens, strict=True))
    per_scale = vae.decode_each_scale(tokens)
    assert len(per_scale) == 4
    for m in range(1, 5):
        image = vae.decode(tokens[:m])
        assert image.shape == (3, 3, 16, 16)
        assert torch.equal(image, per_scale[m - 1])
        assert float(image.abs().max()) <= 1.0
    assert not torch.equal(per_scale[0], per_scale[-1])  # later scales add detail
    f_hats = vae.running_reconstruction(tokens)
    assert torch.equal(vae.decode(tokens), vae.decode_latent(f_hats[-1]))
    assert vae.teacher_forcing_inputs(tokens).shape == (3, 4 + 9 + 16, 8)


def test_training_forward():
    vae = tiny_model().train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = vae(x)
    assert out.reconstruction.shape == x.shape
    assert out.hits.shape == (4, 32) and out.vq_loss.ndim == 0
    (((out.reconstruction - x) ** 2).mean() + out.vq_loss).backward()
    # The encoder learns from reconstruction (straight-through), the codebook from the VQ loss.
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert vae.quantizer.codebook.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_mixed_precision_autoencoder_with_float32_quantizer():
    vae = tiny_model()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    reference = vae.encode_latent(x)
    vae.to(torch.bfloat16).quantizer.float()
    tokens = vae.encode(x.bfloat16())
    assert vae.running_reconstruction(tokens)[-1].dtype == torch.float32
    image = vae.decode(tokens)
    assert image.dtype == torch.bfloat16 and image.shape == x.shape
    # The bfloat16 latent is quantized in float32; it stays close to the float32 latent.
    torch.testing.assert_close(
        vae.encode_latent(x.bfloat16()).float(), reference, atol=0.1, rtol=0.1
    )
    whole = tiny_model().to(torch.bfloat16)  # everything in bfloat16 also runs end to end
    assert whole.decode(whole.encode(x.bfloat16())).dtype == torch.bfloat16


def test_bad_images_are_named():
    vae = tiny_model()
    with pytest.raises(ValueError, match=r"images: expected \[b, 3, 16, 16\]"):
        vae.encode(torch.zeros(1, 3, 32, 32))


@given(data=st.data(), levels=st.integers(1, 3), latent=st.integers(1, 5), batch=st.integers(1, 2))
def test_shapes_over_random_schedules_and_image_sizes(data, levels, latent, batch):
    inner = data.draw(st.sets(st.integers(1, max(1, latent - 1)), max_size=latent - 1))
    scales = (*sorted(s for s in inner if s < latent), latent)
    image = latent * 2 ** (levels - 1)
    cfg = tiny_config(
        image_size=image,
        channel_mult=(1,) * levels,
        channels=4,
        latent_dim=3,
        vocab_size=8,
        scales=scales,
        phi_count=data.draw(st.integers(1, len(scales))),
        norm_groups=2,
        attention=data.draw(st.booleans()),
    )
    vae = MultiScaleVQVAE(cfg).eval()
    x = torch.rand(batch, 3, image, image) * 2 - 1
    with torch.no_grad():
        tokens = vae.encode(x)
        assert [tuple(t.shape) for t in tokens] == [(batch, s * s) for s in scales]
        m = data.draw(st.integers(1, len(scales)))
        assert vae.decode(tokens[:m]).shape == (batch, 3, image, image)
        if len(scales) > 1:
            n = sum(s * s for s in scales[1 : m + 1])
            assert vae.teacher_forcing_inputs(tokens[:m]).shape == (batch, n, 3)


def test_save_load_round_trip(tmp_path):
    vae = tiny_model(seed=3)
    vae.quantizer.ema_hits.fill_(2.0)
    path = tmp_path / "tok.safetensors"
    vae.save(path)
    loaded = MultiScaleVQVAE.load(path)
    assert loaded.config == vae.config
    for (k, a), (k2, b) in zip(vae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x)), vae.decode(vae.encode(x)))
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(1)}, str(bare))
    with pytest.raises(ValueError, match="no f1kit tokenizer config"):
        MultiScaleVQVAE.load(bare)
