"""A plain CNN behaviour-cloning baseline on Meta-World: the floor every policy here must beat.

What a robot-learning reader asks first (DESIGN.md s8): how well does a small image policy trained
on the same demos, for the same wall time, do on the same unseen layouts? This trains one:

* inputs: the current frame of one camera (default ``corner``) and ``observation.state`` (hand
  xyz, gripper), no instruction and no history;
* net: three strided convolutions (64 px -> 8 x 8 x 64), flattened and projected to 256 features,
  then an MLP on [features, normalised state] -> a chunk of ``--chunk`` actions (~1.2 M parameters
  at 64 px);
* loss: MSE (or L1) on actions normalised by f1kit's own processor (`WindowedDataset`'s
  ``preprocessor``, mean/std of the dataset's ``meta/stats.json``), padded chunk steps masked;
* training: batch 32, AdamW at a constant learning rate, every task drawn equally often (the
  recipes' ``weighting: task``), for ``--seconds`` of wall time and/or ``--steps``;
* evaluation: closed loop with f1kit's evaluator (`f1kit.sim.evaluate`) on ``--eval-episodes``
  unseen layouts per task at ``--eval-seed``; the whole chunk runs, then the policy re-plans
  (recipes/f1.yaml's ``execute: 4``).

Demos come from a dataset or run directory (``--demos runs/f1``: ``<run>/data/demos``) or are
generated with f1kit's expert (``--tasks ... --episodes N --seed S``, into a temporary folder).

    python benchmarks/bc_baseline.py --threads 1 \\
        --tasks reach-v3,button-press-topdown-v3,drawer-open-v3,drawer-close-v3 \\
        --episodes 20 --seed 0 --seconds 420 --eval-episodes 50 --eval-seed 20000
    python benchmarks/bc_baseline.py --demos runs/f1 --save runs/bc     # the main job's demos
    python benchmarks/bc_baseline.py --quick                            # smoke run (< 30 s)

JSON lines on stdout: ``bc_baseline/train`` (its timing: one training step), one
``bc_baseline/eval/<task>`` per task (its timing: one plan, i.e. a forward at batch 1) with the
successes, the 95 % Wilson interval (`f1kit.sim.wilson_interval`) and the per-episode successes
(in layout order, for paired comparisons), and ``bc_baseline/eval/mean``. A summary table goes to
stderr. ``--repeats`` / ``--warmup`` are the harness's and unused here.
"""

import json
import logging
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# benchmarks/flow.py is named like the `flow` package that f1kit imports: move this folder to the
# end of the import path so the package wins while `import harness` still finds the harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from jaxtyping import Float, UInt8  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm import tqdm  # noqa: E402

from f1kit.data import (  # noqa: E402
    Processor,
    RobotDataset,
    WeightedGroupSampler,
    WindowConfig,
    WindowedDataset,
    read_dataset,
)
from f1kit.data.processor import ACTION, STATE  # noqa: E402
from harness import dtype_of, emit, parse_args, timing_of  # noqa: E402

log = logging.getLogger("benchmarks.bc_baseline")


# --- the policy -----------------------------------------------------------------------------------


class ConvEncoder(nn.Module):
    """Strided convolutions (stride 8 overall), flattened and projected to ``width`` features.

    Flattening (rather than pooling) keeps where things are in the image: the goal of reach-v3
    is only a position.
    """

    def __init__(self, size: int, width: int = 256) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 3, size, size)).shape[1]
        self.proj = nn.Sequential(nn.Linear(flat, width), nn.ReLU())

    def forward(self, images: UInt8[Tensor, "b 3 H W"]) -> Float[Tensor, "b d"]:
        x = images.float() / 255.0 - 0.5
        return self.proj(self.convs(x))


class BCNet(nn.Module):
    """Image features and normalised state -> a chunk of ``chunk`` normalised actions."""

    def __init__(
        self, size: int, state_dim: int, action_dim: int, chunk: int, width: int = 256
    ) -> None:
        super().__init__()
        self.config = {
            "size": size,
            "state_dim": state_dim,
            "action_dim": action_dim,
            "chunk": chunk,
            "width": width,
        }
        self.encoder = ConvEncoder(size, width)
        self.head = nn.Sequential(
            nn.Linear(width + state_dim, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, chunk * action_dim),
        )
        self.chunk, self.action_dim = chunk, action_dim

    def forward(
        self, images: UInt8[Tensor, "b 3 H W"], state: Float[Tensor, "b s"]
    ) -> Float[Tensor, "b c a"]:
        x = torch.cat([self.encoder(images), state], dim=-1)
        return rearrange(self.head(x), "b (c a) -> b c a", c=self.chunk, a=self.action_dim)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class BCPolicy:
    """`BCNet` behind f1kit's policy interface: plan a chunk, run ``execute`` of it, re-plan.

    Normalisation is the dataset's processor pair (pre: state, post: actions). Every ``reset``
    opens an episode record (steps taken, ms per plan), from which the evaluator's per-task
    counts are split into per-episode successes.
    """

    def __init__(
        self,
        net: BCNet,
        preprocessor: Processor,
        postprocessor: Processor,
        camera: str,
        execute: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not 1 <= execute <= net.chunk:
            raise ValueError(f"execute: expected 1..chunk ({net.chunk}), got {execute}")
        self.net, self.pre, self.post = net.eval(), preprocessor, postprocessor
        self.key = f"observation.images.{camera}"
        self.execute, self.dtype = execute, dtype
        self.device = next(net.parameters()).device
        self.queue: deque[np.ndarray] = deque()
        self.episodes: list[dict[str, list[float] | int]] = []

    def reset(self) -> None:
        self.queue.clear()
        self.episodes.append({"steps": 0, "plan_ms": []})

    @torch.no_grad()
    def plan(self, observation: dict[str, object]) -> np.ndarray:
        """The next ``chunk`` actions (in the data's units) for one observation."""
        image = torch.from_numpy(np.asarray(observation[self.key]))
        images = rearrange(image, "H W c -> 1 c H W").to(self.device)
        state = torch.as_tensor(np.asarray(observation[STATE]), dtype=torch.float32)[None]
        state = self.pre({STATE: state.to(self.device)})[STATE]
        with _autocast(self.device, self.dtype):
            chunk = self.net(images, state).float()
        return self.post({ACTION: chunk})[ACTION][0].cpu().numpy()

    def select_action(self, observation: dict[str, object]) -> np.ndarray:
        if not self.episodes:
            raise RuntimeError("select_action before reset(): the evaluator starts each episode")
        record = self.episodes[-1]
        if not self.queue:
            start = time.perf_counter()
            self.queue.extend(self.plan(observation)[: self.execute])
            record["plan_ms"].append((time.perf_counter() - start) * 1e3)  # type: ignore[union-attr]
        record["steps"] += 1  # type: ignore[operator]
        return self.queue.popleft()


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


# --- demos, training, evaluation ------------------------------------------------------------------


def load_demos(
    demos: Path | None,
    tasks: str,
    episodes: int,
    seed: int,
    camera: str,
    size: int,
    max_steps: int,
    workers: int,
    scratch: Path,
) -> RobotDataset:
    """The dataset at ``demos`` (a LeRobot folder, or a run directory holding ``data/demos``), or
    f1kit's expert demos generated into ``scratch``."""
    if demos is not None:
        root = demos / "data" / "demos" if (demos / "data" / "demos").is_dir() else demos
        return read_dataset(root)
    from f1kit.sim import DemoConfig, generate_demos

    config = DemoConfig(
        tasks=tasks,
        episodes=episodes,
        cameras=(camera,),
        size=size,
        max_steps=max_steps,
        seed=seed,
        workers=workers,
    )
    result = generate_demos(config, scratch / "demos", progress=False)
    log.info(
        "demos: %d frames in %.0f s, failures %s", result.frames, result.seconds, result.failures
    )
    return read_dataset(scratch / "demos")


def window(data: RobotDataset, camera: str, chunk: int) -> WindowedDataset:
    """Samples of the current frame, normalised state and the next ``chunk`` normalised actions
    (F1's training window with a one-frame history), normalised by f1kit's processor."""
    config = WindowConfig(
        history=(0,), foresight=1, chunk=chunk, image_keys=(f"observation.images.{camera}",)
    )
    return WindowedDataset(data, config)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float  # mean of the last 50 steps
    step_ms: list[float]


def train(
    net: BCNet,
    data: WindowedDataset,
    *,
    seconds: float | None,
    steps: int | None,
    batch_size: int = 32,
    lr: float = 3e-4,
    loss: str = "mse",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> TrainResult:
    """AdamW on the masked MSE / L1 of normalised action chunks until ``seconds`` of wall time
    (data loading included) or ``steps`` steps, whichever comes first."""
    if seconds is None and steps is None:
        raise ValueError("train: give a wall-time budget (seconds), a step count (steps) or both")
    if loss not in ("mse", "l1"):
        raise ValueError(f"loss: expected 'mse' or 'l1', got {loss!r}")
    device = next(net.parameters()).device
    sampler = WeightedGroupSampler(
        data.groups("task"), mode="uniform", num_samples=batch_size * 1000, seed=seed
    )
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    net.train()
    losses, step_ms = [], []
    batches = iter(loader)
    bar = tqdm(total=steps, disable=not progress, desc="bc train", unit="step", file=sys.stderr)
    start = time.perf_counter()
    while (steps is None or len(losses) < steps) and (
        seconds is None or time.perf_counter() - start < seconds
    ):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:  # the sampler's generator continues: a fresh epoch of draws
            batches = iter(loader)
            batch = next(batches)
        images = batch["images"][:, 0].to(device)
        state, target = batch["state"].to(device), batch["action"].to(device)
        keep = (~batch["action_is_pad"]).to(device).float()[..., None]
        with _autocast(device, dtype):
            pred = net(images, state).float()
        err = (pred - target).pow(2) if loss == "mse" else (pred - target).abs()
        value = (err * keep).sum() / (keep.sum() * target.shape[-1])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(value.item())
        step_ms.append((time.perf_counter() - t0) * 1e3)
        bar.update(1)
        if len(losses) % 20 == 0:
            bar.set_postfix(
                loss=f"{np.mean(losses[-20:]):.4f}", s=f"{time.perf_counter() - start:.0f}"
            )
    wall = time.perf_counter() - start
    bar.close()
    net.eval()
    return TrainResult(len(losses), wall, float(np.mean(losses[-50:])), step_ms)


@dataclass
class TaskOutcome:
    task: str
    successes: int
    episodes: int
    ci_low: float
    ci_high: float
    mean_steps: float
    episode_success: list[bool]  # per layout, in f1kit's episode order (paired across policies)
    plan_ms: list[float]


def evaluate_policy(
    policy: BCPolicy,
    tasks: tuple[str, ...],
    *,
    episodes: int,
    seed: int,
    camera: str,
    size: int,
    max_steps: int,
    progress: bool = True,
) -> tuple[list[TaskOutcome], float]:
    """f1kit's closed-loop evaluation (unseen layouts at ``seed``), split into episodes."""
    from f1kit.sim import EvalConfig, evaluate

    config = EvalConfig(
        tasks=tasks,
        episodes=episodes,
        max_steps=max_steps,
        seed=seed,
        cameras=(camera,),
        size=size,
    )
    policy.episodes.clear()
    report = evaluate(policy, config, progress=progress)
    if len(policy.episodes) != len(config.tasks) * episodes:
        raise RuntimeError(
            f"evaluation: expected {len(config.tasks) * episodes} episodes, "
            f"the policy saw {len(policy.episodes)} resets"
        )
    outcomes = []
    for i, task in enumerate(config.tasks):
        result = report.tasks[task]
        records = policy.episodes[i * episodes : (i + 1) * episodes]
        outcomes.append(
            TaskOutcome(
                task,
                result.successes,
                result.episodes,
                result.ci_low,
                result.ci_high,
                result.mean_steps,
                list(result.outcomes),
                [ms for r in records for ms in r["plan_ms"]],  # type: ignore[union-attr]
            )
        )
    return outcomes, report.seconds


def task_names(data: RobotDataset) -> tuple[str, ...]:
    """The Meta-World task of each instruction the dataset holds."""
    from f1kit.sim import task_of

    unknown = [t for t in data.tasks if task_of(t) is None]
    if unknown:
        raise SystemExit(f"--demos: instructions {unknown} are not Meta-World tasks; pass --tasks")
    return tuple(task_of(t) for t in data.tasks)


def save(directory: Path, net: BCNet, data: WindowedDataset, camera: str, execute: int) -> None:
    """Weights (safetensors), the net's config and f1kit's processor pair, side by side."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu() for k, v in net.state_dict().items()}, directory / "model.safetensors"
    )
    config = {"kind": "bc_baseline", **net.config, "camera": camera, "execute": execute}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    data.preprocessor.save_pretrained(directory)
    data.postprocessor.save_pretrained(directory)


# --- the benchmark --------------------------------------------------------------------------------


def extra(p) -> None:
    p.add_argument(
        "--demos", type=Path, default=None, help="dataset or run dir (then --tasks/--size unused)"
    )
    p.add_argument(
        "--tasks", default="reach-v3,button-press-topdown-v3,drawer-open-v3,drawer-close-v3"
    )
    p.add_argument("--episodes", type=int, default=20, help="demos per task (generated)")
    p.add_argument("--seed", type=int, default=0, help="demo layouts and training")
    p.add_argument("--camera", default="corner")
    p.add_argument("--size", type=int, default=64, help="image side (generated demos)")
    p.add_argument("--max-steps", type=int, default=200, help="episode cap, demos and eval")
    p.add_argument("--workers", type=int, default=1, help="demo generation processes")
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--execute", type=int, default=None, help="actions run per plan (default chunk)")
    p.add_argument("--seconds", type=float, default=420.0, help="training wall-time budget")
    p.add_argument("--steps", type=int, default=None, help="training step cap")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--loss", choices=("mse", "l1"), default="mse")
    p.add_argument("--eval-episodes", type=int, default=50, help="unseen layouts per task")
    p.add_argument("--eval-seed", type=int, default=20_000)
    p.add_argument("--save", type=Path, default=None, help="save weights + processors here")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.quick:
        args.tasks, args.episodes, args.size = "reach-v3", 1, 32
        args.seconds, args.steps, args.eval_episodes = None, 3, 1
    try:
        from f1kit.sim import load_simulator, resolve_tasks

        load_simulator()
    except ImportError as err:
        emit("bc_baseline", args, {}, None, skipped=f"Meta-World not installed: {err}")
        return
    if args.demos is None and args.eval_seed == args.seed:
        raise SystemExit(f"--eval-seed: must differ from the demo --seed ({args.seed})")
    torch.manual_seed(args.seed)
    dtype = dtype_of(args.dtype)
    execute = args.execute or args.chunk
    scratch = Path(tempfile.mkdtemp(prefix="f1kit-bc-"))
    try:
        demos = load_demos(
            args.demos,
            args.tasks,
            args.episodes,
            args.seed,
            args.camera,
            args.size,
            args.max_steps,
            args.workers,
            scratch,
        )
        tasks = task_names(demos) if args.demos is not None else resolve_tasks(args.tasks)
        data = window(demos, args.camera, args.chunk)
        _, _, height, width = data[0]["images"].shape
        if height != width:
            raise SystemExit(f"images: expected square frames, got {height} x {width}")
        state_dim, action_dim = data[0]["state"].shape[-1], data[0]["action"].shape[-1]
        net = BCNet(height, state_dim, action_dim, args.chunk).to(args.device)
        params = parameter_count(net)
        shapes = {
            "image": [3, height, width],
            "camera": args.camera,
            "state": state_dim,
            "chunk": [args.chunk, action_dim],
            "execute": execute,
            "batch": args.batch,
            "frames": len(data),
            "demos": demos.num_episodes,
        }
        log.info(
            "%d frames of %d demos, %s; %.2f M parameters",
            len(data),
            demos.num_episodes,
            tasks,
            params / 1e6,
        )

        result = train(
            net,
            data,
            seconds=args.seconds,
            steps=args.steps,
            batch_size=args.batch,
            lr=args.lr,
            loss=args.loss,
            seed=args.seed,
            dtype=dtype,
            progress=not args.quick,
        )
        common = {
            "params": params,
            "train_seconds": result.seconds,
            "train_steps": result.steps,
            "demo_seed": args.seed if args.demos is None else None,
            "demos_path": str(args.demos) if args.demos is not None else None,
            "eval_seed": args.eval_seed,
            "loss": args.loss,
            "lr": args.lr,
        }
        emit(
            "bc_baseline/train",
            args,
            shapes,
            timing_of(result.step_ms),
            **common,
            final_loss=result.final_loss,
            samples_per_s=result.steps * args.batch / result.seconds,
        )
        if args.save is not None:
            save(args.save, net, data, args.camera, execute)

        policy = BCPolicy(net, data.preprocessor, data.postprocessor, args.camera, execute, dtype)
        outcomes, eval_seconds = evaluate_policy(
            policy,
            tasks,
            episodes=args.eval_episodes,
            seed=args.eval_seed,
            camera=args.camera,
            size=height,
            max_steps=args.max_steps,
            progress=sys.stdout.isatty() and not args.quick,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    for o in outcomes:
        emit(
            f"bc_baseline/eval/{o.task}",
            args,
            shapes,
            timing_of(o.plan_ms),
            **common,
            task=o.task,
            successes=o.successes,
            episodes=o.episodes,
            rate=o.successes / o.episodes,
            ci_low=o.ci_low,
            ci_high=o.ci_high,
            mean_steps=o.mean_steps,
            max_steps=args.max_steps,
            episode_success=o.episode_success,
        )
    rates = [o.successes / o.episodes for o in outcomes]
    emit(
        "bc_baseline/eval/mean",
        args,
        shapes,
        timing_of([ms for o in outcomes for ms in o.plan_ms]),
        **common,
        tasks=list(tasks),
        mean_rate=float(np.mean(rates)),
        successes=sum(o.successes for o in outcomes),
        episodes=sum(o.episodes for o in outcomes),
        eval_seconds=eval_seconds,
    )
    lines = [f"{'task':<28} {'success':>9}  95% Wilson"]
    lines += [
        f"{o.task:<28} {o.successes:>4}/{o.episodes:<4}  [{o.ci_low:.2f}, {o.ci_high:.2f}]"
        for o in outcomes
    ]
    lines.append(
        f"{'mean':<28} {float(np.mean(rates)):>9.3f}  ({result.steps} steps in "
        f"{result.seconds:.0f} s, {params / 1e6:.2f} M params, eval {eval_seconds:.0f} s)"
    )
    sys.stderr.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
