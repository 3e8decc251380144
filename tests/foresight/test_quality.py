"""Frame-quality scores: PSNR, the motion mask and the error on what moves."""

import math

import pytest
import torch
from jaxtyping import TypeCheckError

from foresight.quality import (
    FrameQuality,
    future_pairs,
    masked_mse,
    motion_mask,
    psnr,
    tokenizer_quality,
)
from tests.foresight.helpers import tiny_model


def _frame(value: float = -0.5, size: int = 32) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


def test_psnr_of_a_known_error() -> None:
    target = _frame()
    estimate = target + 0.2  # MSE 0.04 on a peak-to-peak range of 2
    assert psnr(estimate, target).item() == pytest.approx(10 * math.log10(4 / 0.04), rel=1e-5)


def test_motion_mask_marks_only_changed_pixels() -> None:
    now, future = _frame(), _frame()
    future[0, 1, 2, 3] = 0.5  # one pixel moves in one channel
    future[0, 0, 5, 5] = -0.45  # below the threshold: render noise
    mask = motion_mask(now, future)
    assert mask.sum().item() == 1 and mask[0, 2, 3]


def test_a_blurred_mover_scores_badly_on_motion_and_well_on_psnr() -> None:
    """The reason the motion error exists: dropping a small mover barely moves PSNR."""
    now, future = _frame(), _frame()
    future[0, :, 4, 4] = 0.9  # a one-pixel goal marker appears
    dropped = _frame()  # an estimate that lost the marker
    q = FrameQuality.of(dropped, future, now)
    assert q.psnr > 25
    assert q.motion_mse == pytest.approx(1.4**2)
    assert q.static_mse == 0.0
    assert q.moving == pytest.approx(1 / 32**2)
    perfect = FrameQuality.of(future, future, now)
    assert perfect.motion_mse == 0.0


def test_masked_mse_is_nan_without_pixels_and_quality_survives() -> None:
    a, b = _frame(), _frame(0.0)
    none = torch.zeros(1, 32, 32, dtype=torch.bool)
    assert torch.isnan(masked_mse(a, b, none)).all()
    q = FrameQuality.of(a, a, a)  # nothing moves
    assert math.isnan(q.motion_mse) and q.moving == 0.0


def test_bad_shapes_and_thresholds_are_refused() -> None:
    # Under the test suite's jaxtyping hook the annotation catches a shape mismatch first; in
    # production (no hook) the function's own check names the arguments.
    with pytest.raises((ValueError, TypeCheckError)):
        psnr(_frame(), _frame(size=4))
    with pytest.raises((ValueError, TypeCheckError)):
        masked_mse(_frame(), _frame(), torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="threshold"):
        motion_mask(_frame(), _frame(), threshold=0.0)


def test_future_pairs_stay_inside_episodes() -> None:
    episodes = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    now, future = future_pairs(episodes, 2)
    assert now.tolist() == [0, 1, 4] and future.tolist() == [2, 3, 6]
    with pytest.raises(ValueError, match="horizon"):
        future_pairs(episodes, 0)


def test_tokenizer_quality_scores_each_prefix_against_the_copy() -> None:
    vae = tiny_model()
    torch.manual_seed(1)
    frames = torch.rand(10, 3, 32, 32) * 2 - 1  # at the dataset's size, twice the tokenizer's
    episodes = torch.tensor([0] * 6 + [1] * 4)
    scores = tokenizer_quality(vae, frames, episodes, horizon=3, scale_counts=[2, 4])
    assert set(scores) == {"copy", "scales_2", "scales_4"}
    assert not vae.training  # restored to what it was
    # The copy of random frames is scored like any estimate: same truth, so equal "moving".
    assert scores["copy"].moving == scores["scales_4"].moving > 0.5
    vae.train()
    tokenizer_quality(vae, frames, episodes, horizon=3, scale_counts=[4])
    assert vae.training
    with pytest.raises(ValueError, match="scale_counts"):
        tokenizer_quality(vae, frames, episodes, horizon=3, scale_counts=[5])
    with pytest.raises(ValueError, match="longer than the horizon"):
        tokenizer_quality(vae, frames, episodes, horizon=6, scale_counts=[4])
