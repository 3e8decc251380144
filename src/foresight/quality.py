"""How well a frame is reconstructed or foreseen: PSNR and the error on what moves.

A robot frame is mostly static background: a reconstruction that blurs the gripper away or drops a
2-pixel goal marker still scores a high PSNR. The *motion error* therefore scores only the pixels
that differ between the current frame ``x_t`` and the future frame ``x_{t+h}`` (what moves over the
foresight horizon: the arm, the gripper, the objects it touches), which is exactly the information
foresight has to carry beyond the current frame.

All images are ``[b, ch, H, W]`` floats in [-1, 1] (the tokenizer's range, so a pixel's range is 2).

* ``psnr``: 10 log10(2^2 / MSE) per image.
* ``motion_mask``: pixels whose largest channel change between two frames exceeds ``threshold``.
* ``masked_mse``: MSE over the masked pixels of each image (NaN where an image has none).
* ``FrameQuality``: the three together for a batch, pooled (``mean``) into plain floats.
* ``future_pairs`` / ``tokenizer_quality``: a tokenizer's reconstructions of held-out frames
  x_{t+h}, from all scales and from the first few (what F1 generates), next to the copy x_t (the
  no-foresight reference). Tokens carry foresight only where they beat the copy on what moves.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from foresight.vqvae import MultiScaleVQVAE

PIXEL_RANGE = 2.0  # images live in [-1, 1]
# 0.1 in [-1, 1] is about 13 of 255 grey levels: above render noise, below any real motion.
MOTION_THRESHOLD = 0.1


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"{names}: expected two [b, ch, H, W] batches of one shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def psnr(
    estimate: Float[Tensor, "b ch H W"], target: Float[Tensor, "b ch H W"]
) -> Float[Tensor, " b"]:
    """Peak signal-to-noise ratio per image in dB, for images in [-1, 1] (peak-to-peak 2)."""
    _check_pair(estimate, target, "estimate, target")
    mse = (estimate.float() - target.float()).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(PIXEL_RANGE**2 / mse.clamp_min(1e-12))


def motion_mask(
    now: Float[Tensor, "b ch H W"],
    future: Float[Tensor, "b ch H W"],
    threshold: float = MOTION_THRESHOLD,
) -> Bool[Tensor, "b H W"]:
    """Pixels that move between ``now`` and ``future``: the largest channel change > threshold."""
    _check_pair(now, future, "now, future")
    if not threshold > 0:
        raise ValueError(f"threshold: expected > 0, got {threshold}")
    return (future.float() - now.float()).abs().amax(dim=1) > threshold


def masked_mse(
    estimate: Float[Tensor, "b ch H W"],
    target: Float[Tensor, "b ch H W"],
    mask: Bool[Tensor, "b H W"],
) -> Float[Tensor, " b"]:
    """Per-image MSE over the pixels of ``mask`` (all channels); NaN for an image with none."""
    _check_pair(estimate, target, "estimate, target")
    if mask.shape != (target.shape[0], *target.shape[2:]):
        raise ValueError(
            f"mask: expected [b, H, W] = {[target.shape[0], *target.shape[2:]]}, "
            f"got {list(mask.shape)}"
        )
    error = (estimate.float() - target.float()).square().mean(dim=1)
    count = mask.sum(dim=(1, 2))
    total = (error * mask).sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, torch.nan))


@dataclass(frozen=True)
class FrameQuality:
    """A batch of estimates of future frames, scored against the truth.

    psnr: mean PSNR (dB) over images. motion_mse: MSE over the pixels that move between the current
    frame and the truth, pooled over images that have any. static_mse: MSE over the other pixels.
    moving: fraction of pixels that move.
    """

    psnr: float
    motion_mse: float
    static_mse: float
    moving: float

    @classmethod
    def of(
        cls,
        estimate: Float[Tensor, "b ch H W"],
        truth: Float[Tensor, "b ch H W"],
        now: Float[Tensor, "b ch H W"],
        threshold: float = MOTION_THRESHOLD,
    ) -> "FrameQuality":
        """Score ``estimate`` of ``truth`` (the frame at t + h) given ``now`` (the frame at t)."""
        mask = motion_mask(now, truth, threshold)
        moving = masked_mse(estimate, truth, mask)
        static = masked_mse(estimate, truth, ~mask)
        return cls(
            psnr=float(psnr(estimate, truth).mean()),
            motion_mse=float(moving.nanmean()) if bool(mask.any()) else float("nan"),
            static_mse=float(static.nanmean()),
            moving=float(mask.float().mean()),
        )

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.__dict__.items()}


def future_pairs(
    episode_index: Int[Tensor, " n"], horizon: int
) -> tuple[Int[Tensor, " m"], Int[Tensor, " m"]]:
    """Rows ``t`` and ``t + horizon`` that lie in one episode (rows in episode order)."""
    if horizon < 1:
        raise ValueError(f"horizon: expected >= 1, got {horizon}")
    now = torch.arange(max(len(episode_index) - horizon, 0))
    keep = episode_index[now] == episode_index[now + horizon]
    return now[keep], now[keep] + horizon


def _resized(images: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images.float(), size=size, mode="bilinear", antialias=True)


@torch.no_grad()
def tokenizer_quality(
    vae: MultiScaleVQVAE,
    frames: Float[Tensor, "n ch H W"],
    episode_index: Int[Tensor, " n"],
    horizon: int,
    scale_counts: Sequence[int],
    batch: int = 256,
) -> dict[str, FrameQuality]:
    """Score ``vae``'s reconstructions of the frames ``horizon`` steps ahead, at ``frames``' size.

    frames: consecutive frames in [-1, 1] (rows of episodes in order, ``episode_index`` per row).
    Returns ``{"copy": ..., "scales_<k>": ...}``: the current frame standing in for the future one,
    and the reconstruction decoded from the first ``k`` scales for each ``k`` of ``scale_counts``
    (upsampled to the frames' size when the tokenizer works smaller).
    """
    num_scales = len(vae.config.scales)
    if not scale_counts or any(not 1 <= k <= num_scales for k in scale_counts):
        raise ValueError(f"scale_counts: expected counts in 1..{num_scales}, got {scale_counts}")
    now, future = future_pairs(episode_index, horizon)
    if len(now) == 0:
        raise ValueError(f"frames: no episode is longer than the horizon {horizon}")
    truth = frames[future].float()
    param = next(vae.parameters())
    was_training = vae.training
    vae.eval()
    recon: dict[int, list[Tensor]] = {k: [] for k in scale_counts}
    for chunk in truth.split(batch):
        side = vae.config.image_size
        codes = vae.encode(_resized(chunk, (side, side)).to(device=param.device, dtype=param.dtype))
        for k in scale_counts:
            decoded = vae.decode(codes[:k]).float().clamp(-1, 1)
            recon[k].append(_resized(decoded, tuple(frames.shape[-2:])).to(frames.device))
    vae.train(was_training)
    current = frames[now].float()
    scores = {"copy": FrameQuality.of(current, truth, current)}
    for k in scale_counts:
        scores[f"scales_{k}"] = FrameQuality.of(torch.cat(recon[k]), truth, current)
    return scores
