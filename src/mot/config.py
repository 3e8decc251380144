"""Expert specs and the stack config of a Mixture-of-Transformers trunk (DESIGN.md s1).

Every expert runs every layer and all experts meet in ONE joint attention, so they must agree on
depth, query heads, KV heads, head_dim, RoPE base and norm eps; only their widths, MLPs and norm
kinds (plain or adaptive) may differ. The config holds the shared numbers once and rejects expert
specs that disagree.

Example:
    >>> cfg = MoTConfig(
    ...     experts=(ExpertSpec("understanding", 64, 256), ExpertSpec("action", 32, 128)),
    ...     depth=2, heads=4, kv_heads=1, head_dim=16)
    >>> cfg.expert_names
    ('understanding', 'action')
"""

from dataclasses import dataclass
from typing import Literal, get_args

from attention import ACTION, BACKENDS, GENERATION, UNDERSTANDING, Backend

MLPKind = Literal["geglu", "swiglu", "gelu"]
MLP_KINDS: tuple[str, ...] = get_args(MLPKind)
NormKind = Literal["rms", "adaptive"]
NORM_KINDS: tuple[str, ...] = get_args(NormKind)


class MoTConfigError(ValueError):
    """An expert spec or stack config that breaks the MoT's sharing rules."""


def _positive_int(owner: str, field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MoTConfigError(f"{owner} {field}: expected a positive int, got {value!r}")


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: its own width and MLP; attention geometry comes from the stack.

    heads / kv_heads / head_dim may be stated to document what an expert was pretrained with
    (e.g. Gemma-2B: 8 / 1 / 256); the stack then rejects the spec if they differ from its own.
    norm: ``"rms"`` (a learned gain) or ``"adaptive"`` (`mot.AdaptiveRMSNorm`: scale, shift and
    a residual gate from a per-sample conditioning vector of the expert's width, pi0.5's action
    expert); an adaptive expert needs that vector in every call that gives it tokens.
    """

    name: str
    width: int
    mlp_width: int
    # Plain str (checked against MLP_KINDS below) so a typo gets the named error in every mode.
    mlp: str = "geglu"
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    norm: str = "rms"  # one of NORM_KINDS, checked below

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "." in self.name:
            raise MoTConfigError(
                f"expert name: expected a non-empty string without '.', got {self.name!r}"
            )
        owner = f"expert {self.name!r}"
        _positive_int(owner, "width", self.width)
        _positive_int(owner, "mlp_width", self.mlp_width)
        if self.mlp not in MLP_KINDS:
            raise MoTConfigError(f"{owner} mlp: expected one of {MLP_KINDS}, got {self.mlp!r}")
        if self.norm not in NORM_KINDS:
            raise MoTConfigError(f"{owner} norm: expected one of {NORM_KINDS}, got {self.norm!r}")
        for field in ("heads", "kv_heads", "head_dim"):
            value = getattr(self, field)
            if value is not None:
                _positive_int(owner, field, value)


@dataclass(frozen=True)
class MoTConfig:
    """The shared geometry of all experts, plus the experts in sequence order.

    heads: query heads; kv_heads: KV heads (heads % kv_heads == 0; 1 = MQA as in Gemma-2B).
    rope_base: RoPE base (10000 in Gemma); norm_eps: RMSNorm epsilon (1e-6 in Gemma).
    backend: the attention kernel (`attention.attend`), overridable per call.
    """

    experts: tuple[ExpertSpec, ...]
    depth: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    backend: str = "sdpa"  # one of attention.BACKENDS, checked below

    def __post_init__(self) -> None:
        experts = tuple(self.experts)
        object.__setattr__(self, "experts", experts)
        if not experts:
            raise MoTConfigError("experts: expected at least one ExpertSpec")
        bad = [e for e in experts if not isinstance(e, ExpertSpec)]
        if bad:
            raise MoTConfigError(f"experts: expected ExpertSpec items, got {bad!r}")
        names = [e.name for e in experts]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise MoTConfigError(f"experts: names must be unique, repeated: {repeated}")
        for field in ("depth", "heads", "kv_heads", "head_dim"):
            _positive_int("MoTConfig", field, getattr(self, field))
        if self.heads % self.kv_heads != 0:
            raise MoTConfigError(
                f"MoTConfig heads: query heads ({self.heads}) must be a multiple of "
                f"kv_heads ({self.kv_heads})"
            )
        if self.head_dim % 2 != 0:
            raise MoTConfigError(
                f"MoTConfig head_dim: RoPE needs an even size, got {self.head_dim}"
            )
        if not self.rope_base > 1.0:
            raise MoTConfigError(f"MoTConfig rope_base: expected > 1, got {self.rope_base!r}")
        if not self.norm_eps > 0.0:
            raise MoTConfigError(f"MoTConfig norm_eps: expected > 0, got {self.norm_eps!r}")
        if self.backend not in BACKENDS:
            raise MoTConfigError(
                f"MoTConfig backend: expected one of {BACKENDS}, got {self.backend!r}"
            )
        # One joint attention: an expert pretrained with other attention geometry cannot join.
        for e in experts:
            for field in ("heads", "kv_heads", "head_dim"):
                stated, shared = getattr(e, field), getattr(self, field)
                if stated is not None and stated != shared:
                    raise MoTConfigError(
                        f"expert {e.name!r} {field}: the stack shares {field}={shared} across "
                        f"experts (one joint attention), the spec says {stated}"
                    )

    @property
    def expert_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.experts)

    @property
    def inner(self) -> int:
        """Width of the concatenated query heads (heads * head_dim)."""
        return self.heads * self.head_dim

    def expert(self, name: str) -> ExpertSpec:
        for e in self.experts:
            if e.name == name:
                return e
        raise MoTConfigError(
            f"expert {name!r}: not in this config, experts are {self.expert_names}"
        )


def paper_config(backend: Backend = "sdpa") -> MoTConfig:
    """F1's trunk (DESIGN.md s1): Gemma-2B understanding expert, 1024-wide G and A experts."""
    shared = {"heads": 8, "kv_heads": 1, "head_dim": 256}
    return MoTConfig(
        experts=(
            ExpertSpec(UNDERSTANDING, 2048, 16384, "geglu", **shared),
            ExpertSpec(GENERATION, 1024, 4096, "geglu", **shared),
            ExpertSpec(ACTION, 1024, 4096, "geglu", **shared),
        ),
        depth=18,
        rope_base=10000.0,
        norm_eps=1e-6,
        backend=backend,
        **shared,
    )
