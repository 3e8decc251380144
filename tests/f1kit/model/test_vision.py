"""Vision encoders: pixel conventions, resizing, camera independence, learning, SigLIP adapter."""

import sys

import pytest
import torch
import torch.nn.functional as F

from f1kit.model.conv_vision import ConvConfig, ConvEncoder
from f1kit.model.vision import (
    VISION_ENCODERS,
    SiglipEncoder,
    ViTConfig,
    ViTEncoder,
    _check_images,
    build_vision_encoder,
)

TINY = {"image_size": 16, "patch_size": 4, "width": 32, "depth": 1, "heads": 2, "mlp_width": 48}
TINY_SIGLIP = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}


def tiny_vit(out_width: int = 24, seed: int = 0, **overrides: int) -> ViTEncoder:
    torch.manual_seed(seed)
    return ViTEncoder(ViTConfig(**{**TINY, **overrides}), out_width).eval()


def pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def camera_tokens(tokens: torch.Tensor, camera: int, per_image: int) -> torch.Tensor:
    return tokens[:, camera * per_image : (camera + 1) * per_image]


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("image_size", 60, "image_size"),  # not a multiple of patch 8
        ("width", 130, "width"),  # not a multiple of 4 heads
        ("depth", 0, "depth"),
        ("heads", -1, "heads"),
        ("mlp_width", 2.5, "mlp_width"),
        ("patch_size", True, "patch_size"),
    ],
)
def test_vit_config_rejects_bad_fields_by_name(field: str, value: object, match: str) -> None:
    # TypeError: the test-suite's type checker sees a float before the config's own check does
    with pytest.raises((ValueError, TypeError), match=match):
        ViTConfig(**{field: value})


def test_vit_config_token_counts() -> None:
    assert ViTConfig().tokens_per_image == 64
    assert ViTConfig(image_size=48, patch_size=16).tokens_per_image == 9
    assert ViTConfig.siglip_so400m().tokens_per_image == 256


# ---------------------------------------------------------------- preprocessing


def test_uint8_and_equivalent_float_give_identical_tokens() -> None:
    enc = tiny_vit()
    u8 = pixels(2, 2, 3, 16, 16)
    with torch.no_grad():
        from_u8 = enc(u8)
        from_float = enc(u8.float() / 127.5 - 1)
        # counter-case: [0, 1] floats are not what the encoder expects, and the output shows it
        from_unit = enc(u8.float() / 255)
    assert torch.equal(from_u8, from_float)
    assert not torch.allclose(from_u8, from_unit, atol=1e-3)


def test_preprocess_maps_pixel_range_onto_minus_one_one() -> None:
    enc = tiny_vit()
    u8 = torch.zeros(1, 1, 3, 16, 16, dtype=torch.uint8)
    u8[..., 0, :] = 255
    u8[..., 1, :] = 128
    x = enc.preprocess(u8)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert (x[:, :, 0] == 1).all() and (x[:, :, 2:] == -1).all()
    torch.testing.assert_close(x[:, :, 1], torch.full((1, 3, 16), 128 / 127.5 - 1))


@pytest.mark.parametrize("size", [8, 40])
def test_other_sizes_equal_feeding_the_antialiased_resize(size: int) -> None:
    enc = tiny_vit()
    u8 = pixels(2, 2, 3, size, size, seed=size)
    x = (u8.float() / 127.5 - 1).flatten(0, 1)
    resized = F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True)
    with torch.no_grad():
        tokens = enc(u8)
        manual = enc(resized.unflatten(0, (2, 2)))
    assert torch.equal(tokens, manual)
    if size > 16:  # counter-case: when shrinking, antialiasing changes the pixels
        plain = F.interpolate(x, size=(16, 16), mode="bilinear", antialias=False)
        assert not torch.allclose(enc.preprocess(u8), plain, atol=1e-3)


def test_frame_brightness_reaches_the_tokens() -> None:
    # A per-patch LayerNorm before the embedding (x-transformers' ViT wrapper) would map these
    # uniform frames, and any brightness / contrast change of a patch, to identical tokens.
    enc = tiny_vit()
    dark = torch.zeros(1, 1, 3, 16, 16, dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.allclose(enc(dark), enc(dark + 200), atol=1e-3)
        patchy = pixels(1, 1, 3, 16, 16)
        assert not torch.allclose(enc(patchy), enc(patchy // 2), atol=1e-3)


def test_native_size_is_not_resampled() -> None:
    enc = tiny_vit()
    x = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    assert torch.equal(enc.preprocess(x), x.flatten(0, 1))


# ---------------------------------------------------------------- cameras


def test_cameras_are_encoded_independently_and_in_order() -> None:
    enc = tiny_vit()
    p = enc.tokens_per_image
    images = pixels(2, 3, 3, 16, 16)
    changed = images.clone()
    changed[:, 1] = pixels(2, 3, 16, 16, seed=1)
    with torch.no_grad():
        base, other = enc(images), enc(changed)
        alone = [enc(images[:, j : j + 1]) for j in range(3)]
    assert base.shape == (2, 3 * p, enc.out_width)
    for camera in (0, 2):
        assert torch.equal(camera_tokens(base, camera, p), camera_tokens(other, camera, p))
    assert not torch.allclose(camera_tokens(base, 1, p), camera_tokens(other, 1, p), atol=1e-3)
    # slot j holds camera j: the same tokens as encoding that camera on its own
    for j in range(3):
        torch.testing.assert_close(camera_tokens(base, j, p), alone[j], atol=1e-5, rtol=1e-5)
    # counter-case: changing camera 0 does change camera 0's tokens
    changed0 = images.clone()
    changed0[:, 0] = 255 - changed0[:, 0]
    with torch.no_grad():
        assert not torch.allclose(camera_tokens(enc(changed0), 0, p), camera_tokens(base, 0, p))


def test_tiny_encoder_fits_a_target_on_its_pooled_tokens() -> None:
    enc = tiny_vit(out_width=8).train()
    images = pixels(4, 2, 3, 16, 16)
    target = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(enc(images).mean(dim=1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses


# ---------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "rank 5"),
        (torch.zeros(1, 2, 4, 16, 16, dtype=torch.uint8), "3 colour channels"),
        (torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8), "channels-last"),
        (torch.zeros(1, 0, 3, 16, 16, dtype=torch.uint8), "at least one camera"),
        (torch.zeros(1, 2, 3, 16, 16, dtype=torch.int64), "int64"),
    ],
)
def test_bad_images_are_named(images: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _check_images(images)
    # through the public path the test-suite's type checker may fire first (TypeError)
    with pytest.raises((ValueError, TypeError), match=f"images|{match}"):
        tiny_vit()(images)


# ---------------------------------------------------------------- paper-size geometry


def siglip_parameter_count(width: int, depth: int, mlp: int, patch: int, tokens: int) -> int:
    """SigLIP's vision tower without the pooling head, from its architecture."""
    patch_embed = 3 * patch * patch * width + width  # conv weight + bias
    pos_embed = tokens * width
    attention = 4 * width * width + 4 * width  # q, k, v, out with biases
    mlp_params = 2 * width * mlp + mlp + width
    norms = 2 * 2 * width  # two LayerNorms with weight and bias
    return patch_embed + pos_embed + depth * (attention + mlp_params + norms) + 2 * width


def test_paper_size_vit_builds_on_meta_and_matches_siglip_size() -> None:
    cfg = ViTConfig.siglip_so400m()
    with torch.device("meta"):
        enc = ViTEncoder(cfg, 2048)
    assert enc.tokens_per_image == 256
    backbone = sum(p.numel() for n, p in enc.named_parameters() if not n.startswith("proj."))
    projection = sum(p.numel() for p in enc.proj.parameters())
    siglip = siglip_parameter_count(1152, 27, 4304, 14, 256)
    assert 0.38e9 < siglip < 0.43e9  # the published "400M" (So400m)
    assert abs(backbone - siglip) / siglip < 0.05, (backbone, siglip)
    assert projection == 1152 * 2048 + 2048


def test_siglip_parameter_formula_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.SiglipVisionConfig(
        hidden_size=1152,
        num_hidden_layers=27,
        num_attention_heads=16,
        intermediate_size=4304,
        image_size=224,
        patch_size=14,
        vision_use_head=False,
    )
    with torch.device("meta"):
        model = transformers.SiglipVisionModel(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == siglip_parameter_count(1152, 27, 4304, 14, 256)


# ---------------------------------------------------------------- SigLIP adapter


def tiny_siglip(seed: int = 0, out_width: int = 16) -> SiglipEncoder:
    pytest.importorskip("transformers")
    torch.manual_seed(seed)
    return SiglipEncoder.from_config(out_width, **TINY_SIGLIP).eval()


def test_siglip_cameras_are_independent() -> None:
    enc = tiny_siglip()
    p = enc.tokens_per_image
    assert p == 16 and enc.image_size == 32
    images = pixels(2, 2, 3, 32, 32)
    changed = images.clone()
    changed[:, 1] = 255 - changed[:, 1]
    with torch.no_grad():
        base, other = enc(images), enc(changed)
    assert base.shape == (2, 2 * p, 16)
    assert torch.equal(camera_tokens(base, 0, p), camera_tokens(other, 0, p))
    assert not torch.allclose(camera_tokens(base, 1, p), camera_tokens(other, 1, p), atol=1e-3)
    changed[:, 0] = 255 - changed[:, 0]
    with torch.no_grad():
        assert not torch.allclose(camera_tokens(enc(changed), 0, p), camera_tokens(base, 0, p))


def test_siglip_tokens_are_the_projected_last_hidden_state() -> None:
    enc = tiny_siglip()
    images = pixels(1, 2, 3, 32, 32)
    with torch.no_grad():
        hidden = enc.backbone(pixel_values=enc.preprocess(images)).last_hidden_state
        expected = enc.proj(hidden).flatten(0, 1).unsqueeze(0)
        torch.testing.assert_close(enc(images), expected)


def test_siglip_save_and_load_round_trip(tmp_path) -> None:
    enc = tiny_siglip(seed=3)
    enc.save_pretrained(tmp_path / "full")
    loaded = build_vision_encoder("siglip", 16, path=tmp_path / "full").eval()
    images = pixels(2, 2, 3, 24, 24)  # also through the resize path
    with torch.no_grad():
        assert torch.equal(enc(images), loaded(images))
    with pytest.raises(ValueError, match="out_width"):
        SiglipEncoder.from_pretrained(tmp_path / "full", 8)


def test_siglip_from_plain_transformers_checkpoints(tmp_path) -> None:
    """What downloaded SigLIP folders hold: a vision tower alone, or the full image-text model."""
    transformers = pytest.importorskip("transformers")
    enc = tiny_siglip(seed=4)
    enc.backbone.save_pretrained(tmp_path / "vision")
    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 50}
    full = transformers.SiglipModel(
        transformers.SiglipConfig(vision_config=TINY_SIGLIP, text_config=text)
    )
    full.save_pretrained(tmp_path / "full")
    x = enc.preprocess(pixels(1, 2, 3, 32, 32))
    for folder, reference in (("vision", enc.backbone), ("full", full.vision_model)):
        loaded = SiglipEncoder.from_pretrained(tmp_path / folder, 8).eval()
        assert loaded.out_width == 8 and loaded.tokens_per_image == 16
        with torch.no_grad():
            ours = loaded.backbone(pixel_values=x).last_hidden_state
            assert torch.equal(ours, reference.eval()(pixel_values=x).last_hidden_state)


def test_siglip_missing_path_is_named(tmp_path) -> None:
    pytest.importorskip("transformers")
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        SiglipEncoder.from_pretrained(missing, 16)


def test_siglip_without_transformers_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"f1kit\[hf\]"):
        SiglipEncoder.from_config(16, **TINY_SIGLIP)


# ---------------------------------------------------------------- registry


def test_registry_builds_each_name() -> None:
    assert set(VISION_ENCODERS) == {"vit", "siglip", "conv"}
    enc = build_vision_encoder("vit", 12, **TINY)
    assert isinstance(enc, ViTEncoder) and enc.out_width == 12 and enc.tokens_per_image == 16
    conv = build_vision_encoder("conv", 12, image_size=16, channels=[8, 16], groups=4)
    assert isinstance(conv, ConvEncoder) and conv.tokens_per_image == 16
    pytest.importorskip("transformers")
    assert isinstance(build_vision_encoder("siglip", 12, **TINY_SIGLIP), SiglipEncoder)


@pytest.mark.parametrize(
    ("name", "args", "error", "match"),
    [
        ("clip", {}, ValueError, r"unknown name 'clip'.*\['conv', 'siglip', 'vit'\]"),
        ("conv", {"patch_size": 4}, ValueError, "conv: unknown args.*patch_size"),
        ("vit", {"hidden": 3}, ValueError, "hidden"),
        ("vit", {"patch_size": 5}, ValueError, "image_size"),
        ("siglip", {"hiden_size": 3}, ValueError, "hiden_size"),
        ("siglip", {"path": "/x", "hidden_size": 3}, ValueError, "either path"),
    ],
)
def test_registry_errors_are_named(name: str, args: dict, error: type, match: str) -> None:
    if name == "siglip":
        pytest.importorskip("transformers")
    with pytest.raises(error, match=match):
        build_vision_encoder(name, 8, **args)


def test_out_width_is_validated() -> None:
    with pytest.raises(ValueError, match="out_width"):
        ViTEncoder(ViTConfig(**TINY), 0)


# ---------------------------------------------------------------- conv encoder


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"image_size": 20, "channels": (8, 8, 8)}, "image_size"),  # not a multiple of 8
        ({"channels": (8, 12)}, "groups"),  # 12 does not divide into 8 groups
        ({"channels": ()}, "channels"),
        ({"depth": -1}, "depth"),
        ({"channels": (8, 16), "depth": 1, "heads": 3}, "heads"),
        ({"groups": True}, "groups"),
    ],
)
def test_conv_config_rejects_bad_fields_by_name(args: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConvConfig(**{"image_size": 16, **args})


@pytest.mark.parametrize("depth", [0, 1])
def test_conv_encoder_tokens_cameras_and_a_one_pixel_marker(depth: int) -> None:
    torch.manual_seed(0)
    config = ConvConfig(image_size=16, channels=(8, 16), groups=4, depth=depth, heads=2)
    enc = ConvEncoder(config, out_width=12).eval()
    images = pixels(2, 2, 3, 16, 16)
    with torch.no_grad():
        tokens = enc(images)
        alone = enc(images[:, 1:])
    assert tokens.shape == (2, 2 * 16, 12)
    torch.testing.assert_close(camera_tokens(tokens, 1, 16), alone, atol=1e-5, rtol=1e-5)
    # One pixel (a goal marker) changes the tokens of its own cell.
    marked = images.clone()
    marked[:, 0, :, 9, 9] = 255 - marked[:, 0, :, 9, 9]
    with torch.no_grad():
        moved = (enc(marked) - tokens).abs().amax(dim=(0, 2))
    assert moved[2 * 4 + 2] > 1e-3  # cell (2, 2) of the 4 x 4 grid holds pixel (9, 9)
    assert torch.equal(moved[16:], torch.zeros(16))  # camera 1 untouched
