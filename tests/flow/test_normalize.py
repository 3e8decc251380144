"""Normaliser: stats from data, exact inverse, masks, safetensors round trip, dtype casts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flow import NORM_MODES, Normalizer


def data(seed: int = 0, n: int = 500, a: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 10.0, 0.01, 3.0])[:a]
    return torch.randn(n, a, generator=g) * scales + torch.arange(a) * 5


@settings(max_examples=60)  # each example fits stats (a quantile sort) on a small tensor
@given(
    mode=st.sampled_from(NORM_MODES),
    seed=st.integers(0, 1000),
    lead=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    a=st.integers(1, 4),
)
def test_inverse_is_exact_up_to_rounding(mode: str, seed: int, lead: list[int], a: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, 3, a, generator=g, dtype=torch.float64) * 7 + 2
    norm = Normalizer.fit(x, mode)
    y = norm(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(norm.inverse(y), x, rtol=1e-6, atol=1e-6)


def test_each_mode_hits_its_target_range():
    x = data()
    y = Normalizer.fit(x, "mean_std")(x)
    # atol 1e-4: dim 2 sits at 10 with std 0.01, so a float32 ulp of x is ~1e-4 once scaled.
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(4), atol=1e-4, rtol=0)
    y = Normalizer.fit(x, "min_max")(x)
    torch.testing.assert_close(y.min(0).values, -torch.ones(4))
    torch.testing.assert_close(y.max(0).values, torch.ones(4))
    y = Normalizer.fit(x, "quantile", quantiles=(0.05, 0.95))(x)
    q = torch.quantile(y, torch.tensor([0.05, 0.95]), dim=0)
    torch.testing.assert_close(q, torch.tensor([[-1.0] * 4, [1.0] * 4]), atol=1e-4, rtol=0)


def test_quantile_resists_an_outlier_that_squashes_min_max():
    x = data()
    x[0, 0] = 1e4
    bulk = x[1:, 0]
    spread = lambda mode: Normalizer.fit(x, mode)(x)[1:, 0].std().item()  # noqa: E731
    assert spread("quantile") > 0.3  # bulk still spans a unit-ish range
    assert spread("min_max") < 1e-3 * 5  # counter-case: the outlier squashed the bulk
    assert bulk.std() > 0.5


def test_constant_dim_maps_to_zero_without_blowing_up():
    x = data()
    x[:, 2] = 3.25
    for mode in NORM_MODES:
        norm = Normalizer.fit(x, mode)
        y = norm(x)
        assert torch.isfinite(y).all()
        assert torch.equal(y[:, 2], torch.zeros(len(x)))
        torch.testing.assert_close(norm.inverse(y)[:, 2], x[:, 2])


def test_valid_mask_excludes_padded_rows():
    x = data(n=40).reshape(10, 4, 4)  # 10 chunks of 4 steps
    valid = torch.ones(10, 4, dtype=torch.bool)
    valid[:, 3] = False
    x[:, 3] = 1e3  # what an ended episode's padding might hold
    masked = Normalizer.fit(x, "mean_std", valid=valid)
    subset = Normalizer.fit(x[:, :3], "mean_std")
    torch.testing.assert_close(masked.center, subset.center)
    torch.testing.assert_close(masked.scale, subset.scale)
    unmasked = Normalizer.fit(x, "mean_std")
    assert (unmasked.center - subset.center).abs().max() > 100  # the mask mattered


def test_stats_ride_along_in_state_dict_and_safetensors(tmp_path):
    norm = Normalizer.fit(data(), "quantile")
    path = tmp_path / "norm.safetensors"
    norm.save(path)
    loaded = Normalizer.load(path)
    assert loaded.mode == "quantile"
    x = data(seed=1)
    assert torch.equal(loaded(x), norm(x))
    assert set(norm.state_dict()) == {"center", "scale"}
    fresh = Normalizer(torch.zeros(4), torch.ones(4), "quantile")
    fresh.load_state_dict(norm.state_dict())
    assert torch.equal(fresh(x), norm(x))


def test_load_rejects_a_file_without_mode(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"center": torch.zeros(2), "scale": torch.ones(2)}, str(path))
    with pytest.raises(ValueError, match="mode"):
        Normalizer.load(path)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Normalizer.fit(data(), "zscore"), "mode"),
        (lambda: Normalizer.fit(data(), "quantile", quantiles=(0.9, 0.1)), "quantiles"),
        (lambda: Normalizer.fit(data(n=1), "mean_std"), "at least 2"),
        (lambda: Normalizer.fit(torch.tensor([[1.0], [float("nan")]]), "min_max"), "NaN"),
        (lambda: Normalizer.fit(data(), "mean_std")(torch.zeros(3, 5)), "expected 4 features"),
        (lambda: Normalizer(torch.zeros(2), torch.zeros(2), "mean_std"), "scale"),
        (lambda: Normalizer(torch.zeros(2), torch.ones(3), "mean_std"), "scale"),
    ],
)
def test_bad_input_is_named(call, match: str):
    # TypeError: the suite's runtime type checks refuse a bad Literal or a shape mismatch before
    # the function body runs; the message names the same parameter.
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_casting_the_model_to_bfloat16_keeps_the_stats_exact():
    x = data() + 200.3
    norm = Normalizer.fit(x, "mean_std")
    center = norm.center.clone()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), norm).to(torch.bfloat16)
    assert model[0].weight.dtype == torch.bfloat16  # the rest of the model is cast
    assert norm.center.dtype == torch.float32 and torch.equal(norm.center, center)
    # Counter-case: a plain bf16 buffer would have rounded the stats by far more than float32.
    assert (center.bfloat16().float() - center).abs().max() > 1e-2
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16


@given(
    n=st.integers(2, 300),
    lo_q=st.floats(0, 0.49),
    hi_q=st.floats(0.51, 1),
    seed=st.integers(0, 100),
)
def test_quantile_stats_match_torch_quantile(n: int, lo_q: float, hi_q: float, seed: int):
    # Ours uses order statistics (no 2^24-row limit); it must be torch.quantile's 'linear' rule.
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    norm = Normalizer.fit(x, "quantile", quantiles=(lo_q, hi_q))
    ref = torch.quantile(x, torch.tensor([lo_q, hi_q], dtype=torch.float64), dim=0)
    center, scale = (ref[1] + ref[0]) / 2, (ref[1] - ref[0]) / 2
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))
    torch.testing.assert_close(norm.center, center.float())
    torch.testing.assert_close(norm.scale, scale.float())


def test_from_stats_reads_lerobot_and_openpi_style_dicts_like_fit_computes_them():
    x = data().double()
    lerobot = {  # lists, as json.load returns them
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "min": x.min(0).values.tolist(),
        "max": x.max(0).values.tolist(),
        "q01": torch.quantile(x, 0.01, dim=0).tolist(),
        "q99": torch.quantile(x, 0.99, dim=0).tolist(),
    }
    for mode in NORM_MODES:
        loaded, fitted = Normalizer.from_stats(lerobot, mode), Normalizer.fit(x, mode)
        torch.testing.assert_close(loaded.center, fitted.center)
        torch.testing.assert_close(loaded.scale, fitted.scale)
    with pytest.raises(ValueError, match="missing"):
        Normalizer.from_stats({"mean": [0.0]}, "mean_std")
    with pytest.raises(ValueError, match="below"):
        Normalizer.from_stats({"min": [1.0], "max": [0.0]}, "min_max")
    with pytest.raises(ValueError, match="equal length"):
        Normalizer.from_stats({"mean": [0.0, 1.0], "std": [1.0]}, "mean_std")
