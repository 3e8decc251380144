"""Policy server under load: N concurrent clients on loopback, chunk latency and throughput.

A tiny random-weight F1 (or No-Gen) policy is served on 127.0.0.1 in this process
(`f1kit.serve.PolicyServer`, one model, calls serialised); each of N client threads opens its own
connection and, for ``--seconds``, observes a fresh 64 px frame and asks for a chunk, as fast as
replies come. Per client count the record gives the round-trip latency of a chunk (observe +
predict, median, p99, spread), chunks per second over all clients, the server's own time per
chunk (``server_ms``, the model alone), and the errors, which must be 0: nothing is dropped
silently (a refused or lost request raises in the client and is counted). The peer is the same
run's single-client figure (``over_one_client``), for the server without and with batching
(``--batch-window-ms``: the predicts of the clients gathered into one model call).

    python benchmarks/serve_load.py                         # 1, 2, 4 clients, 10 s each
    python benchmarks/serve_load.py --clients 1 8 --seconds 20 --variant no_gen
    python benchmarks/serve_load.py --quick
"""

import statistics
import sys
import threading
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from f1kit.model import F1, F1Config, F1Policy  # noqa: E402
from f1kit.serve import PolicyClient, PolicyServer  # noqa: E402
from harness import emit, parse_args, timing_of  # noqa: E402


def extra(p) -> None:
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--variant", choices=("f1", "no_gen"), default="f1")
    p.add_argument(
        "--batch-window-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        help="server batching windows to compare (0: one call per request)",
    )


def observation(rng: np.random.Generator, state_dim: int) -> dict:
    return {
        "observation.images.corner": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=(state_dim,)).astype(np.float32),
        "task": "open the top drawer",
    }


def run_clients(port: int, count: int, seconds: float, state_dim: int) -> dict:
    """``count`` threads, each its own connection, chunk after chunk for ``seconds``."""
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def one(index: int) -> None:
        rng = np.random.default_rng(index)
        try:
            with PolicyClient("127.0.0.1", port, timeout=120.0) as client:
                client.predict_action_chunk(observation(rng, state_dim))  # warm this session
                start.wait()
                stop = time.perf_counter() + seconds
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    client.predict_action_chunk(observation(rng, state_dim))
                    with lock:
                        latencies.append((time.perf_counter() - t0) * 1e3)
                        server_ms.append(client.server_ms)
        except Exception as err:  # counted, never swallowed: the record reports every one
            with lock:
                errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "server_ms": server_ms, "errors": errors}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    if args.quick:
        args.clients, args.seconds, args.batch_window_ms = [2], 0.5, [0.0, 20.0]
    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available")
    torch.manual_seed(0)
    model = F1(F1Config.tiny(generation=args.variant == "f1")).to(args.device).eval()
    policy = F1Policy(model)
    state_dim = model.config.action.state_dim
    shapes = {"variant": args.variant, "image_size": 64, "chunk": model.config.action.chunk}
    for window in args.batch_window_ms:
        serve_all(args, policy, state_dim, shapes, window)


def serve_all(args, policy: F1Policy, state_dim: int, shapes: dict, window: float) -> None:
    """Every client count against one server with batching window ``window`` ms."""
    single = None
    mode = "unbatched" if window == 0 else f"batched{window:g}ms"
    with PolicyServer(policy, port=0, batch_window_ms=window) as server:
        for count in args.clients:
            out = run_clients(server.port, count, args.seconds, state_dim)
            lat = out["latencies"]
            if not lat:
                emit(f"serve_load/{args.variant}/{mode}/clients{count}", args, shapes, None,
                     errors=len(out["errors"]), error_messages=out["errors"][:5])  # fmt: skip
                continue
            timing = timing_of(lat)
            p99 = float(np.percentile(lat, 99))
            figures = {
                "clients": count,
                "chunks": len(lat),
                "chunks_per_s": len(lat) / args.seconds,
                "p50_ms": timing.median_ms,
                "p99_ms": p99,
                "server_ms_median": statistics.median(out["server_ms"]),
                "errors": len(out["errors"]),
                "error_messages": out["errors"][:5],
                "batch_window_ms": window,
                "mean_batch": (
                    None if server.batcher is None else float(np.mean(server.batcher.sizes))
                ),
            }
            if single is None:
                single = figures
            else:
                figures.update(
                    peer="clients1",
                    over_one_client_p50=timing.median_ms / single["p50_ms"],
                    over_one_client_throughput=figures["chunks_per_s"] / single["chunks_per_s"],
                )
            if server.batcher is not None:
                server.batcher.sizes.clear()
            emit(
                f"serve_load/{args.variant}/{mode}/clients{count}", args, shapes, timing, **figures
            )


if __name__ == "__main__":
    main()
