"""Does the foresight tokenizer see what matters? Train one configuration, score held-out frames.

Trains a `MultiScaleVQVAE` on every frame of ``--train`` (a LeRobot dataset, e.g. a run's
``data/demos`` or ``f1kit demos`` output) for ``--steps`` and scores the frames of ``--val``
(held-out episodes, other layouts) with `foresight.quality`, at the dataset's image size (a
smaller tokenizer's reconstruction is upsampled bilinearly):

* ``scales_<k>``: the future frame x_{t+h} reconstructed from all scales, and from the first
  ``--generated`` scales (what F1 generates at inference);
* ``copy``: the current frame x_t standing in for x_{t+h} (the no-foresight reference). A
  tokenizer whose reconstruction of x_{t+h} is no better than the copy on the pixels that move
  (``motion_mse``) cannot carry the change to the policy.

One JSON line (harness conventions; the timing is the median training step) per configuration: the
config, steps, train seconds, and for each horizon the three scores. ``--quick`` writes two tiny
synthetic datasets (a moving square) and trains a tiny tokenizer for a few steps. Example (the
main job's 32 px tokenizer)::

    .venv/bin/python benchmarks/tokenizer_quality.py --train runs/f1/data/demos --val /tmp/val \\
        --config '{"image_size": 32, "channel_mult": [1, 2, 2, 4], "depth": 1, "channels": 16,
                   "norm_groups": 8, "vocab_size": 256, "attention": false,
                   "mid_attention": false, "scales": [1, 2, 3, 4]}' --steps 150
"""

import itertools
import json
import sys
import tempfile
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

from f1kit.data import Episode, read_dataset, write_dataset  # noqa: E402
from foresight import (  # noqa: E402
    MultiScaleVQVAE,
    TokenizerTrainConfig,
    VQVAEConfig,
    tokenizer_quality,
    train_tokenizer,
)
from harness import emit, parse_args, timing_of  # noqa: E402

QUICK_CONFIG = {
    "image_size": 16, "channels": 8, "channel_mult": [1, 1, 2], "depth": 1, "latent_dim": 8,
    "vocab_size": 32, "scales": [1, 2, 4], "phi_count": 2, "norm_groups": 4,
    "attention": False, "mid_attention": False,
}  # fmt: skip


def extra(p) -> None:
    p.add_argument("--train", default=None, help="LeRobot dataset to train on")
    p.add_argument("--val", default=None, help="LeRobot dataset of held-out episodes")
    p.add_argument("--camera", default=None)
    p.add_argument("--config", default="{}", help="VQVAEConfig fields as JSON")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kmeans", type=int, default=5)
    p.add_argument("--generated", type=int, default=4, help="scales F1 generates")
    p.add_argument("--horizons", default="3,8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the trained tokenizer here")


def synthetic(root: Path, episodes: int, seed: int) -> str:
    """A square moving across a grey 32 px frame, one episode per start position."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(episodes):
        frames = np.full((12, 32, 32, 3), 100, np.uint8)
        x0, y0 = rng.integers(0, 20, size=2)
        for t in range(12):
            frames[t, y0 : y0 + 6, x0 + t : x0 + t + 6] = (200, 40, 40)
        state = np.zeros((12, 2), np.float32)
        eps.append(Episode("move", {"observation.state": state, "action": state.copy(),
                                    "observation.images.cam": frames}))  # fmt: skip
    write_dataset(root, eps, fps=10)
    return str(root)


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
    args = parse_args(__doc__.splitlines()[0], extra)
    scratch = tempfile.TemporaryDirectory()
    if args.quick:
        args.train = synthetic(Path(scratch.name) / "train", 4, 0)
        args.val = synthetic(Path(scratch.name) / "val", 2, 1)
        args.config, args.steps, args.batch, args.horizons = json.dumps(QUICK_CONFIG), 3, 4, "3"
    elif args.train is None or args.val is None:
        raise SystemExit("--train and --val: LeRobot datasets are required (or --quick)")
    torch.manual_seed(args.seed)
    train, _ = frames_of(args.train, args.camera)
    val, val_episodes = frames_of(args.val, args.camera)
    config = VQVAEConfig(**json.loads(args.config))
    vae = MultiScaleVQVAE(config).to(args.device)
    rng = torch.Generator().manual_seed(args.seed)

    def batches():
        while True:
            idx = torch.randint(0, len(train), (args.batch,), generator=rng)
            yield resize(train[idx], config.image_size)

    stamps = [time.perf_counter()]
    began = stamps[0]
    history = train_tokenizer(
        vae,
        batches(),
        config=TokenizerTrainConfig(
            steps=args.steps, lr=args.lr, seed=args.seed, kmeans_init_rounds=args.kmeans
        ),
        callback=lambda *_: stamps.append(time.perf_counter()),
        progress=not args.quick,
    )
    seconds = time.perf_counter() - began
    generated = min(args.generated, len(config.scales))
    figures = {
        "config": asdict(config),
        "steps": args.steps,
        "lr": args.lr,
        "train_seconds": round(seconds, 1),
        "params": sum(p.numel() for p in vae.parameters()),
        "final_usage": history[-1]["usage"],
        "val_frames": len(val),
        "generated": generated,
    }
    episodes = torch.from_numpy(val_episodes)
    counts = sorted({generated, len(config.scales)})
    for h in (int(x) for x in args.horizons.split(",")):
        scores = tokenizer_quality(vae, val.to(args.device), episodes, h, counts)
        for label, q in scores.items():
            figures[f"h{h}.{label}"] = {k: round(v, 5) for k, v in q.as_dict().items()}
    steps_ms = [(b - a) * 1e3 for a, b in itertools.pairwise(stamps)]
    shapes = {"batch": args.batch, "image_size": config.image_size, "frames": list(val.shape)}
    emit("tokenizer.quality", args, shapes, timing_of(steps_ms), **figures)
    if args.save:
        vae.save(args.save)
    scratch.cleanup()


if __name__ == "__main__":
    main()
