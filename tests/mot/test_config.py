"""Expert specs and the stack config: sharing rules and the paper-size numbers."""

import pytest

from attention import ACTION, GENERATION, UNDERSTANDING
from mot import ExpertSpec, MoTConfig, MoTConfigError, paper_config


def _config(**overrides) -> MoTConfig:
    fields = {
        "experts": (ExpertSpec("u", 16, 32), ExpertSpec("a", 8, 16)),
        "depth": 2,
        "heads": 4,
        "kv_heads": 2,
        "head_dim": 8,
    }
    fields.update(overrides)
    return MoTConfig(**fields)


def test_valid_config_keeps_expert_order() -> None:
    cfg = _config()
    assert cfg.expert_names == ("u", "a")
    assert cfg.inner == 32
    assert cfg.expert("a").width == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"experts": ()}, "at least one"),
        ({"experts": (ExpertSpec("u", 8, 8), ExpertSpec("u", 4, 4))}, "repeated: \\['u'\\]"),
        ({"depth": 0}, "depth: expected a positive int"),
        ({"heads": 6, "kv_heads": 4}, "multiple of kv_heads"),
        ({"head_dim": 7}, "even size"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"rope_base": 1.0}, "rope_base"),
        ({"backend": "cuda_magic"}, "backend: expected one of"),
        ({"experts": (ExpertSpec("u", 16, 32, heads=8),)}, "expert 'u' heads: the stack shares"),
        ({"experts": (ExpertSpec("u", 16, 32, head_dim=16),)}, "expert 'u' head_dim"),
        ({"experts": (ExpertSpec("u", 16, 32, kv_heads=1),)}, "expert 'u' kv_heads"),
    ],
)
def test_config_rejects_violations(overrides: dict, message: str) -> None:
    with pytest.raises(MoTConfigError, match=message):
        _config(**overrides)


def test_spec_stating_the_shared_geometry_is_accepted() -> None:
    cfg = _config(experts=(ExpertSpec("u", 16, 32, heads=4, kv_heads=2, head_dim=8),))
    assert cfg.experts[0].heads == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "width": 8, "mlp_width": 8}, "expert name"),
        ({"name": "a.b", "width": 8, "mlp_width": 8}, "without '.'"),
        ({"name": "a", "width": 0, "mlp_width": 8}, "expert 'a' width"),
        ({"name": "a", "width": 8, "mlp_width": -1}, "expert 'a' mlp_width"),
        ({"name": "a", "width": 8, "mlp_width": 8, "mlp": "relu"}, "expert 'a' mlp: expected"),
        ({"name": "a", "width": True, "mlp_width": 8}, "expert 'a' width"),
    ],
)
def test_spec_rejects_bad_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(MoTConfigError, match=message):
        ExpertSpec(**kwargs)


def test_unknown_expert_lookup_names_the_experts() -> None:
    with pytest.raises(MoTConfigError, match="experts are \\('u', 'a'\\)"):
        _config().expert("g")


def test_paper_config_numbers() -> None:
    cfg = paper_config()
    assert cfg.expert_names == (UNDERSTANDING, GENERATION, ACTION)
    assert [(e.width, e.mlp_width, e.mlp) for e in cfg.experts] == [
        (2048, 16384, "geglu"),
        (1024, 4096, "geglu"),
        (1024, 4096, "geglu"),
    ]
    assert (cfg.depth, cfg.heads, cfg.kv_heads, cfg.head_dim) == (18, 8, 1, 256)
    assert (cfg.rope_base, cfg.norm_eps) == (10000.0, 1e-6)
