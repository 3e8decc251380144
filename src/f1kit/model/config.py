"""`F1Config`: the whole F1 model as plain, validated data (a recipe's ``model:`` section).

Every field maps 1:1 onto a block's own config (DESIGN.md s1-s4): the trunk onto `mot.MoTConfig`,
the tokenizer onto `foresight.VQVAEConfig`, the action head onto `flow.FlowHeadConfig`. Components
with several implementations (vision encoder, text tokenizer, time sampler) are chosen by a
registered ``name`` plus ``args``. ``generation: null`` is the No-Gen ablation (a pi0-like reactive
policy: no Generation expert, no history, no foresight) built by the same code.

Unknown keys are errors (``extra="forbid"``), and pydantic names the key path of every bad value.

Example:
    >>> cfg = F1Config.tiny()
    >>> cfg.trunk.generation.width, cfg.generation.scales
    (64, 4)
    >>> F1Config.tiny(generation=False).generation is None
    True
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from attention import ACTION, GENERATION, UNDERSTANDING
from flow import Convention, FlowHeadConfig, ODESolver, make_time_sampler
from foresight import VQVAEConfig
from mot import ExpertSpec, MoTConfig


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(Strict):
    """A registered component: its ``name`` and the keyword ``args`` of its builder."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ExpertWidths(Strict):
    """One expert's own widths (attention geometry is shared by the trunk).

    norm: ``rms`` (a learned gain), or ``adaptive`` for the Action expert only: pi0.5's adaptive
    RMSNorms (`mot.AdaptiveRMSNorm`), modulated by the flow time; the flow head then conditions
    the trunk with its time vector (``conditioning="adanorm"``) instead of mixing the time into
    the action tokens.
    """

    width: int = Field(gt=0)
    mlp_width: int = Field(gt=0)
    mlp: Literal["geglu", "swiglu", "gelu"] = "geglu"
    norm: Literal["rms", "adaptive"] = "rms"


class TrunkConfig(Strict):
    """The MoT stack: shared depth / heads / head_dim, per-expert widths (DESIGN.md s1)."""

    depth: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    backend: Literal["eager", "sdpa", "sdpa_bias", "flex"] = "sdpa"
    understanding: ExpertWidths
    generation: ExpertWidths | None = None
    action: ExpertWidths

    def mot_config(self) -> MoTConfig:
        experts = [ExpertSpec(UNDERSTANDING, **self.understanding.model_dump())]
        if self.generation is not None:
            experts.append(ExpertSpec(GENERATION, **self.generation.model_dump()))
        experts.append(ExpertSpec(ACTION, **self.action.model_dump()))
        return MoTConfig(
            experts=tuple(experts),
            depth=self.depth,
            heads=self.heads,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            rope_base=self.rope_base,
            norm_eps=self.norm_eps,
            backend=self.backend,
        )


class TokenizerConfig(Strict):
    """The frozen multi-scale VQ-VAE: a preset plus overrides of `foresight.VQVAEConfig` fields.

    path: a directory or ``.safetensors`` file of trained weights (``MultiScaleVQVAE.save``), read
    when the model is built from a recipe; the weights also travel inside ``model.safetensors``.
    """

    preset: Literal["small_64", "var_256"] = "small_64"
    overrides: dict[str, Any] = Field(default_factory=dict)
    path: str | None = None

    def vqvae_config(self) -> VQVAEConfig:
        base = VQVAEConfig.small_64() if self.preset == "small_64" else VQVAEConfig.var_256()
        # YAML gives lists where the dataclass wants tuples (channel_mult, scales).
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.overrides.items()}
        fields = {**base.__dict__, **overrides}
        unknown = sorted(set(self.overrides) - set(base.__dict__))
        if unknown:
            raise ValueError(f"tokenizer.overrides: unknown VQVAEConfig fields {unknown}")
        return VQVAEConfig(**fields)


class GenerationConfig(Strict):
    """The Generation expert's scheme (DESIGN.md s3).

    history: past frames aggregated into history tokens (F1: 4, at offsets -9, -6, -3, 0).
    scales: foresight scales generated in stages II/III and at inference (F1: 4 of 10).
    camera: index of the camera whose frames are tokenized (history and foresight).
    top_k / top_p / temperature: foresight sampling (F1: 900, 0.95, 1.0).
    """

    history: int = Field(default=4, gt=0)
    scales: int = Field(default=4, gt=0)
    camera: int = Field(default=0, ge=0)
    history_in_prefix: bool = True
    top_k: int | None = 900
    top_p: float | None = 0.95
    temperature: float = Field(default=1.0, gt=0)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)


class ActionConfig(Strict):
    """The Action expert's flow head (DESIGN.md s4).

    action_dim / state_dim: padded dims the head works in (robots with fewer dims are
    zero-padded; pi0 uses 32). ``state_dim: null``: no state token (pi0.5, whose state is
    discretised into the instruction text by the caller: `f1kit.model.importers.pi05_prompt`);
    the model then takes no state. chunk: actions per chunk; execute: how many of them
    ``select_action`` serves before re-planning (<= chunk). weights_convention: the flow-time
    convention the weights were trained in, ``paper`` (noise at tau = 0, ours) or ``pi0``
    (noise at t = 1: pi0, openpi and the official F1 weights; `flow.Convention`), set by the
    importers; the loss and the solvers stay in the paper convention either way.
    """

    action_dim: int = Field(gt=0)
    state_dim: int | None = Field(gt=0)
    chunk: int = Field(gt=0)
    execute: int = Field(gt=0)
    solver: Component = Component(name="euler", args={"steps": 10})
    time_sampler: Component = Component(name="beta")
    weights_convention: Literal["paper", "pi0"] = "paper"

    @model_validator(mode="after")
    def _execute_within_chunk(self) -> "ActionConfig":
        if self.execute > self.chunk:
            raise ValueError(f"execute: {self.execute} exceeds the chunk length {self.chunk}")
        return self

    def head_config(self, width: int, adaptive: bool = False) -> FlowHeadConfig:
        """The flow head over an Action expert of ``width``; ``adaptive``: its norms are adaptive,
        so the time enters as their conditioning vector (pi0.5), not through the tokens."""
        solver = ODESolver(method=self.solver.name, **self.solver.args)
        sampler = make_time_sampler(self.time_sampler.name, **self.time_sampler.args)
        return FlowHeadConfig(
            action_dim=self.action_dim,
            chunk=self.chunk,
            width=width,
            state_dim=self.state_dim,
            conditioning="adanorm" if adaptive else "concat",
            time_sampler=sampler,
            solver=solver,
            weights_convention=Convention(self.weights_convention),
        )


class F1Config(Strict):
    """The F1 model. vision/text: registered names (``vit``/``siglip``, ``bytes``/``hf``).

    text_vocab: rows of the instruction embedding; None = the text tokenizer's vocabulary
    (set it to 257152 to hold Gemma's table when loading PaliGemma weights).
    """

    vision: Component = Component(name="vit")
    text: Component = Component(name="bytes", args={"max_length": 32})
    text_vocab: int | None = Field(default=None, gt=0)
    trunk: TrunkConfig
    generation: GenerationConfig | None = Field(default_factory=GenerationConfig)
    action: ActionConfig

    @model_validator(mode="after")
    def _experts_match(self) -> "F1Config":
        if (self.generation is None) != (self.trunk.generation is None):
            raise ValueError(
                "generation and trunk.generation: give both (F1) or neither (No-Gen); got "
                f"generation={'set' if self.generation else 'null'}, "
                f"trunk.generation={'set' if self.trunk.generation else 'null'}"
            )
        self.trunk.mot_config()  # the MoT's own sharing rules, with their named errors
        for name in ("understanding", "generation"):
            widths = getattr(self.trunk, name)
            if widths is not None and widths.norm != "rms":
                raise ValueError(
                    f"trunk.{name}.norm: {widths.norm!r} needs a conditioning vector per sample, "
                    "which only the Action expert has (the flow time); expected 'rms'"
                )
        self.action.head_config(self.trunk.action.width, self.adaptive_action)
        if self.generation is not None:
            vq = self.generation.tokenizer.vqvae_config()
            if self.generation.scales > len(vq.scales):
                raise ValueError(
                    f"generation.scales: {self.generation.scales} exceeds the tokenizer's "
                    f"{len(vq.scales)} scales {vq.scales}"
                )
        return self

    @property
    def adaptive_action(self) -> bool:
        """The Action expert has adaptive norms, conditioned on the flow time (pi0.5)."""
        return self.trunk.action.norm == "adaptive"

    @property
    def experts(self) -> tuple[str, ...]:
        return self.trunk.mot_config().expert_names

    @classmethod
    def tiny(cls, generation: bool = True, overrides: dict[str, Any] | None = None) -> "F1Config":
        """A CPU-trainable F1 (about 1 M trunk parameters) on 64 px images, 4-dim actions."""
        widths = {"mlp": "geglu"}
        data: dict[str, Any] = {
            "vision": {
                "name": "vit",
                "args": {
                    "image_size": 64,
                    "patch_size": 16,
                    "width": 64,
                    "depth": 2,
                    "heads": 4,
                    "mlp_width": 128,
                },
            },
            "text": {"name": "bytes", "args": {"max_length": 24}},
            "trunk": {
                "depth": 2,
                "heads": 4,
                "kv_heads": 1,
                "head_dim": 16,
                "understanding": {"width": 96, "mlp_width": 256, **widths},
                "generation": {"width": 64, "mlp_width": 128, **widths} if generation else None,
                "action": {"width": 64, "mlp_width": 128, **widths},
            },
            "generation": {} if generation else None,
            "action": {"action_dim": 4, "state_dim": 4, "chunk": 4, "execute": 4},
        }
        return cls.model_validate(_merge(data, overrides or {}))

    @classmethod
    def paper(cls, overrides: dict[str, Any] | None = None) -> "F1Config":
        """F1 at paper size (DESIGN.md s1): SigLIP-shaped ViT, Gemma-2B U, 1024-wide G and A,
        VAR's 256 px tokenizer, 4 generated scales, pi0's 32-dim padded state and actions."""
        shared = {"mlp": "geglu"}
        data: dict[str, Any] = {
            "vision": {
                "name": "vit",
                "args": {
                    "image_size": 224,
                    "patch_size": 14,
                    "width": 1152,
                    "depth": 27,
                    "heads": 16,
                    "mlp_width": 4304,
                },
            },
            "text": {"name": "bytes", "args": {"max_length": 48}},
            "text_vocab": 257152,
            "trunk": {
                "depth": 18,
                "heads": 8,
                "kv_heads": 1,
                "head_dim": 256,
                "understanding": {"width": 2048, "mlp_width": 16384, **shared},
                "generation": {"width": 1024, "mlp_width": 4096, **shared},
                "action": {"width": 1024, "mlp_width": 4096, **shared},
            },
            "generation": {"tokenizer": {"preset": "var_256"}},
            "action": {"action_dim": 32, "state_dim": 32, "chunk": 50, "execute": 50},
        }
        return cls.model_validate(_merge(data, overrides or {}))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: overrides win key by key, dicts merge recursively."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
