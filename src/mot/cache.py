"""Preallocated KV cache for incremental MoT forwards (DESIGN.md s3 and s4 inference).

One K and one V buffer for all layers, ``[depth, b, g, capacity, e]``, and a fill pointer
``length``. A forward over m new tokens writes their (rotated) K/V in place at
``[length, length + m)`` of each layer and attends to the view ``[:length + m]``:

* appending (prefix, then each foresight scale) then moves the pointer by m;
* a read-only forward (the action expert's repeated flow steps) leaves the pointer where it was,
  so the next step overwrites the same scratch slots. Neither copies the cached part.

The buffers are written in place, which autograd cannot differentiate through across steps, so
forwards that keep their K/V are inference-only: run them under ``torch.no_grad()`` or
``inference_mode()``. A read-only step may be differentiated (real-time chunking takes a
vector-Jacobian product through the action steps, `flow.rtc`): with autograd recording, its K/V
are concatenated to the cached ones instead of written, and keeping them is refused.

Example:
    >>> cache = KVCache(depth=2, batch=1, kv_heads=1, capacity=32, head_dim=8)
    >>> cache.length, cache.free
    (0, 32)
"""

import torch
from jaxtyping import Float
from torch import Tensor


class KVCacheError(ValueError):
    """A cache used beyond its capacity, with the wrong batch/geometry, or with gradients."""


class KVCache:
    """Per-layer K/V of the tokens processed so far, preallocated to ``capacity`` tokens."""

    def __init__(
        self,
        depth: int,
        batch: int,
        kv_heads: int,
        capacity: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in (
            ("depth", depth),
            ("batch", batch),
            ("kv_heads", kv_heads),
            ("capacity", capacity),
            ("head_dim", head_dim),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise KVCacheError(f"KVCache {name}: expected a positive int, got {value!r}")
        shape = (depth, batch, kv_heads, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self._unwritten = 0  # tokens of a differentiable step that were not written

    @property
    def depth(self) -> int:
        return self.k.shape[0]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def free(self) -> int:
        """Slots after the fill pointer (a read-only step needs as many as it has tokens)."""
        return self.capacity - self.length

    def check_step(self, tokens: int, batch: int) -> None:
        """Raise unless a step of ``tokens`` new tokens for ``batch`` samples fits."""
        if batch != self.batch:
            raise KVCacheError(
                f"KVCache batch: cache holds {self.batch} samples, input has {batch}"
            )
        if tokens > self.free:
            raise KVCacheError(
                f"KVCache capacity: {tokens} new tokens do not fit, {self.length} of "
                f"{self.capacity} slots are filled (allocate a larger cache)"
            )

    def extend(
        self, layer: int, k: Float[Tensor, "b g m e"], v: Float[Tensor, "b g m e"]
    ) -> tuple[Float[Tensor, "b g n e"], Float[Tensor, "b g n e"]]:
        """Write this step's K/V of ``layer`` after the pointer; return views of all keys so far.

        The pointer does not move (``advance`` does, once all layers have run).
        """
        if k.shape[1:2] + k.shape[3:] != self.k.shape[2:3] + self.k.shape[4:]:
            raise KVCacheError(
                f"KVCache k: expected [b, {self.k.shape[2]}, m, {self.k.shape[4]}], "
                f"got {list(k.shape)}"
            )
        m = k.shape[2]
        self.check_step(m, k.shape[0])
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # Differentiable read-only step: nothing written, so `advance` must refuse it.
            self._unwritten = m
            kept_k, kept_v = self.kv(layer)
            return torch.cat([kept_k, k], dim=2), torch.cat([kept_v, v], dim=2)
        self._unwritten = 0
        stop = self.length + m
        self.k[layer, :, :, self.length : stop] = k
        self.v[layer, :, :, self.length : stop] = v
        return self.k[layer, :, :, :stop], self.v[layer, :, :, :stop]

    def kv(self, layer: int) -> tuple[Float[Tensor, "b g n e"], Float[Tensor, "b g n e"]]:
        """Views of ``layer``'s kept K (RoPE applied) and V: the first ``length`` tokens."""
        if not 0 <= layer < self.depth:
            raise KVCacheError(f"KVCache layer: expected 0..{self.depth - 1}, got {layer}")
        return self.k[layer, :, :, : self.length], self.v[layer, :, :, : self.length]

    def advance(self, tokens: int) -> None:
        """Keep the last step's ``tokens`` K/V: move the fill pointer past them."""
        if self._unwritten:
            self._unwritten = 0
            raise KVCacheError(
                "KVCache: forwards that keep their K/V are inference-only (the buffers are "
                "written in place); run them under torch.no_grad() or torch.inference_mode()"
            )
        if tokens < 0 or tokens > self.free:
            raise KVCacheError(f"KVCache advance: expected 0..{self.free} tokens, got {tokens}")
        self.length += tokens

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens (e.g. re-sample the foresight)."""
        if not 0 <= length <= self.length:
            raise KVCacheError(f"KVCache truncate: expected 0..{self.length}, got {length}")
        self.length = length
        self._unwritten = 0
