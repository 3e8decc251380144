"""Tokenizer throughput: encode and decode images/s of `MultiScaleVQVAE` at 64 and 256 px.

For each image size, three JSON lines (images/s = batch / median time):
  tokenizer.encode      images -> token pyramid (encoder + our quantizer); peer: the same encoder
                        followed by vector-quantize-pytorch's HierarchicalVQ on the same latent
  tokenizer.decode      token pyramid -> image (our f_hat + decoder); peer: HierarchicalVQ's
                        get_output_from_indices + the same decoder
  tokenizer.quantize    quantizer alone on the same latent [b, z, L, L] (ours vs HierarchicalVQ)

HierarchicalVQ is set up like VAR (one shared codebook, 4 partially shared phi convs, no k-means
init) and run in eval mode so no codebook update is timed. Weights are random: throughput does
not depend on them. 64 px uses ``VQVAEConfig.small_64()``, 256 px VAR's ``vae_ch160v4096z32``
architecture; ``--quick`` shrinks both to tiny widths for the CI smoke test.

    .venv/bin/python benchmarks/tokenizer.py            # full sizes
    .venv/bin/python benchmarks/tokenizer.py --quick    # < 20 s on 2 CPU cores
"""

import logging
from dataclasses import replace

import torch
from vector_quantize_pytorch import HierarchicalVQ

from foresight import MultiScaleVQVAE, VQVAEConfig
from harness import dtype_of, emit, measure, parse_args

log = logging.getLogger("benchmarks.tokenizer")


def extra(p) -> None:
    p.add_argument("--batch", type=int, default=None, help="images per call (default per size)")


def cases(quick: bool) -> list[tuple[str, VQVAEConfig, int]]:
    small, var = VQVAEConfig.small_64(), VQVAEConfig.var_256()
    if quick:
        tiny = dict(channels=8, depth=1, norm_groups=4, vocab_size=256)
        return [
            ("64px", replace(small, **tiny), 2),
            ("256px", replace(var, channel_mult=(1, 1, 1, 1, 1), **tiny), 1),
        ]
    return [("64px", small, 16), ("256px", var, 2)]


def peer_for(cfg: VQVAEConfig) -> HierarchicalVQ:
    return HierarchicalVQ(
        dim=cfg.latent_dim,
        codebook_size=cfg.vocab_size,
        scales=cfg.scales,
        accept_image_fmap=True,
        kmeans_init=False,
        quant_resi=cfg.phi_ratio,
        share_quant_resi=cfg.phi_count,
    ).eval()


def run_case(args, name: str, cfg: VQVAEConfig, b: int) -> None:
    device, dtype = torch.device(args.device), dtype_of(args.dtype)
    vae = MultiScaleVQVAE(cfg).eval().to(device=device, dtype=dtype)
    # The quantizer works in float32 (as VAR's does); its codebook stays float32.
    vae.quantizer.float()
    peer = peer_for(cfg).to(device)
    images = torch.rand(b, 3, cfg.image_size, cfg.image_size, device=device, dtype=dtype) * 2 - 1
    f = vae.encode_latent(images).float()
    tokens = vae.quantizer.tokenize(f)
    peer_tokens = list(peer(f)[1])
    if len(peer_tokens) != len(tokens):
        raise SystemExit(f"{name}: peer returned {len(peer_tokens)} scales, ours {len(tokens)}")
    pairs = {
        "encode": (
            lambda: vae.encode(images),
            lambda: peer(vae.encode_latent(images).float())[1],
        ),
        "decode": (
            lambda: vae.decode_latent(vae.running_reconstruction(tokens)[-1].to(dtype)),
            lambda: vae.decode_latent(peer.get_output_from_indices(peer_tokens).to(dtype)),
        ),
        "quantize": (lambda: vae.quantizer.tokenize(f), lambda: peer(f)[1]),
    }
    shapes = {
        "batch": b,
        "image": [3, cfg.image_size, cfg.image_size],
        "latent": [cfg.latent_dim, cfg.latent_size, cfg.latent_size],
        "scales": list(cfg.scales),
        "tokens_per_image": cfg.num_tokens,
        "vocab": cfg.vocab_size,
        "channels": cfg.channels,
    }
    for what, (ours_fn, peer_fn) in pairs.items():
        # Ours then the peer, back to back, so machine load hits both alike.
        ours_t = measure(ours_fn, args.device, args.repeats, args.warmup)
        peer_t = measure(peer_fn, args.device, args.repeats, args.warmup)
        emit(
            f"tokenizer.{what}.{name}",
            args,
            shapes,
            ours_t,
            images_per_s=b / ours_t.median_ms * 1e3,
            peer="vector_quantize_pytorch.HierarchicalVQ",
            peer_median_ms=peer_t.median_ms,
            peer_images_per_s=b / peer_t.median_ms * 1e3,
            speedup_vs_peer=peer_t.median_ms / ours_t.median_ms,
        )
    log.info("%s: %d scales, %d tokens per image", name, len(tokens), cfg.num_tokens)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    if args.quick and args.device == "cpu":
        # Smoke test only: tiny convs on a shared 2-core machine run far faster on one thread
        # (two threads oversubscribe when other jobs run); the JSON reports the thread count.
        torch.set_num_threads(1)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, cfg, default_batch in cases(args.quick):
            run_case(args, name, cfg, args.batch or default_batch)


if __name__ == "__main__":
    main()
