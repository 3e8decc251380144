import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from f1kit.train import load_latest, load_model_weights, save_checkpoint, save_model_weights


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, as LM heads often are
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.register_buffer("scale", torch.arange(3.0))


def trainer_state(step: int) -> dict:
    return {
        "step": step,
        "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}},
        "rng": [(3, (1, 2), None)],
    }


def test_tied_weights_are_stored_once_and_come_back(tmp_path: Path) -> None:
    model = Tied()
    state = model.state_dict()
    # The counter-case: safetensors alone refuses the tied pair.
    with pytest.raises(RuntimeError, match="share memory"):
        safetensors.torch.save_file(state, str(tmp_path / "raw.safetensors"))
    save_model_weights(state, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    assert len(stored) == len(state) - 1 and stored < set(state)
    loaded = load_model_weights(tmp_path / "m.safetensors")
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    fresh = Tied()
    fresh.load_state_dict(loaded)
    assert fresh.head.weight is fresh.embed.weight
    assert torch.equal(fresh.frozen.weight, model.frozen.weight)


def test_checkpoint_round_trip_and_keep(tmp_path: Path) -> None:
    model = Tied()
    for step in (2, 4, 6):
        ckpt = save_checkpoint(
            tmp_path, step, model.state_dict(), trainer_state(step), {"loss": 1.5}
        )
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000004", "step-0000006"]
    assert (root / "latest").read_text().strip() == "step-0000006"
    latest = load_latest(tmp_path)
    assert latest is not None and latest.path == ckpt.path and latest.step == 6
    assert latest.meta["loss"] == 1.5 and latest.meta["step"] == 6
    state = latest.trainer_state()  # weights_only=True inside
    assert state["step"] == 6 and state["rng"] == [(3, (1, 2), None)]
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    other = Tied()
    latest.load_model(other)
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_unfinished_and_broken_checkpoints_are_ignored(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, 3, model.state_dict(), trainer_state(3), {})
    root = tmp_path / "checkpoints"
    # A run killed while writing step 5: half a temp dir, no pointer update.
    tmp = root / ".tmp-step-0000005"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\x00garbage")
    # A directory with the right name but missing files, and one whose meta disagrees.
    (root / "step-0000009").mkdir()
    (root / "step-0000009" / "meta.json").write_text("{}")
    found = load_latest(tmp_path)
    assert found is not None and found.step == 3
    assert not tmp.exists()
    # A pointer naming nothing complete falls back to the newest complete directory.
    (root / "latest").write_text("step-0000009\n")
    found = load_latest(tmp_path, clean=False)
    assert found is not None and found.step == 3
    (root / "latest").unlink()
    assert load_latest(tmp_path).step == 3
    meta = json.loads((root / "step-0000003" / "meta.json").read_text())
    meta["step"] = 4
    (root / "step-0000003" / "meta.json").write_text(json.dumps(meta))
    assert load_latest(tmp_path) is None


def test_redoing_a_step_replaces_stale_newer_checkpoints(tmp_path: Path) -> None:
    # A killed run published step 6's directory but not the pointer; the resumed run redoes 4..6.
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, a.state_dict(), trainer_state(step), {})
    (tmp_path / "checkpoints" / "latest").write_text("step-0000004\n")
    save_checkpoint(tmp_path, 5, b.state_dict(), trainer_state(5), {})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-0000004", "step-0000005"]
    save_checkpoint(tmp_path, 6, b.state_dict(), trainer_state(6), {})
    ckpt = load_latest(tmp_path)
    assert ckpt.step == 6
    assert torch.equal(load_model_weights(ckpt.model_path)["weight"], b.weight)
