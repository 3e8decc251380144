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

    python benchmarks/serve_closed_loop.py runs/f1/policy --episodes 10 --delays 1 2
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from f1kit.model import F1Policy
from f1kit.serve import PolicyClient, PolicyServer, ServedAgent
from f1kit.sim import EvalConfig, evaluate
from f1kit.sim.evaluate import wilson_interval
from flow import RTCConfig


class Recorder:
    """Wraps a policy; keeps every action, per episode, and counts predictions."""

    def __init__(self, policy: object) -> None:
        self.policy = policy
        self.episodes: list[list[np.ndarray]] = []

    def reset(self) -> None:
        self.policy.reset()
        self.episodes.append([])

    def select_action(self, observation: dict) -> np.ndarray:
        action = np.asarray(self.policy.select_action(observation), dtype=np.float32)
        self.episodes[-1].append(action)
        return action


def run_arm(name: str, agent: object, config: EvalConfig, extra: dict) -> dict:
    recorder = Recorder(agent)
    start = time.perf_counter()
    report = evaluate(recorder, config)
    wall = time.perf_counter() - start
    successes = sum(r.successes for r in report.tasks.values())
    n = sum(r.episodes for r in report.tasks.values())
    changes = np.concatenate(
        [np.abs(np.diff(np.stack(ep), axis=0)).mean(-1) for ep in recorder.episodes if len(ep) > 1]
    )
    record = {
        "name": f"serve_closed_loop/{name}",
        "success": successes / n,
        "ci95": wilson_interval(successes, n),
        "episodes": n,
        "per_task": {t: r.rate for t, r in report.tasks.items()},
        "action_change_mean": float(changes.mean()),
        "action_change_p95": float(np.percentile(changes, 95)),
        "wall_s": wall,
        **extra,
    }
    return record, recorder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", type=Path)
    p.add_argument(
        "--tasks", default="reach-v3,button-press-topdown-v3,drawer-open-v3,drawer-close-v3"
    )
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--delays", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    policy = F1Policy.from_pretrained(args.policy, seed=0)
    config = EvalConfig(
        tasks=tuple(args.tasks.split(",")),
        episodes=args.episodes,
        max_steps=args.max_steps,
        seed=args.seed,
        cameras=policy.cameras,
        size=args.image_size,
    )
    chunk = policy.model.config.action.chunk
    env = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": "cpu",
           "threads": args.threads, "policy": str(args.policy), "chunk": chunk}  # fmt: skip
    reference, ref_rec = run_arm("in_process", policy, config, env)
    print(json.dumps(reference), flush=True)
    with PolicyServer(F1Policy.from_pretrained(args.policy, seed=0), port=0) as server:
        with PolicyClient("127.0.0.1", server.port) as client:
            served, rec = run_arm("served", client, config, env)
        same = all(
            len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
            for a, b in zip(ref_rec.episodes, rec.episodes, strict=True)
        )
        print(json.dumps({**served, "actions_equal_in_process": same}), flush=True)
        for delay in args.delays:
            for arm in ("async", "rtc"):
                rtc = RTCConfig(delay=delay, horizon=chunk - 1) if arm == "rtc" else None
                with PolicyClient(
                    "127.0.0.1", server.port, threshold=0.75, rtc=rtc, delay_steps=delay
                ) as client:
                    record, _ = run_arm(f"{arm}/d{delay}", ServedAgent(client), config, env)
                    record.update(stalls=client.stalls, chunks_asked=client.requests)
                print(json.dumps(record), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
