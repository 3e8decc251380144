"""Fused Q/K/V (one matmul per expert per layer), stored split as q/k/v for checkpoints."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open

from attention import attend
from mot import MoTConfig
from mot.layer import MoTLayer
from mot.rope import apply_rope, rope_angles
from tests.mot.helpers import random_stack, tiny_config

QKV_KEYS = ("q.weight", "k.weight", "v.weight")


def _layer(seed: int = 0) -> MoTLayer:
    """One layer of three experts, GQA (4 heads, 2 kv heads: Q and K/V differ in size)."""
    return random_stack(tiny_config(depth=1), seed=seed).layers[0]


def _inputs(cfg: MoTConfig, lengths=(3, 0, 2), seed: int = 1) -> list[torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, n, s.width, generator=gen) if n else None
        for s, n in zip(cfg.experts, lengths, strict=True)
    ]


def _three_matmul_reference(layer: MoTLayer, xs, cos, sin, mask, swap_kv: bool = False):
    """The layer as it ran before the fusion: three matmuls per expert, with the q/k/v weights
    read from the state dict (cloned: separate tensors, no fused storage)."""
    cfg, state = layer.config, layer.state_dict()
    present = [(s.name, x) for s, x in zip(cfg.experts, xs, strict=True) if x is not None]
    qs, ks, vs = [], [], []
    for name, x in present:
        wq, wk, wv = (state[f"experts.{name}.{key}"].clone() for key in QKV_KEYS)
        if swap_kv:
            wk, wv = wv, wk
        h = layer.experts[name].attn_norm(x)
        qs.append(F.linear(h, wq))
        ks.append(F.linear(h, wk))
        vs.append(F.linear(h, wv))
    q = apply_rope(rearrange(torch.cat(qs, 1), "b n (h e) -> b h n e", h=cfg.heads), cos, sin)
    k = apply_rope(rearrange(torch.cat(ks, 1), "b n (g e) -> b g n e", g=cfg.kv_heads), cos, sin)
    v = rearrange(torch.cat(vs, 1), "b n (g e) -> b g n e", g=cfg.kv_heads)
    out = rearrange(attend(q, k, v, mask[None], backend=cfg.backend), "b h n e -> b n (h e)")
    pieces = iter(out.split([x.shape[1] for _, x in present], dim=1))
    outputs = []
    for spec, x in zip(cfg.experts, xs, strict=True):
        if x is None:
            outputs.append(None)
            continue
        block = layer.experts[spec.name]
        h = x + block.o(next(pieces))
        outputs.append(h + block.mlp(block.mlp_norm(h)))
    return outputs


def test_fused_forward_equals_the_three_matmul_reference() -> None:
    layer = _layer()
    xs = _inputs(layer.config)
    cos, sin = rope_angles(torch.arange(5), layer.config.head_dim)
    mask = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    with torch.no_grad():
        got = layer(xs, cos, sin, mask)
        want = _three_matmul_reference(layer, xs, cos, sin, mask)
        wrong = _three_matmul_reference(layer, xs, cos, sin, mask, swap_kv=True)
    assert got[1] is None and want[1] is None  # the absent expert passes through
    for g, w in ((got[0], want[0]), (got[2], want[2])):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    # Counter-case: the reference is sensitive to which rows are K and which are V.
    assert not torch.allclose(got[0], wrong[0], atol=1e-3)


def test_state_dict_keeps_q_k_v_as_views_of_the_fused_weight() -> None:
    layer = _layer()
    cfg = layer.config
    state = layer.state_dict()
    assert not [k for k in state if "qkv" in k]
    names = [n for n, _ in layer.named_parameters()]
    # Same keys, same order as the three Linears had: q, k, v where qkv is now.
    old = [k for n in names for k in ([n] if "qkv" not in n else [n[:-10] + w for w in QKV_KEYS])]
    assert list(state) == old
    for spec in cfg.experts:
        block, p = layer.experts[spec.name], f"experts.{spec.name}."
        e = cfg.head_dim
        assert state[p + "q.weight"].shape == (cfg.heads * e, spec.width)
        assert state[p + "k.weight"].shape == (cfg.kv_heads * e, spec.width)
        assert state[p + "v.weight"].shape == (cfg.kv_heads * e, spec.width)
        ptr = block.qkv.weight.untyped_storage().data_ptr()
        assert all(state[p + k].untyped_storage().data_ptr() == ptr for k in QKV_KEYS)
        # Writing into the state dict's tensor writes the fused weight's rows.
        new_k = torch.randn(cfg.kv_heads * e, spec.width)
        assert not torch.equal(block.qkv_weights()[1], new_k)
        state[p + "k.weight"].copy_(new_k)
        assert torch.equal(block.qkv_weights()[1], new_k)
        assert torch.equal(block.qkv.weight[cfg.heads * e : (cfg.heads + cfg.kv_heads) * e], new_k)


def test_strict_load_round_trips_from_q_k_v() -> None:
    source, target = _layer(seed=0), _layer(seed=1)
    saved = {k: t.clone() for k, t in source.state_dict().items()}
    assert not torch.equal(target.experts["understanding"].qkv.weight, saved_fused(saved))
    result = target.load_state_dict(saved, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(target.experts["understanding"].qkv.weight, saved_fused(saved))
    assert all(torch.equal(target.state_dict()[k], t) for k, t in saved.items())
    xs = _inputs(source.config)
    cos, sin = rope_angles(torch.arange(5), source.config.head_dim)
    mask = torch.ones(5, 5, dtype=torch.bool)
    with torch.no_grad():
        for a, b in zip(source(xs, cos, sin, mask), target(xs, cos, sin, mask), strict=True):
            assert (a is None and b is None) or torch.equal(a, b)


def saved_fused(state: dict[str, torch.Tensor], name: str = "understanding") -> torch.Tensor:
    return torch.cat([state[f"experts.{name}.{k}"] for k in QKV_KEYS])


def test_assign_load_into_a_meta_built_layer_gives_the_saved_tensors() -> None:
    source = _layer()
    saved = {k: t.clone() for k, t in source.state_dict().items()}
    with torch.device("meta"):
        empty = MoTLayer(source.config)
    # Built on meta, the state dict shows the stored names and shapes.
    meta_state = empty.state_dict()
    assert {k: t.shape for k, t in meta_state.items()} == {k: t.shape for k, t in saved.items()}
    assert all(t.is_meta for t in meta_state.values())
    empty.load_state_dict(saved, strict=True, assign=True)
    weight = empty.experts["action"].qkv.weight
    assert isinstance(weight, torch.nn.Parameter) and not weight.is_meta and weight.requires_grad
    assert not [n for n, p in empty.named_parameters() if p.is_meta]
    assert all(torch.equal(empty.state_dict()[k], t) for k, t in saved.items())


def test_missing_mis_shaped_or_fused_keys_are_named_errors() -> None:
    layer = _layer()
    saved = {k: t.clone() for k, t in layer.state_dict().items()}
    q = "experts.generation.q.weight"
    missing = {k: t for k, t in saved.items() if k != q}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "' + q + '"') as err:
        layer.load_state_dict(missing, strict=True)
    assert "qkv" not in str(err.value)  # reported under the stored name only
    with torch.device("meta"):
        empty = MoTLayer(layer.config)
    with pytest.raises(RuntimeError, match=q):
        empty.load_state_dict(missing, strict=True, assign=True)
    # Non-strict: reported, and the given k/v still land in the fused weight.
    other = _layer(seed=2)
    result = other.load_state_dict(missing, strict=False)
    assert result.missing_keys == [q] and not result.unexpected_keys
    _, k, v = other.experts["generation"].qkv_weights()
    assert torch.equal(k, saved["experts.generation.k.weight"])
    assert torch.equal(v, saved["experts.generation.v.weight"])
    # A mis-shaped one is a size mismatch under its own name (Q/K/V rows cannot be misread).
    v_key = "experts.action.v.weight"
    with pytest.raises(RuntimeError, match=f"size mismatch for {v_key}"):
        layer.load_state_dict({**saved, v_key: saved[v_key][:-1]}, strict=True)
    # qkv.weight is no key of the state dict: unexpected, like any other unknown key.
    fused = {**saved, "experts.action.qkv.weight": layer.experts["action"].qkv.weight}
    unexpected = r'Unexpected key\(s\) in state_dict: "experts.action.qkv.weight"'
    with pytest.raises(RuntimeError, match=unexpected):
        layer.load_state_dict(fused, strict=True)


def test_f1_files_keep_the_q_k_v_layout(tmp_path) -> None:
    """An F1 saved with save_model_weights stores q/k/v (views are not taken for ties) and
    `registry.expected_shapes` (built on meta) still lists them with their own shapes."""
    from f1kit.model import F1, F1Config
    from f1kit.model.importers.parts import PARTS
    from f1kit.model.importers.registry import expected_shapes
    from f1kit.train import save_model_weights, tied_names

    config = F1Config.tiny()
    model = F1(config)
    state = model.state_dict()
    assert not [k for k in state if k.startswith("trunk.") and ".qkv." in k]
    assert not [k for k in tied_names(state) if k.endswith(QKV_KEYS)]
    path = tmp_path / "model.safetensors"
    save_model_weights(state, path)
    with safe_open(str(path), framework="pt") as f:
        stored = list(f.keys())
        on_disk = {k: tuple(f.get_slice(k).get_shape()) for k in stored}
    q = "trunk.layers.0.experts.understanding.q.weight"
    trunk = config.trunk.mot_config()
    assert on_disk[q] == (trunk.heads * trunk.head_dim, trunk.experts[0].width)
    assert all(on_disk[k] == tuple(t.shape) for k, t in state.items() if k.endswith(QKV_KEYS))
    shapes = expected_shapes(config, PARTS)
    assert {k: s for k, s in shapes.items() if k.startswith("trunk.")} == {
        k: tuple(t.shape) for k, t in state.items() if k.startswith("trunk.")
    }
