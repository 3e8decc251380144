"""One F1 training step (forward + backward + AdamW) per pass kind, against No-Gen's.

The contract (docs/contract.md) makes an acting step draw its foresight first (``foresee``: the
prefix pass and one cached pass per scale, no gradient) and carry a teacher-forced twin of the
scale inputs; this measures what that costs against a stage-I step (teacher-forced G only) and
the No-Gen peer's acting step, on the main job's model (``recipes/f1.yaml``) or the paper size.

    python benchmarks/f1_training.py                 # CPU, float32, 2 threads, batch 32
    python benchmarks/f1_training.py --quick         # batch 2, few repeats (smoke test)
    python benchmarks/f1_training.py --device cuda --size paper --batch 4
    python benchmarks/f1_training.py --recipe recipes/f1-ablation.yaml --threads 1

The draw's share is measured too (``foresee`` alone, timed the same way).
"""

import logging
import sys
from pathlib import Path

# benchmarks/flow.py is named like the `flow` package that f1kit imports: move this folder to the
# end of the import path so the package wins while `import harness` still finds the harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import torch  # noqa: E402
import yaml  # noqa: E402

from f1kit.model import F1, F1Config, Objective  # noqa: E402
from harness import dtype_of, emit, measure, parse_args  # noqa: E402

log = logging.getLogger("benchmarks.f1_training")
MAIN_JOB = Path(__file__).resolve().parents[1] / "recipes" / "f1.yaml"
ACTING = Objective(generation=0.1, action=1.0)  # stages II/III
ACTING_NO_GEN = Objective(action=1.0)  # the same stage on the No-Gen peer
ALIGN = Objective(generation=1.0, action=0.0)  # stage I (all scales, teacher-forced)


def extra(p) -> None:
    p.add_argument("--size", choices=("main", "paper"), default="main")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--recipe", type=Path, default=MAIN_JOB, help="--size main: the recipe whose model to time"
    )


def config_of(size: str, generation: bool, recipe: Path = MAIN_JOB) -> F1Config:
    if size == "main":
        model = yaml.safe_load(recipe.read_text())["model"]
        if model.get("generation") is None and generation:
            raise SystemExit(f"--recipe: {recipe} is No-Gen; give the F1 recipe (its peer is made)")
        if not generation:
            model = {**model, "generation": None, "trunk": {**model["trunk"], "generation": None}}
        return F1Config.model_validate(model)
    if generation:
        return F1Config.paper()
    return F1Config.paper(overrides={"generation": None, "trunk": {"generation": None}})


def make_batch(model: F1, batch: int, device: str) -> dict:
    """A batch as the recipes feed it: uint8 frames, normalised state/actions, precomputed codes."""
    cfg, g = model.config, torch.Generator().manual_seed(0)
    size = model.understanding.vision.image_size
    act = cfg.action
    out = {
        "images": torch.randint(0, 256, (batch, 1, 3, size, size), generator=g, dtype=torch.uint8),
        "state": torch.randn(batch, act.state_dim, generator=g),
        "action": torch.randn(batch, act.chunk, act.action_dim, generator=g),
        "action_is_pad": torch.zeros(batch, act.chunk, dtype=torch.bool),
        "task": ["open the top drawer"] * batch,
    }
    if model.tokenizer is not None and cfg.generation is not None:
        n = sum(s * s for s in model.tokenizer.scales)
        vocab = model.tokenizer.config.vocab_size
        out["history_codes"] = torch.randint(
            0, vocab, (batch, cfg.generation.history, n), generator=g
        )
        out["foresight_codes"] = torch.randint(0, vocab, (batch, n), generator=g)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def step_fn(model: F1, batch: dict, objective: Objective, dtype: torch.dtype):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    device_type = next(model.parameters()).device.type
    autocast = dtype != torch.float32

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype, enabled=autocast):
            loss, _ = model(
                batch, torch.Generator(batch["state"].device).manual_seed(1), objective=objective
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    batch_size = 2 if args.quick else args.batch
    dtype = dtype_of(args.dtype)
    reps = {"repeats": args.repeats, "warmup": args.warmup}
    torch.manual_seed(0)
    timings, shapes = {}, {}
    for generation in (True, False):
        model = F1(config_of(args.size, generation, args.recipe)).to(args.device).train()
        batch = make_batch(model, batch_size, args.device)
        variant = "f1" if generation else "no_gen"
        shapes[variant] = {
            "size": args.size,
            "recipe": args.recipe.name if args.size == "main" else None,
            "batch": batch_size,
            "scales": (model.config.generation.scales if model.config.generation else 0),
        }
        timings[(variant, "acting")] = measure(
            step_fn(model, batch, ACTING if generation else ACTING_NO_GEN, dtype),
            args.device,
            **reps,
        )
        if generation:
            timings[(variant, "align")] = measure(
                step_fn(model, batch, ALIGN, dtype), args.device, **reps
            )
            with torch.no_grad():
                prefix = model.encode_prefix(batch["images"], batch["task"], batch["history_codes"])
                timings[(variant, "foresee")] = measure(
                    lambda m=model, p=prefix: m.foresee(p, generator=0), args.device, **reps
                )
        del model
    peer = timings[("no_gen", "acting")]
    for (variant, kind), timing in timings.items():
        emit(
            f"f1_training/{args.size}/{variant}/{kind}",
            args,
            shapes[variant],
            timing,
            samples_per_s=batch_size / timing.median_ms * 1e3 if kind != "foresee" else None,
            peer="no_gen acting step (U + A, same widths, same batch)",
            peer_median_ms=peer.median_ms,
            ratio_to_peer=timing.median_ms / peer.median_ms,
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
