"""Flow-matching head: chunk-sampling latency, native vs torchdiffeq solvers; training throughput.

Sampling: one 50 x 32 action chunk (pi0's chunk and padded action dim), 1 / 5 / 10 steps, for
each method both backends run on the same network and noise; the peer figure is torchdiffeq's
latency and ``overhead`` = torchdiffeq / native. On CUDA a native solve is also captured in a
CUDA graph and replayed (launch-bound small chunks are its target, DESIGN.md section 6).
Solver overhead: the same solves on a near-free velocity field (x * -0.5), per-step cost of
each backend without the network.
Training: forward + backward + AdamW step of the masked flow-matching loss, chunks/s.

    .venv/bin/python benchmarks/flow.py [--quick] [--device cuda] [--dtype bfloat16]
"""

import logging
import sys
from pathlib import Path

# This script is named like the package it measures: move its folder to the end of the import
# path so `import flow` finds the package while `import harness` still finds the shared harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import torch  # noqa: E402

from flow import FlowHeadConfig, FlowMatchingHead, ODESolver, TransformerVelocityNet  # noqa: E402
from harness import dtype_of, emit, measure, parse_args  # noqa: E402

log = logging.getLogger("benchmarks.flow")


def extra(p) -> None:
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--action-dim", type=int, default=32)
    p.add_argument("--train-batch", type=int, default=32)


def build(args) -> FlowMatchingHead:
    torch.manual_seed(0)
    cfg = FlowHeadConfig(action_dim=args.action_dim, chunk=args.chunk, width=args.width)
    net = TransformerVelocityNet(args.width, depth=args.depth, heads=args.heads)
    return FlowMatchingHead(cfg, net).to(device=args.device, dtype=dtype_of(args.dtype))


def bench_sampling(args, head: FlowMatchingHead, shapes: dict) -> None:
    noise = torch.randn(
        1, args.chunk, args.action_dim, device=args.device, dtype=dtype_of(args.dtype)
    )
    steps_list = (1, 5) if args.quick else (1, 5, 10)
    methods = ("euler", "midpoint") if args.quick else ("euler", "midpoint", "rk4")
    head.eval()
    for method in methods:
        for steps in steps_list:
            timings = {}
            for backend in ("native", "torchdiffeq"):
                solver = ODESolver(method, steps, backend=backend)

                def run(solver: ODESolver = solver) -> None:
                    with torch.no_grad():
                        head.sample(1, noise=noise, solver=solver)

                timings[backend] = measure(run, args.device, args.repeats, args.warmup)
            nfe = steps * {"euler": 1, "midpoint": 2, "rk4": 4}[method]
            native, peer = timings["native"], timings["torchdiffeq"]
            emit(
                "flow.sample",
                args,
                {**shapes, "method": method, "steps": steps, "nfe": nfe},
                native,
                ms_per_chunk=native.median_ms,
                ms_per_nfe=native.median_ms / nfe,
                peer="torchdiffeq.odeint",
                peer_ms_per_chunk=peer.median_ms,
                peer_iqr_ms=peer.iqr_ms,
                overhead=peer.median_ms / native.median_ms,
            )
    bench_cuda_graph(args, head, noise, shapes)
    bench_solver_overhead(args, noise, shapes, steps_list, methods)


def bench_solver_overhead(args, noise: torch.Tensor, shapes: dict, steps_list, methods) -> None:
    """The solvers alone: a near-free velocity field isolates each backend's per-step cost."""
    decay = torch.tensor(-0.5, device=noise.device, dtype=noise.dtype)

    def velocity(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return x * decay

    for method in methods:
        steps = max(steps_list)
        timings = {}
        for backend in ("native", "torchdiffeq"):
            solver = ODESolver(method, steps, backend=backend)

            def run(solver: ODESolver = solver) -> None:
                solver(velocity, noise)

            timings[backend] = measure(run, args.device, args.repeats, args.warmup)
        native, peer = timings["native"], timings["torchdiffeq"]
        emit(
            "flow.solver_overhead",
            args,
            {"chunk": args.chunk, "action_dim": args.action_dim, "method": method, "steps": steps},
            native,
            us_per_step=native.median_ms * 1e3 / steps,
            peer="torchdiffeq.odeint",
            peer_us_per_step=peer.median_ms * 1e3 / steps,
            overhead=peer.median_ms / native.median_ms,
        )


def bench_cuda_graph(args, head: FlowMatchingHead, noise: torch.Tensor, shapes: dict) -> None:
    if torch.device(args.device).type != "cuda":
        log.warning("flow.sample_cuda_graph: skipped, needs a CUDA device (got %s)", args.device)
        emit("flow.sample_cuda_graph", args, shapes, None, skipped="needs a CUDA device")
        return
    solver = ODESolver("euler", 10)
    static = noise.clone()
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                head.sample(1, noise=static, solver=solver)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            head.sample(1, noise=static, solver=solver)
        eager = measure(
            lambda: head.sample(1, noise=static, solver=solver),
            args.device,
            args.repeats,
            args.warmup,
        )
    graphed = measure(graph.replay, args.device, args.repeats, args.warmup)
    emit(
        "flow.sample_cuda_graph",
        args,
        {**shapes, "method": "euler", "steps": 10},
        graphed,
        ms_per_chunk=graphed.median_ms,
        peer="eager native euler",
        peer_ms_per_chunk=eager.median_ms,
        speedup=eager.median_ms / graphed.median_ms,
    )


def bench_training(args, head: FlowMatchingHead, shapes: dict) -> None:
    dtype = dtype_of(args.dtype)
    g = torch.Generator(device=args.device).manual_seed(0)
    b = args.train_batch
    actions = torch.randn(b, args.chunk, args.action_dim, device=args.device, dtype=dtype)
    chunk_mask = torch.ones(b, args.chunk, dtype=torch.bool, device=args.device)
    chunk_mask[: b // 4, args.chunk // 2 :] = False  # some episodes end inside the chunk
    action_mask = torch.arange(args.action_dim, device=args.device) < max(1, args.action_dim // 4)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)
    head.train()

    def step() -> None:
        loss = head.loss(actions, generator=g, action_mask=action_mask, chunk_mask=chunk_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = measure(step, args.device, args.repeats, args.warmup)
    emit(
        "flow.train_step",
        args,
        {**shapes, "batch": b},
        t,
        chunks_per_s=b / (t.median_ms / 1e3),
        action_tokens_per_s=b * args.chunk / (t.median_ms / 1e3),
        params=sum(p.numel() for p in head.parameters()),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(__doc__.splitlines()[0], extra)
    if args.quick:
        args.width, args.depth, args.heads, args.train_batch = 64, 1, 2, 4
        if args.device == "cpu":
            # Tiny ops only pay a second thread's sync; on a shared 2-core box (CI, other jobs)
            # 2 threads measured ~200 ms per velocity call against ~1 ms with one.
            torch.set_num_threads(1)
    head = build(args)
    shapes = {
        "chunk": args.chunk,
        "action_dim": args.action_dim,
        "width": args.width,
        "depth": args.depth,
        "heads": args.heads,
    }
    bench_sampling(args, head, shapes)
    bench_training(args, head, shapes)


if __name__ == "__main__":
    main()
