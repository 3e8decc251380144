"""Does the foresight tokenizer see what matters? Train one configuration, score held-out frames.

Trains a `MultiScaleVQVAE` on every frame of ``--train`` (a LeRobot dataset, e.g. a run's
``data/demos`` or ``f1kit demos`` output) for ``--steps`` and scores the frames of ``--val``
(held-out episodes, other layouts) with `foresight.quality`, at the dataset's image size (a
smaller tokenizer's reconstruction is upsampled bilinearly):

* ``scales_<k>``: the future frame x_{t+h} reconstructed from all scales, and from the first
  ``--generated`` scales (what F1 generates at inference);
* ``copy``: the current frame x_t standing in for x_{t+h} (the no-foresight reference). Tokens
  carry foresight only where their reconstruction of x_{t+h} beats the copy on the pixels that
  move (``motion_mse``).

One JSON line per configuration: the config, steps, train seconds, and for each horizon the
three scores. Example (the main job's 32 px tokenizer, then a 64 px one with an 8 x 8 latent)::

    .venv/bin/python benchmarks/tokenizer_quality.py --train runs/f1/data/demos --val /tmp/val \\
        --config '{"image_size": 32, "channel_mult": [1, 2, 2, 4], "depth": 1, "channels": 16,
                   "norm_groups": 8, "vocab_size": 256, "attention": false,
                   "mid_attention": false, "scales": [1, 2, 3, 4]}' --steps 150
"""

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

# benchmarks/flow.py would shadow the `flow` package that f1kit imports: move this folder to the
# end of the import path.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from f1kit.data.reader import read_dataset  # noqa: E402
from foresight import (  # noqa: E402
    MultiScaleVQVAE,
    TokenizerTrainConfig,
    VQVAEConfig,
    tokenizer_quality,
    train_tokenizer,
)


def frames_of(path: str, camera: str | None) -> tuple[torch.Tensor, np.ndarray]:
    """All frames [n, 3, H, W] in [-1, 1] and each row's episode index."""
    ds = read_dataset(path)
    key = camera or ds.image_keys[0]
    x = torch.from_numpy(ds.frames(key, np.arange(len(ds)))).permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1.0, ds.episode_index


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--camera", default=None)
    p.add_argument("--config", default="{}", help="VQVAEConfig fields as JSON")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kmeans", type=int, default=5)
    p.add_argument("--generated", type=int, default=4, help="scales F1 generates")
    p.add_argument("--horizons", default="3,8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", default=None, help="write the trained tokenizer here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, _ = frames_of(args.train, args.camera)
    val, val_episodes = frames_of(args.val, args.camera)
    config = VQVAEConfig(**json.loads(args.config))
    vae = MultiScaleVQVAE(config)
    rng = torch.Generator().manual_seed(args.seed)

    def batches():
        while True:
            idx = torch.randint(0, len(train), (args.batch,), generator=rng)
            yield resize(train[idx], config.image_size)

    began = time.perf_counter()
    history = train_tokenizer(
        vae,
        batches(),
        config=TokenizerTrainConfig(
            steps=args.steps, lr=args.lr, seed=args.seed, kmeans_init_rounds=args.kmeans
        ),
    )
    seconds = time.perf_counter() - began
    generated = min(args.generated, len(config.scales))
    record = {
        "name": "tokenizer.quality",
        "config": asdict(config),
        "steps": args.steps,
        "lr": args.lr,
        "train_seconds": round(seconds, 1),
        "params": sum(p.numel() for p in vae.parameters()),
        "final_usage": history[-1]["usage"],
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "val_frames": len(val),
        "generated": generated,
    }
    episodes = torch.from_numpy(val_episodes)
    counts = sorted({generated, len(config.scales)})
    for h in (int(x) for x in args.horizons.split(",")):
        scores = tokenizer_quality(vae, val, episodes, h, counts)
        for label, q in scores.items():
            record[f"h{h}.{label}"] = {k: round(v, 5) for k, v in q.as_dict().items()}
    print(json.dumps(record))
    if args.save:
        vae.save(args.save)


if __name__ == "__main__":
    main()
