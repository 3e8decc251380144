"""F1 end-to-end inference latency by phase (one `predict_action_chunk`), F1 against No-Gen,
eager, compiled and captured (CUDA graphs).

One chunk at batch 1, the phases timed one by one on the same inputs (random weights: speed does
not depend on them; random uint8 frames):

    history_codes  the tokenizer on the 4 history frames of the generation camera. `F1Policy`
                   keeps the codes of frames it has encoded, but with offsets -9/-6/-3/0 and
                   a re-plan every 4 (or 50) steps consecutive calls share no frame, so a
                   closed loop pays this phase on every chunk too
    prefix         `F1.encode_prefix`: vision encoder, instruction embedding, and (F1) the
                   temporal aggregation of the history codes into history tokens
    foresight      `F1.foresee`: the prefix pass filling the KV cache, then K = 4 generated
                   scales appended to it; No-Gen: `F1.start`, the prefix pass alone
    action         `F1.act`: 10 Euler steps of the flow head, each reading the cache
    total          history codes + `F1.predict`, timed as one call

Modes (``--modes``; `f1kit.model.engine.Engine` runs the trunk of every step):

    eager      the trunk as it is, KV caches kept across calls
    compiled   ``torch.compile(fullgraph=True, dynamic=False)``: one graph per step signature
    captured   the same with ``mode="reduce-overhead"``: each step's graph replayed as a CUDA
               graph (CUDA only)

Every total record counts, over one whole chunk after its first call, ``host_syncs``:
Python-level reads of tensor values on the host (`f1kit.host_reads`; the history codes come from
the model's own tokenizer, as in `F1Policy`, so ``predict`` skips their range check), and on
CUDA ``cuda_syncs``: the
synchronising CUDA calls `torch.cuda.set_sync_debug_mode` reports; ``graph_breaks`` and
``graphs`` come from dynamo's counters (compiled modes; a break would raise under fullgraph).
``compile_s`` is the first call's time (tracing and code generation) and ``eager_median_ms``
the eager figure of the same variant and cameras in this run.

The peer is the No-Gen ablation (`generation: null`, the pi0-like reactive policy) with U and A
experts of the same sizes; ``f1_over_no_gen`` = F1 total / No-Gen total (per phase too, where
No-Gen has the phase). Each total record also says whether the phased path reproduced
`F1.predict`'s chunk exactly (same seeds, same noise).

Sizes: ``--size tiny`` is `F1Config.tiny()` on 64 px frames (float32, the CPU default);
``--size paper`` is `F1Config.paper()` (SigLIP-shaped ViT, Gemma-2B U, 1024-wide G and A, VAR's
256 px tokenizer, a 50 x 32 chunk), built in bfloat16 directly on the GPU: CUDA only. Frames are
fed at the tokenizer's size (256 px for paper; the vision encoder resizes them to 224).
Reference (DESIGN.md s6): F1 235 ms per chunk on an RTX 4090 with 3 cameras.

Memory: on CUDA ``peak_mem_mb`` is ``torch.cuda.max_memory_allocated`` over the timed calls, one
model resident at a time, so it includes the weights (``weights_mb``). On CPU ``peak_mem_mb`` is
the process's RSS high-water mark (the harness's) and ``rss_delta_mb`` the resident set after the
timed totals minus before the model was built (weights plus what the allocator kept).

    python benchmarks/f1_inference.py                                 # tiny, CPU, 1 and 3 cameras
    python benchmarks/f1_inference.py --size paper --device cuda      # paper size, bf16
    python benchmarks/f1_inference.py --quick                         # smoke run (eager only)
"""

import gc
import logging
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

# benchmarks/flow.py is named like the `flow` package that f1kit imports: move this folder to the
# end of the import path so the package wins while `import harness` still finds the harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import torch  # noqa: E402

from f1kit.host_reads import host_reads  # noqa: E402
from f1kit.model import F1, F1Config, Prefix  # noqa: E402
from f1kit.model.engine import Engine  # noqa: E402
from harness import Timing, dtype_of, emit, measure, parse_args  # noqa: E402

log = logging.getLogger("benchmarks.f1_inference")

INSTRUCTION = "open the top drawer"  # fits the tiny byte tokenizer's 24 ids
REFERENCE = (
    "DESIGN.md s6: F1 235 ms on an RTX 4090, 3 cameras (18 image process, 28 temporal downsample, "
    "18 image encoder, 76 foresight, 95 for 10 action steps)"
)
PHASES = ("history_codes", "prefix", "foresight", "action")
MODES = {"eager": "eager", "compiled": "default", "captured": "reduce-overhead"}


def extra(p) -> None:
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 3])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--modes",
        nargs="+",
        choices=tuple(MODES),
        default=None,
        help="default: eager compiled (CPU), eager compiled captured (CUDA); --quick: eager",
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")


def config_of(size: str, generation: bool) -> F1Config:
    if size == "tiny":
        return F1Config.tiny(generation=generation)
    if generation:
        return F1Config.paper()
    return F1Config.paper(overrides={"generation": None, "trunk": {"generation": None}})


def frame_size(size: str) -> int:
    """Camera frames at F1's tokenizer size, for both variants (the vision encoder resizes)."""
    gen = config_of(size, generation=True).generation
    assert gen is not None
    return gen.tokenizer.vqvae_config().image_size


def build(args, generation: bool) -> F1:
    torch.manual_seed(0)  # random weights (speed does not depend on them), repeatable runs
    cfg = config_of(args.size, generation)
    dtype = dtype_of(args.dtype)
    if torch.device(args.device).type == "cuda":
        # Built in place on the GPU: a 3.5 B-parameter model never passes through host memory.
        with torch.device(args.device):
            model = F1(cfg)
        model = model.to(args.device, dtype)  # also moves any buffer made on the host
    else:
        model = F1(cfg).to(args.device, dtype)
    return model.eval()


@dataclass
class Inputs:
    """One observation: current frames, the history frames, instruction and state."""

    images: torch.Tensor  # uint8 [b, v, 3, S, S]
    history: torch.Tensor | None  # uint8 [b, t, v, 3, S, S] (F1 only)
    texts: object  # the instructions' encoding (`Understanding.encode_text`)
    state: torch.Tensor  # [b, s]
    noise: torch.Tensor  # [b, c, a], fixed so the phased chunk can be checked against predict


def make_inputs(model: F1, args, cameras: int) -> Inputs:
    cfg, device, b = model.config, args.device, args.batch
    g = torch.Generator().manual_seed(cameras)
    size = frame_size(args.size)
    history = None
    if cfg.generation is not None:
        t = cfg.generation.history
        history = torch.randint(0, 256, (b, t, cameras, 3, size, size), generator=g)
        history = history.to(device, torch.uint8)
    images = torch.randint(0, 256, (b, cameras, 3, size, size), generator=g).to(device, torch.uint8)
    act = cfg.action
    dtype = dtype_of(args.dtype)
    state = torch.randn(b, act.state_dim, generator=g).to(device, dtype)
    noise = torch.randn(b, act.chunk, act.action_dim, generator=g).to(device, dtype)
    # Tokenized once, on the device, as F1Policy keeps it (a per-call string would be tokenized
    # on the host and copied over on every call).
    texts = model.understanding.encode_text([INSTRUCTION] * b, device)
    return Inputs(images, history, texts, state, noise)


def shapes_of(model: F1, args, inputs: Inputs) -> dict:
    cfg = model.config
    prefix = model.understanding.tokens(inputs.images.shape[1])
    k = 0 if cfg.generation is None else cfg.generation.scales
    layout = model.layout(prefix, k)
    return {
        "size": args.size,
        "variant": "f1" if cfg.generation is not None else "no_gen",
        "batch": args.batch,
        "cameras": int(inputs.images.shape[1]),
        "image_size": int(inputs.images.shape[-1]),
        "vision_size": model.understanding.vision.image_size,
        "prefix_tokens": prefix,
        "history_frames": 0 if inputs.history is None else int(inputs.history.shape[1]),
        "history_tokens": 0 if model.aggregator is None else model.aggregator.tokens,
        "scales": k,
        "sequence_tokens": layout.n,
        "chunk": cfg.action.chunk,
        "action_dim": cfg.action.action_dim,
        "flow_steps": model.action_head.config.solver.steps,
        "params": sum(p.numel() for p in model.parameters()),
    }


def _seeded(device: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(0)


def run_phases(
    model: F1, args, inputs: Inputs, engine: Engine
) -> tuple[dict[str, Timing], Timing, bool, dict]:
    """Each phase timed on its own (later phases reuse one earlier output), then the total;
    the first total call (compilation, if any) and the host syncs of one warm total apart."""
    device, reps = args.device, {"repeats": args.repeats, "warmup": args.warmup}
    gen_model = model.generator is not None
    timings: dict[str, Timing] = {}
    codes = None
    if gen_model:

        def history_codes() -> torch.Tensor:
            return model.batch_codes({"history": inputs.history}, "history")

        timings["history_codes"] = measure(history_codes, device, **reps)
        codes = history_codes()

    def total() -> torch.Tensor:
        hist = model.batch_codes({"history": inputs.history}, "history") if gen_model else None
        return model.predict(
            inputs.images,
            inputs.texts,
            inputs.state,
            hist,
            generator=_seeded(device),
            noise=inputs.noise,
            engine=engine,
            check_codes=False,  # the model's own tokenizer made them, as in F1Policy
        ).actions

    start = time.perf_counter()
    total()  # compiles every step's graph when the engine compiles
    _synchronize(device)
    first_s = time.perf_counter() - start
    syncs = count_syncs(total, device)

    def prefix() -> Prefix:
        return model.encode_prefix(inputs.images, inputs.texts, codes)

    timings["prefix"] = measure(prefix, device, **reps)
    pre = prefix()

    if gen_model:

        def foresight():
            return model.foresee(pre, generator=_seeded(device), engine=engine)

        timings["foresight"] = measure(foresight, device, **reps)
        _, bound, cache = foresight()
    else:
        timings["foresight"] = measure(lambda: model.start(pre, engine=engine), device, **reps)
        bound, cache = model.start(pre, engine=engine)

    # act reads the cache without writing to it, so one filled cache serves every repeat.
    def action() -> torch.Tensor:
        return model.act(bound, cache, inputs.state, noise=inputs.noise)

    timings["action"] = measure(action, device, **reps)
    phased = action().clone()  # a captured graph's output is overwritten by its next replay

    whole = measure(total, device, **reps)
    return timings, whole, bool(torch.equal(total(), phased)), {"compile_s": first_s, **syncs}


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(fn, device: str) -> dict:
    """Host reads of one call of ``fn`` (and on CUDA the synchronising calls torch reports)."""
    counts: dict = {}
    cuda = torch.device(device).type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with host_reads() as reads:
                fn()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    counts["host_syncs"] = reads.count
    counts["host_sync_sites"] = dict(reads.sites.most_common(5))
    if cuda:
        counts["cuda_syncs"] = sum("synchroniz" in str(w.message) for w in caught)
    return counts


def rss_mb() -> float | None:
    """The process's current resident set (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return None
    return pages * resource.getpagesize() / 2**20


def bench_variant(args, generation: bool) -> dict[tuple[str, int], dict]:
    """All modes and camera counts of one variant; one model resident at a time (CUDA peaks
    stay its own)."""
    cuda = torch.device(args.device).type == "cuda"
    rss_before = None if cuda else rss_mb()
    model = build(args, generation)
    weights_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    variant = "f1" if generation else "no_gen"
    results: dict[tuple[str, int], dict] = {}
    with torch.inference_mode():
        for mode in args.modes:
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            engine = Engine(model.trunk, MODES[mode], backend=args.compile_backend)
            for cameras in args.cameras:
                inputs = make_inputs(model, args, cameras)
                shapes = shapes_of(model, args, inputs)
                log.info("%s %s, %d camera(s)", variant, mode, cameras)
                phases, total, matches, calls = run_phases(model, args, inputs, engine)
                memory = {"weights_mb": weights_mb}
                if cuda:
                    memory["memory"] = "cuda max_memory_allocated over the timed calls"
                else:
                    rss = rss_mb()
                    memory["memory"] = "cpu: process peak RSS (harness) and current RSS delta"
                    if rss is not None and rss_before is not None:
                        memory["rss_delta_mb"] = rss - rss_before
                counters = torch._dynamo.utils.counters
                results[(mode, cameras)] = {
                    "variant": variant,
                    "mode": mode,
                    "shapes": shapes,
                    "phases": phases,
                    "total": total,
                    "matches_predict": matches,
                    "memory": memory,
                    "calls": {
                        **calls,
                        "graph_breaks": sum(counters["graph_break"].values()),
                        "graphs": counters["stats"]["unique_graphs"],
                    },
                }
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return results


def report(args, f1: dict, peer: dict | None, eager: dict | None) -> None:
    """Phase records, then the total with the No-Gen peer's figures, the eager figure of the
    same variant (compiled modes) and the phase breakdown."""
    name = f"f1_inference/{args.size}/{f1['mode']}/{f1['variant']}/v{f1['shapes']['cameras']}"
    total: Timing = f1["total"]
    for phase, timing in f1["phases"].items():
        figures: dict = {
            "mode": f1["mode"],
            "ms": timing.median_ms,
            "share_of_total": timing.median_ms / total.median_ms,
        }
        if peer is not None and phase in peer["phases"]:
            other = peer["phases"][phase]
            figures.update(
                peer="no_gen" + ("/start" if phase == "foresight" else ""),
                peer_median_ms=other.median_ms,
                f1_over_no_gen=timing.median_ms / other.median_ms,
            )
        emit(f"{name}/{phase}", args, f1["shapes"], timing, **figures)
    figures = {
        "mode": f1["mode"],
        "ms_per_chunk": total.median_ms,
        "chunks_per_s": 1e3 / total.median_ms,
        "phases_ms": {p: t.median_ms for p, t in f1["phases"].items()},
        "sum_of_phases_ms": sum(t.median_ms for t in f1["phases"].values()),
        "matches_predict": f1["matches_predict"],
        **f1["calls"],
        **f1["memory"],
    }
    if eager is not None:
        figures.update(
            eager_median_ms=eager["total"].median_ms,
            speedup_over_eager=eager["total"].median_ms / total.median_ms,
        )
    if peer is not None:
        figures.update(
            peer="no_gen",
            peer_median_ms=peer["total"].median_ms,
            peer_chunks_per_s=1e3 / peer["total"].median_ms,
            f1_over_no_gen=total.median_ms / peer["total"].median_ms,
        )
        both = ("foresight", "action")
        figures["foresight_action_over_no_gen"] = sum(
            f1["phases"][p].median_ms for p in both
        ) / sum(peer["phases"][p].median_ms for p in both)
        if args.size == "paper" and f1["shapes"]["cameras"] == 3:
            figures.update(reference=REFERENCE, reference_ms=235.0)
    emit(f"{name}/total", args, f1["shapes"], total, **figures)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(__doc__.splitlines()[0], extra)
    cuda = torch.device(args.device).type == "cuda"
    if args.size == "paper" and (not cuda or not torch.cuda.is_available()):
        raise SystemExit(
            "--size paper: needs a CUDA device (the paper-size F1 has ~3.5 B parameters and runs "
            f"in bfloat16 on the GPU); got --device {args.device}, CUDA available: "
            f"{torch.cuda.is_available()}. Run --size tiny on CPU."
        )
    if args.quick and args.size != "tiny":
        raise SystemExit("--quick runs the tiny model only: drop --size paper")
    bad = [v for v in args.cameras if v < 1]
    if bad or args.batch < 1:
        raise SystemExit(
            f"--cameras / --batch: expected positive counts, got {args.cameras} / {args.batch}"
        )
    if args.quick and args.device == "cpu":
        # As flow.py: tiny ops only pay a second thread's sync on a shared 2-core box.
        torch.set_num_threads(1)
    if args.modes is None:
        args.modes = ["eager"] if args.quick else ["eager", "compiled"] + ["captured"] * cuda
    if "captured" in args.modes and not cuda:
        raise SystemExit("--modes captured: CUDA graphs need --device cuda")
    peers = bench_variant(args, generation=False)
    for (mode, cameras), result in peers.items():
        report(args, result, None, peers.get(("eager", cameras)) if mode != "eager" else None)
    f1s = bench_variant(args, generation=True)
    for (mode, cameras), result in f1s.items():
        eager = f1s.get(("eager", cameras)) if mode != "eager" else None
        report(args, result, peers[(mode, cameras)], eager)


if __name__ == "__main__":
    main()
