"""Closed loop through the policy server: in process vs served, and with a simulated delay,
plain asynchronous chunking against real-time chunking (RTC), on the same held-out layouts.

A saved policy is served in this process on 127.0.0.1 (`f1kit.serve.PolicyServer`) and
Meta-World is driven through `PolicyClient` (the ``[sim]`` extra is needed):

    in_process     `F1Policy.select_action` (execute n of c), the reference
    served         `PolicyClient.select_action`: the same over the wire (must equal in_process:
                   same layouts, same seeds, ``actions_equal`` compares every action)
    async/dD       observe + action with a delay of D env steps (a chunk asked for at step s is
                   used from s + D on), the new chunk replacing the plan where they overlap
    rtc/dD         the same, the new chunk sampled with the plan's remaining actions as an
                   RTC prefix (``RTCConfig(delay=D, horizon=chunk - 1)``)

Per arm: success over all episodes with its Wilson 95 % interval, the mean and 95th percentile of
|a_t - a_{t-1}| (the step-to-step action change; a chunk joining badly shows as a jump), the
chunks asked for and the stalls (steps where the plan ran dry and a real robot would idle).

    python benchmarks/serve_closed_loop.py --policy runs/f1/policy --episodes 10 --delays 1 2
    python benchmarks/serve_closed_loop.py --quick      # a random tiny policy, a few steps

The timed figure is the wall time of one env step (policy, wire and simulator), per arm.
"""

import logging
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from f1kit.model import F1, F1Config, F1Policy  # noqa: E402
from f1kit.serve import PolicyClient, PolicyServer, ServedAgent  # noqa: E402
from f1kit.sim import EvalConfig, evaluate  # noqa: E402  (sets MUJOCO_GL before MuJoCo loads)
from f1kit.sim.evaluate import wilson_interval  # noqa: E402
from flow import RTCConfig  # noqa: E402
from harness import emit, parse_args, timing_of  # noqa: E402


class Recorder:
    """Wraps a policy; keeps every action per episode and the wall time of every step."""

    def __init__(self, policy: object) -> None:
        self.policy = policy
        self.episodes: list[list[np.ndarray]] = []
        self.step_ms: list[float] = []

    def reset(self) -> None:
        self.policy.reset()
        self.episodes.append([])

    def select_action(self, observation: dict) -> np.ndarray:
        t0 = time.perf_counter()
        action = np.asarray(self.policy.select_action(observation), dtype=np.float32)
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        self.episodes[-1].append(action)
        return action


def extra(p) -> None:
    p.add_argument("--policy", type=Path, default=None, help="a saved policy (default: random)")
    p.add_argument(
        "--tasks", default="reach-v3,button-press-topdown-v3,drawer-open-v3,drawer-close-v3"
    )
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--delays", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threshold", type=float, default=0.5, help="ask at this chunk fraction")


def load(args) -> F1Policy:
    if args.policy is not None:
        return F1Policy.from_pretrained(args.policy, seed=0)
    torch.manual_seed(0)
    return F1Policy(F1(F1Config.tiny()).eval(), seed=0)


def run_arm(name: str, agent: object, config: EvalConfig, args, shapes: dict, after=None):
    """Evaluate ``agent``; emit its record (``after()``: figures read once the arm has run)."""
    recorder = Recorder(agent)
    report = evaluate(recorder, config, progress=False)
    extra = {} if after is None else after()
    successes = sum(r.successes for r in report.tasks.values())
    n = sum(r.episodes for r in report.tasks.values())
    changes = np.concatenate(
        [np.abs(np.diff(np.stack(ep), axis=0)).mean(-1) for ep in recorder.episodes if len(ep) > 1]
    )
    figures = {
        "arm": name,
        "success": successes / n,
        "ci95": wilson_interval(successes, n),
        "episodes": n,
        "per_task": {t: r.rate for t, r in report.tasks.items()},
        "action_change_mean": float(changes.mean()),
        "action_change_p95": float(np.percentile(changes, 95)),
        **extra,
    }
    timing = timing_of(recorder.step_ms)
    emit(f"serve_closed_loop/{name}", args, shapes, timing, **figures)
    return recorder


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    logging.basicConfig(level=logging.WARNING)
    if args.device != "cpu":
        raise SystemExit("--device: the closed loop runs the policy on the CPU here")
    if args.quick:
        args.tasks, args.episodes, args.max_steps, args.delays = "reach-v3", 1, 5, [1]
    policy = load(args)
    config = EvalConfig(
        tasks=tuple(args.tasks.split(",")),
        episodes=args.episodes,
        max_steps=args.max_steps,
        seed=args.seed,
        cameras=policy.cameras,
        size=args.image_size,
    )
    chunk = policy.model.config.action.chunk
    shapes = {
        "policy": str(args.policy or "random tiny F1"),
        "chunk": chunk,
        "execute": policy.model.config.action.execute,
        "tasks": list(config.tasks) if isinstance(config.tasks, tuple) else config.tasks,
        "episodes_per_task": args.episodes,
        "threshold": args.threshold,
    }
    reference = run_arm("in_process", policy, config, args, shapes)
    with PolicyServer(load(args), port=0) as server:
        with PolicyClient("127.0.0.1", server.port) as client:
            served = Recorder(client)  # the same arm over the wire: every action compared
            report = evaluate(served, config, progress=False)
        same = all(
            len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
            for a, b in zip(reference.episodes, served.episodes, strict=True)
        )
        n = sum(r.episodes for r in report.tasks.values())
        emit("serve_closed_loop/served", args, shapes, timing_of(served.step_ms), arm="served",
             success=sum(r.successes for r in report.tasks.values()) / n,
             actions_equal_in_process=same)  # fmt: skip
        for delay in args.delays:
            for arm in ("rtc",) if args.quick else ("async", "rtc"):
                rtc = (
                    RTCConfig(delay=min(delay, chunk - 1), horizon=chunk - 1)
                    if arm == "rtc"
                    else None
                )
                with PolicyClient(
                    "127.0.0.1", server.port, threshold=args.threshold, rtc=rtc, delay_steps=delay
                ) as client:

                    def counts(c=client, d=delay) -> dict:
                        return {"delay_steps": d, "stalls": c.stalls, "chunks_asked": c.requests}

                    run_arm(f"{arm}/d{delay}", ServedAgent(client), config, args, shapes, counts)


if __name__ == "__main__":
    main()
