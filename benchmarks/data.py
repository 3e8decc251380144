"""Meta-World demo generation and the F1 training-window loader on CPU.

Records (one JSON line each):

* ``demo_generation``: expert demos with cameras, frames/s; peer: the same demos without
  rendering (the simulator + expert alone).
* ``demo_generation_parallel`` (not with --quick): the same with two spawned workers; peer: one.
* ``render``: one camera frame at the fast settings (no MSAA, shadows, reflections), ms/frame;
  peer: MuJoCo's default settings on the same scene (DESIGN.md s8: 70-100 ms at defaults).
* ``frame_decode``: reading every frame of the generated dataset, PNG-in-parquet (our storage) vs
  H.264 MP4 (LeRobot's video storage), ms/frame; this is the measurement behind the PNG choice.
* ``window_loader``: batches of F1 windows (4 history frames, current, foresight, chunk of 4
  actions) from the in-memory uint8 cache, samples/s; peers: lazy PNG decoding, and one training
  step (forward + backward + AdamW) of a 1.6 M-parameter CNN behaviour-cloning policy on the same
  batch: loading must stay well below it.
* ``lazy_loader`` (no simulator needed): windows at 256 px (``--lazy-size``) from a dataset read
  with ``decode="lazy"`` (PNG cameras, and MP4 cameras decoded an episode at a time), with the
  tokenizer's codes standing in for history and foresight frames as in training, through a
  DataLoader with 0 and 2 workers, ms per batch; peer: one training step of the CNN BC policy at
  that size on the same batch (``load_fraction_of_step`` < 1: the loader keeps up).

    python benchmarks/data.py            # MT10-like: 3 tasks x 3 demos at 64 px
    python benchmarks/data.py --quick    # 1 task x 1 demo at 32 px (< 20 s)
"""

import logging
import shutil
import sys
import tempfile
from pathlib import Path

# benchmarks/flow.py is named like the `flow` package that f1kit.data imports: move this folder to
# the end of the import path so the package wins while `import harness` still finds the harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from f1kit.data import (  # noqa: E402
    Episode,
    WeightedGroupSampler,
    WindowConfig,
    WindowedDataset,
    has_video_codec,
    read_dataset,
    write_dataset,
)
from harness import emit, measure, parse_args  # noqa: E402


def extra(p) -> None:
    p.add_argument("--size", type=int, default=None, help="image side (default 64, quick 32)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lazy-size", type=int, default=None, help="lazy_loader side (256, quick 64)")
    p.add_argument("--lazy-only", action="store_true", help="only the lazy_loader records")


def bc_policy(size: int) -> nn.Module:
    """A plain CNN behaviour-cloning net (~1.6 M parameters at 64 px): DESIGN.md s8's reference."""
    feat = 64 * (size // 8) ** 2
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, 2, 2),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(feat, 384),
        nn.ReLU(),
        nn.Linear(384, 16),
    )


def bc_step(net: nn.Module, opt: torch.optim.Optimizer, batch: dict) -> None:
    """One training step of the BC policy on a window batch (the loader's peer)."""
    images = batch["images"][:, 0].float() / 255.0
    loss = (net(images) - batch["action"].flatten(1)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def synthetic_episodes(episodes: int, length: int, size: int, seed: int = 0) -> list[Episode]:
    """Camera frames with a textured background and moving blocks (PNG compresses them about as
    well as rendered scenes), 4-d state and action."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(episodes):
        background = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        frames = np.repeat(background[None], length, axis=0)
        block = size // 8
        for i in range(length):
            x = (e * 13 + i * 2) % (size - block)
            frames[i, size // 3 : size // 3 + block, x : x + block] = (200, 40 + e, 30)
            frames[i, x // 2 : x // 2 + block, size // 2 : size // 2 + block] = (30, 180, 220)
        state = rng.normal(size=(length, 4)).astype(np.float32)
        action = rng.normal(size=(length, 4)).astype(np.float32)
        arrays = {"observation.state": state, "action": action, "observation.images.cam": frames}
        out.append(Episode(f"task {e % 3}", arrays))
    return out


def lazy_loader(args, tmp: Path) -> None:
    """The lazy reader through a DataLoader at 256 px against one training step."""
    size = args.lazy_size or (64 if args.quick else 256)
    (episodes, length), b = ((4, 30) if args.quick else (24, 120)), args.batch
    source = synthetic_episodes(episodes, length, size)
    window = WindowConfig(chunk=4, image_keys=("observation.images.cam",))
    net = bc_policy(size)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    storages = ["png"] + (["video"] if has_video_codec() else [])
    for storage in storages:
        root = write_dataset(tmp / f"lazy-{storage}", source, fps=10, images=storage)
        ds = read_dataset(root, decode="lazy")
        codes = [np.zeros((len(ds), 30), dtype=np.int16)]  # codes replace history/foresight
        data = WindowedDataset(ds, window, codes=codes)
        # The peer step first, while no loader worker runs beside it.
        batch = next(iter(DataLoader(data, batch_size=b, shuffle=True)))
        step = measure(lambda b0=batch: bc_step(net, opt, b0), "cpu", args.repeats, args.warmup)
        for workers in (0, 2):
            sampler = WeightedGroupSampler(data.groups("task"), num_samples=10**6, seed=0)
            loader = DataLoader(
                data, batch_size=b, sampler=sampler, num_workers=workers,
                persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
            )  # fmt: skip
            it = iter(loader)
            next(it)
            load = measure(lambda it=it: next(it), "cpu", args.repeats, args.warmup)
            encoded = sum(len(x) for x in ds._encoded.get("observation.images.cam", []))
            emit(
                "lazy_loader",
                args,
                {
                    "storage": storage,
                    "workers": workers,
                    "batch": b,
                    "size": size,
                    "dataset_frames": len(ds),
                    "codes": True,
                },
                load,
                samples_per_s=b / (load.median_ms / 1e3),
                encoded_bytes_in_memory=encoded,
                decoded_bytes_if_eager=len(ds) * size * size * 3,
                peer=f"train step of the CNN BC policy at {size} px on the same batch",
                peer_train_step_ms=step.median_ms,
                load_fraction_of_step=load.median_ms / step.median_ms,
            )
            del it, loader


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    logging.basicConfig(level=logging.WARNING)
    if args.device != "cpu":
        logging.warning("data benchmarks run on the CPU; --device %s ignored", args.device)
        args.device = "cpu"
    scratch = Path(tempfile.mkdtemp(prefix="f1kit-bench-lazy-"))
    try:
        lazy_loader(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.lazy_only:
        return
    try:
        from f1kit.sim import DemoConfig, MetaWorldEnv, generate_demos, load_simulator

        _, mujoco = load_simulator()
    except ImportError as err:
        emit("data", args, {}, None, skipped=f"Meta-World not installed: {err}")
        return
    size = args.size or (32 if args.quick else 64)
    tasks = (
        ("reach-v3",) if args.quick else ("reach-v3", "drawer-open-v3", "button-press-topdown-v3")
    )
    episodes = 1 if args.quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="f1kit-bench-"))

    # Demo generation, with and without cameras (one in-process worker: a per-core figure).
    config = DemoConfig(tasks=tasks, episodes=episodes, size=size, seed=0, workers=1)
    result = {}

    def generate() -> None:
        result["r"] = generate_demos(config, tmp / "demos", progress=False, overwrite=True)

    timing = measure(generate, "cpu", repeats=1, warmup=0)
    frames = result["r"].frames
    blind = DemoConfig(tasks=tasks, episodes=episodes, cameras=(), seed=0, workers=1)
    peer = measure(lambda: generate_demos(blind, progress=False), "cpu", repeats=1, warmup=0)
    emit(
        "demo_generation",
        args,
        {"tasks": len(tasks), "episodes": episodes, "size": size, "frames": frames, "workers": 1},
        timing,
        frames_per_s=frames / (timing.median_ms / 1e3),
        peer="same demos without rendering",
        peer_frames_per_s=frames / (peer.median_ms / 1e3),
    )

    if not args.quick:  # spawned workers import torch + Meta-World: too slow for --quick
        par = DemoConfig(tasks=tasks, episodes=episodes, size=size, seed=0, workers=2)
        timing2 = measure(lambda: generate_demos(par, progress=False), "cpu", repeats=1, warmup=0)
        emit(
            "demo_generation_parallel",
            args,
            {
                "tasks": len(tasks),
                "episodes": episodes,
                "size": size,
                "frames": frames,
                "workers": 2,
            },
            timing2,
            frames_per_s=frames / (timing2.median_ms / 1e3),
            peer="one in-process worker (demo_generation)",
            peer_frames_per_s=frames / (timing.median_ms / 1e3),
        )

    # One frame: fast settings vs MuJoCo defaults on the same scene.
    with MetaWorldEnv("drawer-open-v3", ("corner",), size) as env:
        env.reset(seed=1)
        fast = measure(env.render, "cpu", args.repeats, args.warmup)
        model, data = env._env.model, env._env.data
        model.vis.quality.offsamples = 4
        default = mujoco.Renderer(model, size, size)

        def render_default() -> None:
            default.update_scene(data, camera="corner")
            default.render()

        slow = measure(render_default, "cpu", max(1, args.repeats // 4), 0 if args.quick else 1)
        default.close()
    emit(
        "render",
        args,
        {"size": size, "cameras": 1},
        fast,
        ms_per_frame=fast.median_ms,
        peer="MuJoCo default render settings",
        peer_ms_per_frame=slow.median_ms,
    )

    # Decoding the stored frames: PNG in parquet vs H.264 MP4.
    ds = read_dataset(tmp / "demos")
    n = len(ds)
    if has_video_codec():
        episodes_back = [ds.episode(i) for i in range(ds.num_episodes)]
        write_dataset(tmp / "video", episodes_back, fps=ds.fps, images="video")
        png = measure(lambda: read_dataset(tmp / "demos"), "cpu", 3 if args.quick else 5, 1)
        mp4 = measure(lambda: read_dataset(tmp / "video"), "cpu", 3 if args.quick else 5, 1)
        png_bytes = sum(f.stat().st_size for f in (tmp / "demos" / "data").rglob("*.parquet"))
        mp4_bytes = sum(f.stat().st_size for f in (tmp / "video").rglob("*.mp4"))
        emit(
            "frame_decode",
            args,
            {"frames": n, "size": size},
            png,
            ms_per_frame=png.median_ms / n,
            bytes_per_frame=png_bytes / n,
            peer="H.264 MP4 (LeRobot video storage), whole dataset read",
            peer_ms_per_frame=mp4.median_ms / n,
            peer_bytes_per_frame=mp4_bytes / n,
        )
    else:
        emit("frame_decode", args, {"frames": n}, None, skipped="PyAV with libx264 not installed")

    # Windowed batches vs one CPU training step on the same batch.
    window = WindowConfig(chunk=4)
    eager = WindowedDataset(ds, window)
    lazy = WindowedDataset(read_dataset(tmp / "demos", decode="lazy"), window)
    b = args.batch

    def loader(data: WindowedDataset):
        sampler = WeightedGroupSampler(data.groups("task"), num_samples=10**6, seed=0)
        return iter(DataLoader(data, batch_size=b, sampler=sampler))

    it_eager, it_lazy = loader(eager), loader(lazy)
    load = measure(lambda: next(it_eager), "cpu", args.repeats, args.warmup)
    load_lazy = measure(lambda: next(it_lazy), "cpu", args.repeats, args.warmup)
    net = bc_policy(size)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    batch = next(it_eager)

    step = measure(lambda: bc_step(net, opt, batch), "cpu", args.repeats, args.warmup)
    params = sum(p.numel() for p in net.parameters())
    emit(
        "window_loader",
        args,
        {
            "batch": b,
            "history": list(window.history),
            "chunk": window.chunk,
            "size": size,
            "dataset_frames": n,
        },
        load,
        samples_per_s=b / (load.median_ms / 1e3),
        lazy_png_samples_per_s=b / (load_lazy.median_ms / 1e3),
        peer=f"train step of a {params / 1e6:.2f} M-param CNN BC policy on the same batch",
        peer_train_step_ms=step.median_ms,
        load_fraction_of_step=load.median_ms / step.median_ms,
    )

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
