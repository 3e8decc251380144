"""`Engine`: how an F1 trunk runs at inference, eager or compiled, with its KV caches kept.

Every inference step of F1 is one call of the MoT trunk (`mot.MoTStack`): the prefix pass, one
call per foresight scale, one per flow step (`inference.py`). An engine owns that call and the
buffers around it, so a policy that predicts chunk after chunk does per call only tensor work:

* KV caches, one per (batch, sequence length, dtype, device), allocated once and rewound
  (``KVCache.truncate(0)``) at each new chunk; a rewound cache's stale slots are never read
  (a step's keys are the views ``[:stop]``, all written before they are read);
* the trunk compiled with ``torch.compile(fullgraph=True, dynamic=False)`` when asked: one graph
  per step signature (prefix, each scale, the flow step), no graph break allowed; on CUDA
  ``mode="reduce-overhead"`` replays each graph as a CUDA graph, with the caches marked as static
  addresses so the in-place cache writes stay inside the graph.

Masks and RoPE positions are computed once per chunk by `trunk.BoundTrunk` (from the
instruction's padding, on the device) and sliced per step; nothing on the path reads a device
tensor on the host (`f1kit.host_reads` checks it in the tests).

Runtime shape checks (jaxtyping + beartype, on in the tests) are switched off inside compiled
calls: dynamo traces the functions themselves, not the checking wrappers.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import jaxtyping
import torch
from torch import Tensor

from mot import KVCache, MoTStack

CompileMode = Literal["eager", "default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)

# One graph per step signature: prefix, K - 1 scale steps, the flow step, per camera count and
# batch; dynamo's default limit (8 per code object) would silently fall back to eager past it.
RECOMPILE_LIMIT = 64


class Engine:
    """Runs ``trunk`` for inference calls; see the module docstring.

    compile: ``"eager"`` (no compilation), or a ``torch.compile`` mode (``"default"``,
        ``"reduce-overhead"`` for CUDA graphs, ``"max-autotune"``).
    backend: the ``torch.compile`` backend (``"inductor"``; ``"eager"`` traces without code
        generation, which the tests use to prove the graphs have no break).
    """

    def __init__(
        self, trunk: MoTStack, compile: CompileMode = "eager", *, backend: str = "inductor"
    ) -> None:
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile: expected one of {COMPILE_MODES}, got {compile!r}")
        self.trunk = trunk
        self.mode = compile
        self._caches: dict[tuple, KVCache] = {}
        self._owners: dict[int, object] = {}  # id(cache) -> the chunk that holds it now
        self._compiled = None
        if compile != "eager":
            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
            mode = None if compile == "default" else compile
            self._compiled = torch.compile(
                trunk, fullgraph=True, dynamic=False, mode=mode, backend=backend
            )

    def __call__(self, *args: object, **kwargs: object) -> list[Tensor | None]:
        """``trunk(*args, **kwargs)``, compiled when the engine is."""
        if self._compiled is None:
            return self.trunk(*args, **kwargs)
        with typechecks_off():
            return self._compiled(*args, **kwargs)

    def cache(
        self,
        batch: int,
        capacity: int,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        owner: object,
    ) -> KVCache:
        """The engine's empty KV cache of this shape, allocated on first use and then reused.

        owner: the chunk's `BoundTrunk`; the cache is its until a later chunk of the same shape
        takes (and rewinds) it, after which `check_owner` refuses the earlier one.
        """
        key = (batch, capacity, str(torch.device(device)), dtype)
        cache = self._caches.get(key)
        if cache is None:
            cache = self.trunk.new_cache(batch, capacity, device=device, dtype=dtype)
            if self.mode == "reduce-overhead":
                # CUDA graphs write the cache in place only at addresses fixed across replays.
                torch._dynamo.mark_static_address(cache.k)
                torch._dynamo.mark_static_address(cache.v)
            self._caches[key] = cache
        cache.truncate(0)
        self._owners[id(cache)] = owner
        return cache

    def check_owner(self, cache: KVCache, owner: object) -> None:
        """Raise if ``cache`` is this engine's and a later chunk than ``owner``'s took it."""
        taken = self._owners.get(id(cache))
        if taken is not None and taken is not owner:
            raise ValueError(
                "cache: a later chunk on the same Engine rewound this KV cache and filled it "
                "with its own prefix; a (bound, cache) pair from F1.foresee / F1.start is valid "
                "until the next chunk on its engine (use a second Engine to keep both)"
            )

    def new_chunk(self) -> None:
        """Mark a new chunk for CUDA-graph trees (outputs of the previous one may be reused)."""
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()


@contextmanager
def typechecks_off() -> Iterator[None]:
    """jaxtyping's runtime checks off inside the block (compiled code traces the functions)."""
    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)
