"""One post-train step of F1 through the trainer's sharded path (FSDP2 + activation checkpointing,
bf16 compute, fp32 master weights and reduction) on one device: step time and peak memory,
against the unsharded step (fp32 weights, bf16 autocast) in the same run.

Issue 19's GPU check: at paper size (``recipes/f1-paper.yaml``'s model, post-train batch 16 per
GPU) the unsharded step holds fp32 weights, gradients and AdamW moments (~16 bytes per
parameter, ~58 GB for 3.6 B) plus activations; the sharded one on one GPU the same states but
bf16 compute copies of one unit at a time and each MoT layer's input only.

    python benchmarks/f1_fsdp_step.py --device cuda --size paper --batch 16
    python benchmarks/f1_fsdp_step.py --quick            # tiny model on CPU (gloo), smoke test

A one-rank process group (``HashStore``) stands in for torchrun: FSDP needs a group, and one
rank is what one lent GPU allows. The peer step runs after the sharded one (``--no-peer`` skips
it, e.g. when it does not fit).
"""

import logging
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from f1_training import ACTING, config_of, make_batch  # noqa: E402
from f1kit.global_batch import GlobalBatch  # noqa: E402
from f1kit.model import F1, F1Config  # noqa: E402
from f1kit.train import LossModule, ParallelSettings  # noqa: E402
from f1kit.train.parallel import sharded_replica  # noqa: E402
from harness import emit, measure, parse_args  # noqa: E402

log = logging.getLogger("benchmarks.f1_fsdp_step")
GiB = 1 << 30


def extra(p) -> None:
    p.add_argument("--size", choices=("main", "paper"), default="paper")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--no-peer", action="store_true", help="skip the unsharded step")


def loss_fn(model: F1, batch: dict, draws: GlobalBatch):
    return model(batch, draws, objective=ACTING)


def step_fn(module, net, batch: dict, device: torch.device):
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    generator = torch.Generator(device=device)
    draws = GlobalBatch.whole(generator, batch["state"].shape[0])

    def step() -> None:
        generator.manual_seed(0)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = module(batch, draws)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    batch_size = 2 if args.quick else args.batch
    config = F1Config.tiny() if args.quick else config_of(args.size, True)
    torch.manual_seed(0)
    model = F1(config).train()  # on the host, as a recipe holds it under a sharded strategy
    model.set_trainable(model.experts)
    batch = make_batch(model, batch_size, args.device)
    settings = ParallelSettings("fsdp", activation_checkpointing=True)
    shapes = {"size": "tiny" if args.quick else args.size, "batch": batch_size, "ranks": 1}
    reps = {"repeats": args.repeats, "warmup": args.warmup}
    module, net = sharded_replica(
        model,
        lambda m: LossModule(m, loss_fn),
        settings,
        settings.mesh(device, 1),
        device,
        "bf16",
    )
    sharded = measure(step_fn(module, net, batch, device), args.device, **reps)
    sharded_peak = peak_gib(device)
    del module, net
    peer, peer_peak = None, None
    if not args.no_peer:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        plain = model.to(device)
        peer = measure(
            step_fn(LossModule(plain, loss_fn), plain, batch, device), args.device, **reps
        )
        peer_peak = peak_gib(device)
    args.dtype = "bfloat16"  # the compute dtype of both steps (weights and moments stay fp32)
    emit(
        f"f1_fsdp_step/{shapes['size']}/fsdp_ac_bf16",
        args,
        shapes,
        sharded,
        peak_memory_gib=sharded_peak,
        samples_per_s=batch_size / sharded.median_ms * 1e3,
        parameters=sum(p.numel() for p in model.parameters()),
        peer="unsharded step: fp32 weights on the device, bf16 autocast, no checkpointing",
        peer_median_ms=None if peer is None else peer.median_ms,
        peer_peak_memory_gib=peer_peak,
        ratio_to_peer=None if peer is None else sharded.median_ms / peer.median_ms,
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
