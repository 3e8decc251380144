import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from f1kit.train import (
    WeightsError,
    load_model_weights,
    save_checkpoint,
    save_model_weights,
    tied_names,
)
from f1kit.train.checkpoint import Checkpoint


class TwoLayers(nn.Module):
    """Two same-shaped layers: an alias could silently load one's weights into the other."""

    def __init__(self, tie: bool = False) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        if tie:
            self.b.weight = self.a.weight


def crafted(path: Path, model: nn.Module, aliases: dict[str, str], drop: tuple = ()) -> Path:
    tensors = {k: v.clone() for k, v in model.state_dict().items() if k not in drop}
    save_file(tensors, str(path), metadata={"f1kit.aliases": json.dumps(aliases)})
    return path


def test_ties_are_the_shared_views_of_the_model() -> None:
    assert tied_names(TwoLayers(tie=True).state_dict()) == {"b.weight": "a.weight"}
    assert tied_names(TwoLayers().state_dict()) == {}


def test_an_alias_over_a_stored_tensor_is_refused(tmp_path: Path) -> None:
    model = TwoLayers()
    path = crafted(tmp_path / "m.safetensors", model, {"b.weight": "a.weight"})
    with pytest.raises(WeightsError, match=r"b\.weight -> a\.weight: b\.weight is a stored tensor"):
        load_model_weights(path)
    with pytest.raises(WeightsError, match=str(path)):
        load_model_weights(path, model=model)


def test_an_alias_the_model_does_not_tie_is_refused(tmp_path: Path) -> None:
    model = TwoLayers()
    # b.weight not stored at all: only the model can tell that the alias is a lie.
    path = crafted(tmp_path / "m.safetensors", model, {"b.weight": "a.weight"}, drop=("b.weight",))
    with pytest.raises(WeightsError, match="the model does not tie them; the model ties nothing"):
        load_model_weights(path, model=model)
    ckpt_dir = tmp_path / "checkpoints" / "step-0000001"
    ckpt_dir.mkdir(parents=True)
    crafted(ckpt_dir / "model.safetensors", model, {"b.weight": "a.weight"}, drop=("b.weight",))
    before = model.b.weight.clone()
    with pytest.raises(WeightsError, match="does not tie"):
        Checkpoint(ckpt_dir, 1, {}).load_model(model)
    assert torch.equal(model.b.weight, before)
    # The counter-case: for a model that does tie them the same file loads.
    tied = TwoLayers(tie=True)
    state = load_model_weights(path, model=tied)
    tied.load_state_dict(state)
    assert torch.equal(tied.b.weight, model.a.weight)


def test_real_ties_round_trip_in_either_order(tmp_path: Path) -> None:
    model = TwoLayers(tie=True)
    save_model_weights(model.state_dict(), tmp_path / "m.safetensors")
    fresh = TwoLayers(tie=True)
    fresh.load_state_dict(load_model_weights(tmp_path / "m.safetensors", model=fresh))
    assert torch.equal(fresh.a.weight, model.a.weight) and fresh.b.weight is fresh.a.weight
    # A file from a model that named the pair the other way round is the same tie.
    path = crafted(tmp_path / "r.safetensors", model, {"a.weight": "b.weight"}, drop=("a.weight",))
    assert torch.equal(load_model_weights(path, model=fresh)["a.weight"], model.a.weight)
    ckpt = save_checkpoint(tmp_path, 1, model.state_dict(), {"step": 1}, {})
    again = TwoLayers(tie=True)
    ckpt.load_model(again)  # checked against the model's ties, which it declares
    assert torch.equal(again.b.weight, model.a.weight) and again.b.weight is again.a.weight


def test_a_truncated_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model_weights(TwoLayers().state_dict(), path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(WeightsError, match=f"^{path}: unreadable"):
        load_model_weights(path)
