"""Loading F1 from a local safetensors file: time and peak RSS, before and after issue 17.

The file: every tensor of the model (`build_empty(config).state_dict()`) in bfloat16, filled with
random values (slices of one 64 M-value N(0, 0.02) pool, so writing runs at disk speed), in the
safetensors layout, written tensor by tensor (``safetensors.torch.save_file`` would hold every
tensor and its bytes in memory at once: twice the file). It is deleted at the end.

Each load runs in its own subprocess, so its peak RSS is its own (``VmHWM`` of
/proc/self/status: ``ru_maxrss`` would report the forking parent's RSS when that is higher,
as Linux carries it over exec):

    old   ``F1(config)`` (random float32 initialisation of every parameter), ``load_file``,
          ``load_state_dict`` (copies, cast to float32): the model ends float32
    new   `f1kit.model.build_empty` (meta device), `read_weights` (memory-mapped),
          `load_into_empty` with ``dtype=bfloat16`` (strict checks incl. a NaN/inf scan, then
          ``assign=True``: the parameters are views of the mapping; the tokenizer cast to float32)

Before each load the file's pages are dropped from the page cache (``posix_fadvise DONTNEED``),
so both read it from disk (``--cache warm`` reads it once first instead). Besides the peak RSS
(``peak_mem_mb``, anonymous and file-backed pages together) each record gives the sampled peak
of anonymous memory (``peak_anon_mb``; every 20 ms) and, after the load, ``rss_anon_mb`` and
``rss_file_mb``: mapped file pages are clean page cache the kernel can drop and re-read, while
anonymous memory is a real copy. The ``new`` record carries the ``old`` one's figures as its peer.

    python benchmarks/loading.py --repeats 3                 # paper size (needs ~17 GB free RAM)
    python benchmarks/loading.py --cache warm --modes new    # the file already in page cache
    python benchmarks/loading.py --quick                      # tiny, smoke run
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# benchmarks/flow.py is named like the `flow` package that f1kit imports: move this folder to the
# end of the import path so the package wins while `import harness` still finds the harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from f1kit.model import F1, F1Config, build_empty, load_into_empty, read_weights  # noqa: E402
from harness import emit, parse_args, timing_of  # noqa: E402

MODES = ("old", "new")
POOL = 1 << 26  # random values the file's tensors are sliced from (128 MB in bf16)


def extra(p) -> None:
    p.add_argument("--size", choices=("paper", "tiny"), default="paper")
    p.add_argument("--cache", choices=("cold", "warm"), default="cold")
    p.add_argument("--modes", choices=MODES, nargs="+", default=list(MODES))
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the weights file goes")
    p.add_argument("--child", choices=MODES, help=argparse_hidden())
    p.add_argument("--weights", help=argparse_hidden())
    p.set_defaults(repeats=3, warmup=0)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def config_of(size: str) -> F1Config:
    return F1Config.paper() if size == "paper" else F1Config.tiny()


# ---- the weights file ------------------------------------------------------------------------


def write_random_weights(config: F1Config, path: Path) -> tuple[int, int]:
    """Every tensor of ``config``'s model in bf16, safetensors layout; -> (tensors, parameters)."""
    shapes = {k: tuple(t.shape) for k, t in sorted(build_empty(config).state_dict().items())}
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        n = 2 * _numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    g = torch.Generator().manual_seed(0)
    pool = (torch.randn(POOL, generator=g) * 0.02).to(torch.bfloat16).view(torch.uint8).numpy()
    start = 0
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for shape in shapes.values():
            left = 2 * _numel(shape)
            while left:  # slices of the pool, each tensor starting somewhere else in it
                start = (start + 7919 * 2) % (2 * POOL)
                chunk = min(left, 2 * POOL - start)
                f.write(pool[start : start + chunk].tobytes())
                left -= chunk
        f.flush()
        os.fsync(f.fileno())
    with safe_open(str(path), framework="pt") as f:  # the library reads what we wrote
        assert sorted(f.keys()) == list(shapes), "weights file: keys differ from the model's"
    return len(shapes), sum(_numel(s) for s in shapes.values())


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass


# ---- one load, in a child process ----------------------------------------------------------


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024  # kB -> MB
    return out


class AnonPeak(threading.Thread):
    """Samples RssAnon every 20 ms (no kernel high-water mark for anonymous memory alone)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, _status()["RssAnon"])


def child(mode: str, weights: str, size: str) -> dict:
    base = _status()
    sampler = AnonPeak()
    sampler.start()
    config = config_of(size)
    t0 = time.perf_counter()
    if mode == "old":
        torch.manual_seed(0)
        model = F1(config)
        t1 = time.perf_counter()
        tensors = load_file(weights)
        t2 = time.perf_counter()
        model.load_state_dict(tensors, strict=True)
    else:
        model = build_empty(config)
        t1 = time.perf_counter()
        tensors = read_weights(weights)
        t2 = time.perf_counter()
        load_into_empty(model, tensors, dtype=torch.bfloat16, device="cpu", source=weights)
    t3 = time.perf_counter()
    del tensors
    sampler.done.set()
    sampler.join()
    end = _status()
    floats = {str(p.dtype) for n, p in model.named_parameters() if not n.startswith("tokenizer.")}
    return {
        "total_s": t3 - t0,
        "build_s": t1 - t0,
        "read_s": t2 - t1,
        "load_s": t3 - t2,
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
        "peak_rss_mb": end["VmHWM"],
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_anon_mb": max(sampler.peak, end["RssAnon"]),
        "rss_anon_mb": end["RssAnon"],
        "rss_file_mb": end["RssFile"],
        "start_rss_mb": base["VmRSS"],
        "weights_dtype": sorted(floats),
        "on_meta": sum(p.is_meta for p in model.parameters()),
    }


def run_child(mode: str, weights: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--weights", str(weights)]
    cmd += ["--size", args.size, "--threads", str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} load failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- the parent ------------------------------------------------------------------------------


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    if args.quick:
        args.size, args.repeats = "tiny", 1
    if args.child:
        sys.stdout.write(json.dumps(child(args.child, args.weights, args.size)) + "\n")
        return
    args.device, args.dtype = "cpu", "bfloat16"  # the file's dtype; loads run on the CPU
    config = config_of(args.size)
    fd, name = tempfile.mkstemp(prefix="f1kit-load-", suffix=".safetensors", dir=args.dir)
    os.close(fd)
    path = Path(name)
    try:
        t0 = time.perf_counter()
        count, params = write_random_weights(config, path)
        write_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        fp32_mb = 4 * params / 2**20
        shapes = {"size": args.size, "tensors": count, "parameters": params, "file_mb": size_mb}
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        # The old way holds the float32 model and, transiently, file pages: refuse rather than
        # push a shared machine into swap or the OOM killer.
        skip_old = _available_mb() < 1.15 * fp32_mb + 1024
        for _ in range(args.repeats):
            for mode in args.modes:
                if mode == "old" and skip_old:
                    continue
                if args.cache == "cold":
                    drop_cache(path)
                else:
                    warm_cache(path)
                runs[mode].append(run_child(mode, path, args))
    finally:
        path.unlink(missing_ok=True)
    figures = {}
    for mode in args.modes:
        name = f"load_{args.size}/{mode}"
        if not runs[mode]:
            reason = f"needs ~{1.15 * fp32_mb / 1024:.0f} GB available RAM for the float32 model"
            emit(name, args, shapes, None, skipped=reason)
            continue
        rs = runs[mode]
        timing = timing_of([1e3 * r["total_s"] for r in rs], max(r["peak_rss_mb"] for r in rs))
        figures[mode] = {
            "median_s": timing.median_ms / 1e3,
            "peak_rss_mb": timing.peak_mem_mb,
            "peak_anon_mb": max(r["peak_anon_mb"] for r in rs),
        }
        record = {
            "cache": args.cache,
            "write_s": write_s,
            **{f"{k}_median_s": statistics.median(r[f"{k}_s"] for r in rs) for k in PHASES},
            "peak_anon_mb": figures[mode]["peak_anon_mb"],
            "rss_anon_mb": statistics.median(r["rss_anon_mb"] for r in rs),
            "rss_file_mb": statistics.median(r["rss_file_mb"] for r in rs),
            "weights_dtype": rs[0]["weights_dtype"],
            "runs": rs,
        }
        if mode == "new" and "old" in figures:
            record["peer"] = {"name": f"load_{args.size}/old", **figures["old"]}
            record["speedup"] = figures["old"]["median_s"] / figures["new"]["median_s"]
            record["peak_rss_ratio"] = figures["new"]["peak_rss_mb"] / figures["old"]["peak_rss_mb"]
        emit(name, args, shapes, timing, **record)


PHASES = ("build", "read", "load")

if __name__ == "__main__":
    main()
