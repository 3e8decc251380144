"""MoT layer and stack throughput (tokens/s), forward and forward+backward, against peers.

Peers, timed in the same run on the same tokens and mask:
  * dense: an x-transformers Encoder layer (stack) of equal matmul FLOPs: one width W chosen so
    that n * flops_per_token(W) equals the MoT's sum over experts of n_i * flops_per_token_i,
    same heads / KV heads / head_dim, GeGLU MLP of 4W, RoPE, RMSNorm, SDPA;
  * pi-zero-pytorch (if importable): its JointAttention (two streams) plus a GeGLU FeedForward per
    stream, against a two-expert MoT layer (understanding + action) of the same widths. It is not
    a project dependency (see the log line when it is absent).

The MoT overhead ratio is the FLOP-normalised time ratio (t_mot / F_mot) / (t_dense / F_dense):
1.0 means the per-expert routing costs nothing beyond its FLOPs.

    .venv/bin/python benchmarks/mot.py [--quick] [--device cuda] [--dtype bfloat16]

Paper size (DESIGN.md s1) runs only on CUDA; on CPU a JSON line says it was skipped.
"""

import logging
import math
import statistics
import sys
from pathlib import Path

# This script is named like the package it measures: move its folder to the end of the import
# path so `import mot` finds the package while `import harness` still finds the shared harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import torch  # noqa: E402
from x_transformers import Encoder  # noqa: E402

from attention import ACTION, GENERATION, UNDERSTANDING, uga_layout  # noqa: E402
from harness import Timing, dtype_of, emit, measure, parse_args  # noqa: E402
from mot import ExpertSpec, MoTConfig, MoTStack, paper_config, rope_angles, step_inputs  # noqa: E402

log = logging.getLogger("benchmarks.mot")


def small_config(quick: bool, depth: int) -> MoTConfig:
    u, g = (64, 32) if quick else (256, 128)
    return MoTConfig(
        experts=(
            ExpertSpec(UNDERSTANDING, u, 4 * u),
            ExpertSpec(GENERATION, g, 4 * g),
            ExpertSpec(ACTION, g, 4 * g),
        ),
        depth=depth,
        heads=4,
        kv_heads=1,
        head_dim=32 if quick else 64,
    )


def linear_flops_per_token(width: int, mlp_width: int, gated: bool, cfg: MoTConfig) -> int:
    """Multiply-adds x 2 of q, k, v, o and the MLP for one token of one layer."""
    attn = 2 * width * cfg.heads * cfg.head_dim + 2 * width * cfg.kv_heads * cfg.head_dim
    return 2 * (attn + (3 if gated else 2) * width * mlp_width)


def layer_flops(cfg: MoTConfig, lengths: list[int], batch: int) -> int:
    n = sum(lengths)
    linear = sum(
        length * linear_flops_per_token(s.width, s.mlp_width, s.mlp != "gelu", cfg)
        for s, length in zip(cfg.experts, lengths, strict=True)
    )
    core = 4 * cfg.heads * n * n * cfg.head_dim  # q k^T and p v over the dense mask
    return batch * (linear + core)


def equal_flops_width(cfg: MoTConfig, lengths: list[int]) -> int:
    """Dense width W (GeGLU MLP 4W) whose linear FLOPs over all tokens match the MoT's."""
    n = sum(lengths)
    target = sum(
        length * linear_flops_per_token(s.width, s.mlp_width, s.mlp != "gelu", cfg)
        for s, length in zip(cfg.experts, lengths, strict=True)
    )
    # 2 * (a W + 12 W^2) = target / n with a = 2 h e + 2 g e: positive root of the quadratic.
    a = 2 * cfg.heads * cfg.head_dim + 2 * cfg.kv_heads * cfg.head_dim
    return round((-a + math.sqrt(a * a + 48 * target / (2 * n))) / 24)


def dense_peer(cfg: MoTConfig, width: int, depth: int) -> Encoder:
    return Encoder(
        dim=width,
        depth=depth,
        heads=cfg.heads,
        attn_dim_head=cfg.head_dim,
        attn_kv_heads=cfg.kv_heads,
        attn_flash=True,
        ff_glu=True,
        ff_mult=4,
        ff_no_bias=True,
        rotary_pos_emb=True,
        rotary_emb_dim=cfg.head_dim,  # x-transformers rotates half a head by default; ours all
        use_rmsnorm=True,
    )


def _step(fn, backward: bool, params: list[torch.Tensor]):
    def step():
        out = fn()
        if backward:
            loss = sum(o.float().square().mean() for o in out if o is not None)
            loss.backward()
            for p in params:
                p.grad = None
        return out

    return step


def timed_pair(a, b, backward: bool, args) -> tuple[Timing, Timing]:
    """Time (fn, params) pairs ``a`` and ``b`` in alternating single calls.

    Alternating keeps a busy machine's load swings from landing on one side only.
    """
    steps = [_step(fn, backward, params) for fn, params in (a, b)]
    times: list[list[Timing]] = [[], []]
    with torch.set_grad_enabled(backward):
        for step in steps:
            measure(step, args.device, repeats=1, warmup=args.warmup)
        for _ in range(args.repeats):
            for i, step in enumerate(steps):
                times[i].append(measure(step, args.device, repeats=1, warmup=0))
    return tuple(_combine(t) for t in times)


def _combine(timings: list[Timing]) -> Timing:
    ms = [t.median_ms for t in timings]
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    peaks = [t.peak_mem_mb for t in timings if t.peak_mem_mb is not None]
    return Timing(
        median_ms=statistics.median(ms),
        min_ms=min(ms),
        max_ms=max(ms),
        iqr_ms=q[2] - q[0],
        repeats=len(ms),
        peak_mem_mb=max(peaks) if peaks else None,
    )


def build_stack(cfg: MoTConfig, layout, batch: int, args):
    """The stack on the benchmark's device/dtype, seeded per-expert inputs, their lengths, and the
    generator (callers draw further inputs from it)."""
    device, dtype = torch.device(args.device), dtype_of(args.dtype)
    stack = MoTStack(cfg).to(device=device, dtype=dtype)
    lengths = [layout.expert_lengths().get(s.name, 0) for s in cfg.experts]
    gen = torch.Generator(device="cpu").manual_seed(0)
    xs = [
        torch.randn(batch, n, s.width, generator=gen).to(device, dtype)
        for n, s in zip(lengths, cfg.experts, strict=True)
    ]
    return stack, xs, lengths, gen, device, dtype


def run_case(name: str, cfg: MoTConfig, layout, batch: int, args) -> None:
    stack, xs, lengths, gen, device, dtype = build_stack(cfg, layout, batch, args)
    mask, positions = step_inputs(layout, device=device)
    n = layout.n
    width = equal_flops_width(cfg, lengths)
    dense = dense_peer(cfg, width, cfg.depth).to(device=device, dtype=dtype)
    x_dense = torch.randn(batch, n, width, generator=gen).to(device, dtype)
    flops_mot = cfg.depth * layer_flops(cfg, lengths, batch)
    dense_cfg = MoTConfig(
        (ExpertSpec("dense", width, 4 * width),), cfg.depth, cfg.heads, cfg.kv_heads, cfg.head_dim
    )
    flops_dense = cfg.depth * layer_flops(dense_cfg, [n], batch)
    shapes = {
        "batch": batch,
        "tokens": n,
        "per_expert": dict(zip(cfg.expert_names, lengths, strict=True)),
        "widths": [s.width for s in cfg.experts],
        "depth": cfg.depth,
        "heads": cfg.heads,
        "kv_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "dense_width": width,
    }
    for backward in (False, True):
        mode = "fwd_bwd" if backward else "fwd"
        t_mot, t_dense = timed_pair(
            (lambda: stack(xs, positions, mask), list(stack.parameters())),
            (lambda: [dense(x_dense, attn_mask=mask)], list(dense.parameters())),
            backward,
            args,
        )
        tokens = batch * n
        overhead = (t_mot.median_ms / flops_mot) / (t_dense.median_ms / flops_dense)
        emit(
            f"{name}_{mode}",
            args,
            shapes,
            t_mot,
            tokens_per_s=tokens / t_mot.median_ms * 1e3,
            gflops_per_s=flops_mot / t_mot.median_ms / 1e6,
            peer="x-transformers Encoder, equal FLOPs",
            peer_median_ms=t_dense.median_ms,
            peer_iqr_ms=t_dense.iqr_ms,
            peer_tokens_per_s=tokens / t_dense.median_ms * 1e3,
            flops_mot=flops_mot,
            flops_peer=flops_dense,
            mot_overhead_ratio=overhead,
        )


def run_cached_step_case(name: str, cfg: MoTConfig, layout, batch: int, args) -> None:
    """One flow step of the action expert: read-only cached step vs a full uncached forward."""
    stack, xs, _, _, device, _ = build_stack(cfg, layout, batch, args)
    actions = layout.expert_slice(ACTION)
    cache = stack.new_cache(batch, layout.n)
    mask, positions = step_inputs(layout, device=device)
    step_mask, step_positions = step_inputs(layout, queries=actions, device=device)
    prefix_mask, prefix_positions = step_inputs(
        layout, queries=slice(0, actions.start), device=device
    )
    with torch.no_grad():
        stack([xs[0], xs[1], None], prefix_positions, prefix_mask, cache=cache)
    only_actions = [None, None, xs[2]]
    t_step, t_full = timed_pair(
        (
            lambda: stack(only_actions, step_positions, step_mask, cache=cache, update_cache=False),
            [],
        ),
        (lambda: stack(xs, positions, mask), []),
        False,
        args,
    )
    shapes = {
        "batch": batch,
        "tokens": layout.n,
        "step_tokens": actions.stop - actions.start,
        "depth": cfg.depth,
        "widths": [s.width for s in cfg.experts],
    }
    emit(
        name,
        args,
        shapes,
        t_step,
        step_ms=t_step.median_ms,
        peer="full uncached forward of the same layout",
        peer_median_ms=t_full.median_ms,
        peer_iqr_ms=t_full.iqr_ms,
        speedup=t_full.median_ms / t_step.median_ms,
    )


def pizero_peer(cfg: MoTConfig):
    """pi-zero-pytorch's two-stream block: JointAttention + a GeGLU FeedForward per stream."""
    from pi_zero_pytorch.pi_zero import FeedForward, JointAttention, RMSNorm, RotaryEmbedding

    u, a = cfg.experts
    attn = JointAttention(
        dim=u.width,
        dim_action=a.width,
        dim_head=cfg.head_dim,
        heads=cfg.heads,
        kv_heads=cfg.kv_heads,
    )
    ffs = [
        FeedForward(s.width, dim_inner=s.mlp_width, glu=True, rmsnorm=True, activation="gelu_tanh")
        for s in (u, a)
    ]
    action_norm = RMSNorm(a.width)  # PiZero norms actions before JointAttention (ada-RMSNorm)
    rotary = RotaryEmbedding(cfg.head_dim)
    modules = torch.nn.ModuleList([attn, *ffs, action_norm, rotary])

    def block(m: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
        rope = rotary(m.shape[1] + act.shape[1], device=m.device)
        mo, ao = attn(
            m, action_norm(act), multimodal_prefix_bidirectional_length=m.shape[1], rotary_emb=rope
        )
        m, act = m + mo, act + ao
        return [m + ffs[0](m), act + ffs[1](act)]

    return modules, block


def run_pizero_case(quick: bool, batch: int, args) -> None:
    try:
        import pi_zero_pytorch  # noqa: F401
    except ImportError:
        reason = (
            "pi-zero-pytorch is not installed: it is not a project dependency (it pulls "
            "transformers, accelerate, gymnasium[box2d], opencv, fastapi, ...); install it "
            "in a throwaway venv to run this peer"
        )
        log.info("skipping the pi-zero-pytorch peer: %s", reason)
        emit("mot_layer_vs_pizero", args, {}, None, skipped=reason)
        return
    device, dtype = torch.device(args.device), dtype_of(args.dtype)
    full = small_config(quick, 1)
    cfg = MoTConfig((full.experts[0], full.experts[2]), 1, full.heads, full.kv_heads, full.head_dim)
    layout = uga_layout(prefix=16 if quick else 96, state=1, actions=4 if quick else 8)
    lengths = [layout.expert_lengths()[s.name] for s in cfg.experts]
    stack = MoTStack(cfg).to(device=device, dtype=dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    xs = [
        torch.randn(batch, n, s.width, generator=gen).to(device, dtype)
        for n, s in zip(lengths, cfg.experts, strict=True)
    ]
    # Same mask semantics as pi0: bidirectional prefix, then causal (here: our UGA block rule).
    mask, positions = step_inputs(layout, device=device)
    modules, block = pizero_peer(cfg)
    modules.to(device=device, dtype=dtype)
    shapes = {
        "batch": batch,
        "tokens": layout.n,
        "per_expert": dict(zip(cfg.expert_names, lengths, strict=True)),
        "widths": [s.width for s in cfg.experts],
        "heads": cfg.heads,
        "kv_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
    }
    layer = stack.layers[0]
    cos, sin = rope_angles(positions, cfg.head_dim)
    for backward in (False, True):
        mode = "fwd_bwd" if backward else "fwd"
        t_mot, t_peer = timed_pair(
            (lambda: layer(xs, cos.to(dtype), sin.to(dtype), mask), list(stack.parameters())),
            (lambda: block(*xs), list(modules.parameters())),
            backward,
            args,
        )
        tokens = batch * layout.n
        emit(
            f"mot_layer_vs_pizero_{mode}",
            args,
            shapes,
            t_mot,
            tokens_per_s=tokens / t_mot.median_ms * 1e3,
            peer="pi-zero-pytorch JointAttention + 2 FeedForward",
            peer_median_ms=t_peer.median_ms,
            peer_iqr_ms=t_peer.iqr_ms,
            peer_tokens_per_s=tokens / t_peer.median_ms * 1e3,
            time_ratio_mot_over_peer=t_mot.median_ms / t_peer.median_ms,
        )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args("MoT layer/stack throughput against dense and pi-zero peers")
    quick = args.quick
    batch = 1 if quick else 4
    # F1-like proportions at small scale: prefix, 4 history tokens, 4 foresight scales, chunk.
    layout = uga_layout(
        prefix=16 if quick else 96,
        history=4,
        scales=(1, 2, 3, 4),
        state=1,
        actions=4 if quick else 8,
    )
    run_case("mot_small_layer", small_config(quick, 1), layout, batch, args)
    run_case("mot_small_stack", small_config(quick, 2 if quick else 6), layout, batch, args)
    run_cached_step_case(
        "mot_small_cached_action_step", small_config(quick, 2 if quick else 6), layout, batch, args
    )
    run_pizero_case(quick, batch, args)
    if torch.device(args.device).type != "cuda":
        reason = "paper-size configuration runs on CUDA only"
        log.info("skipping paper size: %s", reason)
        emit("mot_paper", args, {}, None, skipped=reason)
        return
    # Paper size (DESIGN.md s1/s6): 3 cameras x 256 + 48 text tokens, 30 history tokens,
    # 4 foresight scales, state + 50 actions: ~1.3k tokens.
    paper = uga_layout(prefix=3 * 256 + 48, history=30, scales=(1, 2, 3, 4), state=1, actions=50)
    cfg = paper_config()
    one = MoTConfig(
        cfg.experts,
        1,
        cfg.heads,
        cfg.kv_heads,
        cfg.head_dim,
        cfg.rope_base,
        cfg.norm_eps,
        cfg.backend,
    )
    run_case("mot_paper_layer", one, paper, 2 if quick else 8, args)
    run_case("mot_paper_stack", cfg, paper, 1 if quick else 4, args)


if __name__ == "__main__":
    main()
