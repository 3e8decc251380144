"""Count, or forbid, reads of tensor values on the host inside a block of code.

On a GPU, ``t.item()``, ``int(t)``, ``bool(t)``, ``float(t)``, ``t.tolist()`` or ``t.numpy()`` of a
device tensor waits for every queued kernel (a host sync) and breaks CUDA-graph capture and
``torch.compile(fullgraph=True)``. The inference steps must have none (docs/inference.md). This
module patches those ``torch.Tensor`` methods for the duration of a ``with`` block so that every
Python-level read is counted with its call site, or raises:

    with host_reads() as reads:
        model.predict(...)
    reads.count, reads.sites.most_common(3)

    with host_reads(forbid=True):          # a test: any read raises HostReadError
        model.predict(...)

It sees reads made from Python only (an ATen kernel that syncs internally, such as a boolean-mask
index, is invisible here); on CUDA, ``torch.cuda.set_sync_debug_mode("error")`` catches those,
and `benchmarks/gpu_check.sh` runs the predict path under it. On a CPU every tensor counts,
including host-side tables, which keeps the rule simple: the hot path reads no tensor at all.
"""

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

READS = ("item", "tolist", "numpy", "__int__", "__bool__", "__float__", "__index__")


class HostReadError(RuntimeError):
    """A tensor's value was read on the host inside a ``host_reads(forbid=True)`` block."""


@dataclass
class HostReads:
    """Reads seen so far: their number and ``file:line function`` call sites."""

    sites: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(self.sites.values())


@contextmanager
def host_reads(*, forbid: bool = False) -> Iterator[HostReads]:
    """Count (or, with ``forbid``, refuse) Python-level tensor reads inside the block.

    Not thread-safe: the patch is process-wide while the block runs.
    """
    reads = HostReads()
    saved = {name: getattr(torch.Tensor, name) for name in READS}
    own = {name for name in READS if name in vars(torch.Tensor)}  # the rest are inherited

    def patched(name: str):
        original = saved[name]

        def read(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            caller = sys._getframe(1)
            while caller.f_back is not None and "jaxtyping" in caller.f_code.co_filename:
                caller = caller.f_back  # name the checked function, not its checking wrapper
            site = f"{caller.f_code.co_filename}:{caller.f_lineno} {caller.f_code.co_name}"
            if forbid:
                raise HostReadError(
                    f"Tensor.{name} of a {tuple(self.shape)} {self.dtype} tensor on "
                    f"{self.device} read on the host at {site}"
                )
            reads.sites[site] += 1
            return original(self, *args, **kwargs)

        return read

    for name in READS:
        setattr(torch.Tensor, name, patched(name))
    try:
        yield reads
    finally:
        for name, original in saved.items():
            if name in own:
                setattr(torch.Tensor, name, original)
            else:
                delattr(torch.Tensor, name)
