"""Shared timing for the micro-benchmarks: warm-up, median of N, JSON lines out.

CUDA: timed with CUDA events after warm-up, peak memory from the caching allocator.
CPU: timed with ``time.perf_counter`` at a fixed, reported thread count; the process's peak RSS is
reported (a process-wide high-water mark, so compare it only within one run).

Every record carries name, device, dtype, shapes, torch version, thread count, median and spread;
a benchmark adds its derived figure (tokens/s, images/s, ms) and its peer's figure from the
same run.
"""

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    repeats: int
    peak_mem_mb: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return self.__dict__.copy()


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """Common flags: --device, --dtype, --threads, --repeats, --warmup, --quick."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype", default=None, help="float32 | bfloat16 | float16 (default per device)"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke test)")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.quick:
        args.repeats, args.warmup = 2, 1
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    return args


def dtype_of(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise SystemExit(f"--dtype: expected one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def measure(fn: Callable[[], object], device: str, repeats: int = 20, warmup: int = 5) -> Timing:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` calls one by one."""
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return timing_of(times, peak)


def timing_of(times_ms: list[float], peak_mem_mb: float | None = None) -> Timing:
    """Median, extremes and IQR of times measured in ms; ``peak_mem_mb`` None = the process's
    peak RSS (the CPU high-water mark)."""
    if peak_mem_mb is None:
        peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    q = statistics.quantiles(times_ms, n=4) if len(times_ms) >= 2 else [times_ms[0]] * 3
    return Timing(
        median_ms=statistics.median(times_ms),
        min_ms=min(times_ms),
        max_ms=max(times_ms),
        iqr_ms=q[2] - q[0],
        repeats=len(times_ms),
        peak_mem_mb=peak_mem_mb,
    )


def environment(device: str, dtype: str) -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "device": device,
        "dtype": dtype,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": date.today().isoformat(),
    }
    if torch.device(device).type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def emit(name: str, args, shapes: dict, timing: Timing | None, **figures) -> dict:
    """Print one JSON line: name, environment, shapes, timing and derived figures."""
    record = {"name": name, **environment(args.device, args.dtype), "shapes": shapes}
    if timing is not None:
        record.update(timing.as_dict())
    record.update(figures)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return record
