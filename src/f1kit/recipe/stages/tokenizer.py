"""``kind: tokenizer``: train the multi-scale VQ-VAE on the generation camera's frames of the
training rows (`foresight.train_tokenizer`), score it on the held-out episodes, save it."""

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from f1kit.data import episode_ids
from f1kit.recipe.data import generation_key
from f1kit.recipe.schema import TokenizerStage
from f1kit.recipe.stages.context import DONE, RunContext
from f1kit.recipe.stages.registry import register
from f1kit.recipe.stages.weights import load_tokenizer
from f1kit.train import barrier, is_main
from f1kit.train.distributed import world_size
from f1kit.train.parallel import holds_weights
from foresight import tokenizer_quality, train_tokenizer

log = logging.getLogger(__name__)
_POLL_S = 2.0  # how often the ranks without weights look for the main rank's done.json


@register("tokenizer")
def run_tokenizer(ctx: RunContext, stage: TokenizerStage, index: int, stage_dir: Path) -> dict:
    """Train (or, done earlier, reload) the tokenizer; the codes of the old one are dropped."""
    ctx.codes = None  # the codes follow the tokenizer
    model, recipe, held = ctx.model, ctx.recipe, ctx.held
    done = stage_dir / DONE
    weights = stage_dir / "tokenizer.safetensors"
    barrier()  # every rank looks at done.json before the main rank can write it
    shapes_only = not holds_weights(model)  # a sharded run's other ranks
    if done.exists() and weights.exists():
        if not shapes_only:
            load_tokenizer(model, weights, f"stages.{stage.name}")
        return json.loads(done.read_text())
    if shapes_only:
        # Shapes only (a sharded run): the main rank trains it alone, perhaps for longer than a
        # collective may wait; the others watch for its files, then meet it at its last barrier.
        while not done.exists():
            time.sleep(_POLL_S)
        barrier()
        return json.loads(done.read_text())
    began = time.perf_counter()
    frames = CameraRows(ctx.data, generation_key(recipe))
    train_rows = np.flatnonzero(~held)
    config = stage.train_config(recipe.seed, index)
    rng = torch.Generator().manual_seed(config.seed)
    tokenizer = model.tokenizer
    device = next(tokenizer.parameters()).device

    def batches():
        while True:
            idx = torch.randint(0, len(train_rows), (stage.batch_size,), generator=rng)
            batch = torch.from_numpy(frames[train_rows[idx.numpy()]]).permute(0, 3, 1, 2)
            yield model.tokenizer_images(batch.to(device))  # NHWC strides, as before

    tokenizer.requires_grad_(True).train()
    metrics = train_tokenizer(
        tokenizer, batches(), config=config, progress=ctx.progress and is_main()
    )
    tokenizer.requires_grad_(False).eval()
    if world_size() > 1 and not recipe.parallel.settings().shards_over(world_size()):
        # Every rank trained the same tokenizer from the same seed (a sharded run: the main
        # rank alone), but GPU kernels need not be bit-reproducible across devices: rank 0's
        # weights define the codes for all.
        for tensor in tokenizer.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    if is_main():
        with (stage_dir / "metrics.jsonl").open("w") as f:
            for step, m in enumerate(metrics, start=1):
                f.write(json.dumps({**m, "step": step}) + "\n")
        partial = weights.with_suffix(".tmp.safetensors")
        tokenizer.save(partial)
        os.replace(partial, weights)  # a kill mid-save leaves no truncated weights behind
    result = {
        "steps": stage.steps,
        "wall_seconds": time.perf_counter() - began,
        "final": metrics[-1] if metrics else {},
    }
    if held.any():
        result["quality"] = _held_out_quality(ctx, frames)
        log.info("tokenizer %s on held-out frames: %s", stage.name, result["quality"])
    if is_main():  # done only after the weights are in place
        done.write_text(json.dumps(result, indent=2))
    barrier()
    return result


class CameraRows:
    """One camera's frames over several datasets by row of their concatenation, fetched a batch
    at a time: a lazily read dataset is never decoded whole (``frames[rows]`` -> uint8
    ``(n, H, W, 3)``)."""

    def __init__(self, data: list, key: str) -> None:
        self.data, self.key = data, key
        self.starts = np.cumsum([0] + [len(ds) for ds in data])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        which = np.searchsorted(self.starts, rows, side="right") - 1
        out = None
        for d in np.unique(which):
            at = which == d
            part = self.data[d].frames(self.key, rows[at] - self.starts[d])
            if out is None:
                out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
            out[at] = part
        assert out is not None  # rows is never empty here
        return out


def _held_out_quality(ctx: RunContext, frames: CameraRows) -> dict:
    """``foresight.tokenizer_quality`` on the held-out episodes at the data's image size, at the
    foresight horizon: the copy of the current frame, the first ``generation.scales`` scales
    (what F1 generates) and all scales."""
    model, recipe, held = ctx.model, ctx.recipe, ctx.held
    episodes = episode_ids(ctx.data)
    images = torch.from_numpy(frames[np.flatnonzero(held)]).permute(0, 3, 1, 2)
    images = images.float() / 127.5 - 1.0
    counts = sorted({recipe.model.generation.scales, len(model.tokenizer.config.scales)})
    scores = tokenizer_quality(
        model.tokenizer, images, torch.from_numpy(episodes[held]), recipe.data.foresight, counts
    )
    return {label: q.as_dict() for label, q in scores.items()}
