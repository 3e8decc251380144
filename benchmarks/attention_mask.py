"""Masked joint attention at F1-like sizes across the backends of `attention.attend`.

Default shape (DESIGN.md s1, s6): 2 cameras x 256 image tokens + 48 text tokens, 680 history
tokens, foresight scales (1, 2, 3, 4), 1 state token, 50 actions -> 1321 tokens; 8 query heads,
1 KV head, head_dim 256. The peer is unmasked SDPA on the same tensors (the speed of light
for any mask). FlexAttention is timed compiled, on CUDA only.

    python benchmarks/attention_mask.py                  # CPU, float32, 2 threads
    python benchmarks/attention_mask.py --device cuda    # bf16, adds compiled FlexAttention
"""

import torch

from attention import BACKENDS, attend, uga_layout
from harness import dtype_of, emit, measure, parse_args


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--batch", type=int, default=1))
    device, dtype = args.device, dtype_of(args.dtype)
    if args.quick:
        counts = {"prefix": 24, "history": 8, "scales": (1, 2), "state": 1, "actions": 4}
        heads, kv_heads, head_dim = 2, 1, 16
    else:
        counts = {
            "prefix": 2 * 256 + 48,
            "history": 680,
            "scales": (1, 2, 3, 4),
            "state": 1,
            "actions": 50,
        }
        heads, kv_heads, head_dim = 8, 1, 256
    layout = uga_layout(**counts)
    b, n = args.batch, layout.n
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(b, heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    k = torch.randn(b, kv_heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    v = torch.randn(b, kv_heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    valid = torch.ones(b, n, dtype=torch.bool, device=device)
    mask = layout.mask(valid)
    shapes = {"batch": b, "tokens": n, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim}
    reps = {"repeats": args.repeats, "warmup": args.warmup}

    peer = measure(lambda: attend(q, k, v, None, backend="sdpa"), device, **reps)
    emit("attention_mask/sdpa_unmasked", args, shapes, peer, backend="sdpa_unmasked")
    for backend in BACKENDS:
        if backend == "flex":
            continue
        timing = measure(
            lambda backend=backend: attend(q, k, v, mask, backend=backend), device, **reps
        )
        emit(
            f"attention_mask/{backend}",
            args,
            shapes,
            timing,
            backend=backend,
            peer="sdpa_unmasked",
            peer_median_ms=peer.median_ms,
            slowdown_vs_peer=timing.median_ms / peer.median_ms,
        )

    if torch.device(device).type != "cuda":
        emit(
            "attention_mask/flex",
            args,
            shapes,
            None,
            backend="flex",
            skipped="FlexAttention is timed compiled on CUDA only; un-compiled CPU flex is a "
            "materialising reference path",
        )
        return
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention)
    block_mask = layout.block_mask(valid)
    timing = measure(
        lambda: compiled(q, k, v, block_mask=block_mask, enable_gqa=True), device, **reps
    )
    emit(
        "attention_mask/flex",
        args,
        shapes,
        timing,
        backend="flex_compiled",
        peer="sdpa_unmasked",
        peer_median_ms=peer.median_ms,
        slowdown_vs_peer=timing.median_ms / peer.median_ms,
    )


if __name__ == "__main__":
    main()
