"""`f1kit recipe plan`: what one rank holds while each training stage of a recipe runs.

From the model built on the meta device (shapes only, no memory) and the recipe's ``parallel:``
section, per training stage and per rank:

* **parameters**: fp32 master weights; DDP holds all of them, FSDP / HSDP ``1 / shards`` of the
  sharded ones plus the units kept whole (F1's frozen tokenizer);
* **gradients**: fp32, trainable parameters only (frozen experts have none); DDP keeps a second
  copy in its all-reduce buckets;
* **optimizer**: AdamW's two fp32 moments per trainable parameter, sharded like the gradients;
* **gathered**: FSDP's transient whole copy of the units in flight (the largest unit at the
  compute dtype, twice for the prefetch, plus its unsharded gradient before reduce-scatter;
  every unit with ``reshard_after_forward: false``);
* **activations** (an estimate): what autograd keeps per token of each expert in each MoT layer,
  ``(4 d + 2 q + kv + 4 m)`` values for width d, query width q, key/value width kv and MLP width m
  (the norms' inputs and outputs, Q/K/V and the attention output, the gated MLP's three
  intermediates), at 4 bytes (fp32) or 2 (bf16), plus the vision tower's tokens alike when its
  sizes are known; with activation checkpointing, each layer's input and one layer's inside.
  Attention scores are not counted (fused SDPA kernels keep none; ``backend: eager`` keeps
  ``heads * n^2`` per layer more).

Checked against a measured CPU run (`tests/f1kit/recipe/test_memory_plan.py`); the estimate
omits allocator slack, the data pipeline, framework workspaces and the CUDA context (~0.5-1 GiB).
"""

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from f1kit.model import F1
from f1kit.model.loading import build_empty
from f1kit.model.training import training_scales
from f1kit.recipe.schema import Recipe, TrainStage
from f1kit.train.parallel import ParallelSettings, shard_units, unsharded_units

GiB = 1 << 30


@dataclass(frozen=True)
class StagePlan:
    """One training stage's per-rank memory, in bytes."""

    stage: str
    strategy: str
    world_size: int
    shards: int
    local_batch: int
    tokens: dict[str, int]
    parameters: int
    gradients: int
    optimizer: int
    gathered: int
    activations: int
    activation_checkpointing: bool

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.gathered + self.activations

    def rows(self) -> list[tuple[str, float]]:
        """(what, GiB) in the order they are printed."""
        return [
            ("parameters", self.parameters / GiB),
            ("gradients", self.gradients / GiB),
            ("optimizer", self.optimizer / GiB),
            ("gathered", self.gathered / GiB),
            ("activations", self.activations / GiB),
            ("total", self.total / GiB),
        ]


def _count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def plan_recipe(recipe: Recipe, world_size: int = 1) -> list[StagePlan]:
    """The memory plan of every ``train`` stage of ``recipe`` on ``world_size`` ranks."""
    if world_size < 1:
        raise ValueError(f"world_size: expected >= 1, got {world_size}")
    parallel = recipe.parallel.settings()
    config = recipe.model.f1_config()
    model = build_empty(config)
    plans = []
    for stage in recipe.stages:
        if isinstance(stage, TrainStage):
            plans.append(_stage_plan(model, recipe, stage, parallel, world_size))
    return plans


def _stage_plan(
    model: F1, recipe: Recipe, stage: TrainStage, parallel: ParallelSettings, world: int
) -> StagePlan:
    model.set_trainable(stage.train)
    params = list(model.parameters())  # each shared parameter once
    trainable = [p for p in params if p.requires_grad]
    sharded = parallel.shards_over(world)
    shards = parallel.shards(world) if sharded else 1
    whole = {id(p) for m in (unsharded_units(model) if sharded else []) for p in m.parameters()}
    n_all, n_whole = _count(params), sum(p.numel() for p in params if id(p) in whole)
    n_train = _count(trainable)
    bf16 = stage.precision == "bf16"
    if sharded:
        parameters = 4 * ((n_all - n_whole) // shards + n_whole)
        gradients = 4 * n_train // shards
        optimizer = 8 * n_train // shards
        sizes = [_count(u.parameters()) for u in shard_units(model)]
        largest, compute = max(sizes, default=0), 2 if bf16 else 4
        # Resharding after forward keeps the unit in flight and the prefetched next one;
        # without it every unit stays gathered from its forward to its backward.
        held = 2 * largest if parallel.reshard_after_forward else sum(sizes)
        gathered = held * compute + largest * 4  # + the unit's unsharded fp32 gradient
    else:
        parameters, gradients, optimizer, gathered = 4 * n_all, 8 * n_train, 8 * n_train, 0
        if world == 1:
            gradients = 4 * n_train  # no DDP buckets in one process
    local = stage.batch_size // world
    tokens = _tokens(model, recipe, stage)
    activations = local * _activations_per_sample(
        model, recipe, tokens, bf16, parallel.activation_checkpointing
    )
    return StagePlan(
        stage=stage.name,
        strategy=parallel.strategy if world > 1 else "one process",
        world_size=world,
        shards=shards,
        local_batch=local,
        tokens=tokens,
        parameters=parameters,
        gradients=gradients,
        optimizer=optimizer,
        gathered=gathered,
        activations=activations,
        activation_checkpointing=parallel.activation_checkpointing,
    )


def _tokens(model: F1, recipe: Recipe, stage: TrainStage) -> dict[str, int]:
    """Tokens per sample of each expert in the stage's training pass (twin rows included)."""
    objective = stage.objective(recipe.model)
    prefix = model.understanding.tokens(len(recipe.data.cameras))
    k = training_scales(model, objective)
    acting = objective.action > 0
    layout = model.layout(prefix, k, actions=acting)
    counts: dict[str, int] = {}
    for segment in layout.segments:
        counts[segment.expert] = counts.get(segment.expert, 0) + sum(segment.blocks)
    if acting and model.generator is not None and objective.generation > 0 and k > 1:
        twin = model.generator.tokens_upto(k) - model.generator.config.token_counts[0]
        counts["generation"] = counts.get("generation", 0) + twin  # teacher-forced twin rows
    return counts


def _per_token(d: int, q: int, kv: int, m: int) -> int:
    return 4 * d + 2 * q + kv + 4 * m


def _activations_per_sample(
    model: F1, recipe: Recipe, tokens: dict[str, int], bf16: bool, checkpointing: bool
) -> int:
    size = 2 if bf16 else 4
    mot = model.trunk.config
    q, kv = mot.heads * mot.head_dim, 2 * mot.kv_heads * mot.head_dim
    specs = {s.name: s for s in mot.experts}
    inside = sum(
        n * _per_token(specs[e].width, q, kv, specs[e].mlp_width) for e, n in tokens.items()
    )
    inputs = sum(n * specs[e].width for e, n in tokens.items())
    trunk = (mot.depth * inputs + inside) if checkpointing else mot.depth * inside
    vision = _vision_values(recipe)
    return size * (trunk + vision)


def _vision_values(recipe: Recipe) -> int:
    """The vision tower's kept values per sample, when its config gives its sizes (vit)."""
    spec = recipe.model.vision
    args = spec.args
    needed = ("image_size", "patch_size", "width", "depth")
    if not all(isinstance(args.get(k), int) for k in needed):
        return 0
    n = (args["image_size"] // args["patch_size"]) ** 2 * len(recipe.data.cameras)
    width = args["width"]
    mlp = args.get("mlp_width", 4 * width)
    return args["depth"] * n * _per_token(width, width, 2 * width, mlp)


def format_plan(plans: list[StagePlan], gpu_memory_gib: float | None = None) -> str:
    """The plan as text, one block per stage; a warning line where a stage exceeds
    ``gpu_memory_gib``."""
    lines = []
    for plan in plans:
        ac = ", activation checkpointing" if plan.activation_checkpointing else ""
        lines.append(
            f"stage {plan.stage}: {plan.strategy}, {plan.world_size} rank(s), params split over"
            f" {plan.shards}, {plan.local_batch} samples per rank{ac}"
        )
        lines.append(
            "  tokens per sample: " + ", ".join(f"{k} {v}" for k, v in plan.tokens.items())
        )
        for what, gib in plan.rows():
            lines.append(f"  {what:<12} {gib:10.3f} GiB")
        if gpu_memory_gib is not None and plan.total / GiB > gpu_memory_gib:
            lines.append(
                f"  WARNING: {plan.total / GiB:.1f} GiB per rank exceeds the {gpu_memory_gib:g}"
                " GiB given; try parallel.strategy fsdp, activation_checkpointing, more ranks or"
                " a smaller batch_size"
            )
    return "\n".join(lines)


__all__ = ["GiB", "StagePlan", "format_plan", "plan_recipe"]
