"""Next-scale generation (KV-cached vs full-sequence) and teacher-forced training throughput.

Generator around `DefaultTransformer` with VAR's schedule (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
4096 codes, latent 32; the next-scale inputs come from VAR's multi-scale quantizer (random
codebook: speed does not depend on the weights). Generation of K = 4 (F1's inference, 30 tokens)
and K = 10 (680 tokens) scales at batch 1 and 16, one context token, F1's sampling (top-k 900,
top-p 0.95). The peer is the same generator without a KV cache (every scale reruns the whole
growing sequence). Training: teacher-forced loss + backward over all 10 scales, tokens/s.

    python benchmarks/next_scale.py                  # CPU float32, 2 threads
    python benchmarks/next_scale.py --device cuda    # bf16 autocast-free: the model in bf16
"""

import torch

from foresight.default_network import DefaultTransformer, TransformerConfig
from foresight.generator import NextScaleConfig, NextScaleGenerator
from foresight.quantizer import MultiScaleQuantizer
from harness import dtype_of, emit, measure, parse_args

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
QUICK_SCALES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # still K = 10, 385 tokens


class QuantizerTokenizer:
    """The next-scale inputs from VAR's quantizer alone (a `ScaleTokenizer` without a decoder)."""

    def __init__(self, quantizer: MultiScaleQuantizer) -> None:
        self.quantizer = quantizer

    @property
    def scales(self) -> tuple[int, ...]:
        return self.quantizer.scales

    @torch.no_grad()
    def teacher_forcing_inputs(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return self.quantizer.teacher_forcing_inputs(indices)

    def decode(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return self.quantizer.running_reconstruction(indices)[-1]


def main() -> None:
    def extra(p):
        p.add_argument("--width", type=int, default=None)
        p.add_argument("--depth", type=int, default=None)

    args = parse_args(__doc__, extra)
    device, dtype = args.device, dtype_of(args.dtype)
    cuda = torch.device(device).type == "cuda"
    scales, latent = (QUICK_SCALES, 8) if args.quick else (VAR_SCALES, 32)
    if args.quick:
        width, depth, heads, vocab, batches = 32, 1, 2, 64, (1,)
    else:
        width, depth, heads, vocab, batches = (
            (1024, 16, 16, 4096, (1, 16)) if cuda else (256, 4, 4, 4096, (1, 16))
        )
    width, depth = args.width or width, args.depth or depth
    torch.manual_seed(0)
    quantizer = MultiScaleQuantizer(vocab, latent, scales).to(device).eval()
    torch.nn.init.normal_(quantizer.codebook.weight)
    tokenizer = QuantizerTokenizer(quantizer)
    cfg = NextScaleConfig(scales, vocab, latent, width)
    net = DefaultTransformer(TransformerConfig(width=width, depth=depth, heads=heads))
    gen = NextScaleGenerator(cfg, net).to(device, dtype).eval()
    reps = {"repeats": args.repeats, "warmup": args.warmup}
    sampling = {"top_k": min(900, vocab), "top_p": 0.95, "temperature": 1.0}

    for b in batches:
        context = torch.randn(b, 1, width, device=device, dtype=dtype)
        for k in (4, 10):
            shapes = {
                "batch": b,
                "scales": k,
                "tokens": gen.tokens_upto(k),
                "width": width,
                "depth": depth,
                "heads": heads,
                "vocab": vocab,
            }

            def run(use_cache: bool, k=k, context=context):
                return gen.generate(
                    context, tokenizer, num_scales=k, generator=0, use_cache=use_cache, **sampling
                )

            peer = measure(lambda: run(False), device, **reps)
            timing = measure(lambda: run(True), device, **reps)
            emit(
                f"next_scale/generate_cached/b{b}_k{k}",
                args,
                shapes,
                timing,
                images_per_s=1e3 * b / timing.median_ms,
                peer="generate_uncached",
                peer_median_ms=peer.median_ms,
                peer_images_per_s=1e3 * b / peer.median_ms,
                speedup_vs_peer=peer.median_ms / timing.median_ms,
            )

    b = batches[-1]
    gen.train()
    g = torch.Generator(device=device).manual_seed(0)
    pyramid = [torch.randint(0, vocab, (b, s * s), device=device, generator=g) for s in scales]
    inputs = tokenizer.teacher_forcing_inputs(pyramid).to(dtype)
    context = torch.randn(b, 1, width, device=device, dtype=dtype)

    def train_step():
        gen.zero_grad(set_to_none=True)
        gen.loss(context, inputs, pyramid).loss.backward()

    timing = measure(train_step, device, **reps)
    tokens = b * gen.tokens_upto(len(scales))
    emit(
        "next_scale/teacher_forced_train_step",
        args,
        {
            "batch": b,
            "scales": len(scales),
            "tokens": tokens,
            "width": width,
            "depth": depth,
            "heads": heads,
            "vocab": vocab,
        },
        timing,
        tokens_per_s=1e3 * tokens / timing.median_ms,
    )


if __name__ == "__main__":
    main()
