"""Training loop for the multi-scale VQ-VAE tokenizer (usable from a recipe).

Loss per batch: MSE(reconstruction, images) + vq_weight * VQ loss (VAR's commitment + codebook
terms, ``quantizer.py``) + perceptual_weight * perceptual(reconstruction, images) when a
perceptual loss module is given (e.g. an LPIPS network; none ships here because no weights can be
downloaded). Metrics per step: the losses, codebook usage (fraction of codes hit by the batch over
all scales) and perplexity (exp of the entropy of the batch's code distribution; the vocabulary
size at best).

Example:
    >>> history = train_tokenizer(vae, loader, steps=1000, lr=2e-4, seed=0)
    >>> history[-1]["recon_mse"]
"""

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from foresight.vqvae import MultiScaleVQVAE

logger = logging.getLogger(__name__)

Callback = Callable[[int, dict[str, float], MultiScaleVQVAE], None]
Perceptual = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Optimisation settings (plain data, so recipes can carry them).

    kmeans_init_rounds: if > 0, the codebook starts as k-means centroids of the residuals of the
        first batch's latents (``MultiScaleQuantizer.init_codebook_kmeans``); 0 keeps the init.
    dead_code_threshold: codes whose EMA hits (summed over scales) fall below it are re-seeded
        from the batch's residuals every ``restart_every`` steps; None disables restarts.
    """

    steps: int
    lr: float = 2e-4
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    vq_weight: float = 1.0
    perceptual_weight: float = 1.0
    grad_clip: float | None = 1.0
    dead_code_threshold: float | None = 0.5
    restart_every: int = 25
    kmeans_init_rounds: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.kmeans_init_rounds < 0:
            raise ValueError(f"kmeans_init_rounds: expected >= 0, got {self.kmeans_init_rounds}")
        if self.restart_every < 1:
            raise ValueError(f"restart_every: expected >= 1, got {self.restart_every}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip: expected > 0 or None, got {self.grad_clip}")


def code_statistics(hits: Float[Tensor, "k v"]) -> tuple[float, float]:
    """(usage, perplexity) of a batch's code counts per scale, pooled over scales."""
    counts = hits.sum(0)
    total = counts.sum()
    if total <= 0:
        raise ValueError("hits: expected at least one code hit")
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).float().mean()), float(entropy.exp())


def _batches(data: Iterable[object]) -> Iterator[object]:
    """Endless batches: re-iterates an iterable (a DataLoader), drains a one-shot iterator."""
    one_shot = iter(data) is data
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty or one_shot:
            raise ValueError("data: ran out of batches before the requested number of steps")


def train_tokenizer(
    model: MultiScaleVQVAE,
    data: Iterable[object],
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    *,
    config: TokenizerTrainConfig | None = None,
    callback: Callback | None = None,
    perceptual: Perceptual | None = None,
    images_of: Callable[[object], Tensor] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` on image batches [b, ch, H, W] in [-1, 1]; returns per-step metrics.

    images_of: turns each item of ``data`` into such a batch (e.g. picks a camera key of a
        LeRobot batch and maps [0, 1] to [-1, 1]); items must already be image tensors without it.

    ``steps``/``lr``/``seed`` override the same fields of ``config``. The run is seeded (dropout
    and dead-code draws) without disturbing the caller's global RNG state.
    """
    if config is None and steps is None:
        raise ValueError("steps: expected a number of steps (or a config carrying one)")
    base = config or TokenizerTrainConfig(steps=steps)
    cfg = TokenizerTrainConfig(
        **{
            **base.__dict__,
            **{k: v for k, v in (("steps", steps), ("lr", lr), ("seed", seed)) if v is not None},
        }
    )
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    batches = _batches(data)
    columns = (
        TextColumn("tokenizer"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} mse {task.fields[mse]:.4f}"),
        TimeRemainingColumn(),
    )
    fork_devices = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=fork_devices),
        Progress(*columns, disable=not progress) as bar,
    ):
        torch.manual_seed(cfg.seed)
        task = bar.add_task("train", total=cfg.steps, mse=float("nan"))
        model.train()
        for step in range(cfg.steps):
            item = next(batches)
            images = images_of(item) if images_of is not None else item
            if not isinstance(images, Tensor) or not images.is_floating_point():
                raise TypeError(
                    f"data: expected float image tensors [b, ch, H, W] (pass images_of to "
                    f"convert other batches), got {type(images).__name__}"
                    f"{'' if not isinstance(images, Tensor) else ' of dtype ' + str(images.dtype)}"
                )
            images = images.to(device)
            if step == 0 and cfg.kmeans_init_rounds > 0:
                with torch.no_grad():
                    latent = model.encode_latent(images)
                model.quantizer.init_codebook_kmeans(latent, generator, cfg.kmeans_init_rounds)
            out = model(images)
            recon = F.mse_loss(out.reconstruction, images)
            loss = recon + cfg.vq_weight * out.vq_loss
            metrics = {
                "step": float(step),
                "recon_mse": float(recon.detach()),
                "vq_loss": float(out.vq_loss.detach()),
            }
            if perceptual is not None:
                perc = perceptual(out.reconstruction, images).mean()
                loss = loss + cfg.perceptual_weight * perc
                metrics["perceptual"] = float(perc.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                metrics["grad_norm"] = float(
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                )
            optimizer.step()
            usage, perplexity = code_statistics(out.hits)
            metrics.update(
                loss=float(loss.detach()), usage=usage, perplexity=perplexity, restarted=0.0
            )
            if cfg.dead_code_threshold is not None and (step + 1) % cfg.restart_every == 0:
                restarted = model.quantizer.restart_dead_codes(cfg.dead_code_threshold, generator)
                metrics["restarted"] = float(restarted)
                if restarted:
                    logger.debug("step %d: restarted %d dead codes", step, restarted)
            history.append(metrics)
            if callback is not None:
                callback(step, metrics, model)
            bar.update(task, advance=1, mse=metrics["recon_mse"])
    model.eval()
    return history
