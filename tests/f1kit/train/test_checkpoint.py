import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from f1kit.train import (
    CheckpointError,
    NoValidCheckpointError,
    load_latest,
    load_model_weights,
    save_checkpoint,
    save_model_weights,
    verify_checkpoint,
)


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
    # Checkpoints exist but none can be resumed: an error, never a silent fresh start.
    with pytest.raises(
        NoValidCheckpointError, match=r"step-0000003/meta\.json: \d+ bytes, the manifest says"
    ):
        load_latest(tmp_path)


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


def two_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    model = Tied()
    for step in (2, 4):
        save_checkpoint(tmp_path, step, model.state_dict(), trainer_state(step), {})
    root = tmp_path / "checkpoints"
    return root / "step-0000002", root / "step-0000004"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt", "meta.json"])
def test_a_truncated_latest_falls_back_to_the_older_checkpoint(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    older, newest = two_checkpoints(tmp_path)
    truncate(newest / name)
    with caplog.at_level("WARNING"):
        found = load_latest(tmp_path)
    assert found is not None and found.path == older
    assert str(newest / name) in caplog.text and "manifest says" in caplog.text
    other = Tied()
    found.load_model(other)  # the older one is whole
    assert found.trainer_state()["step"] == 2


def test_same_size_damage_is_caught_by_the_hash_only(tmp_path: Path) -> None:
    older, newest = two_checkpoints(tmp_path)
    data = bytearray((newest / "trainer.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: the size still matches
    (newest / "trainer.pt").write_bytes(bytes(data))
    assert load_latest(tmp_path).path == older
    # The counter-case: sizes alone do not see it.
    assert load_latest(tmp_path, hashes=False).path == newest


def test_no_valid_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    older, newest = two_checkpoints(tmp_path)
    truncate(newest / "model.safetensors")
    (older / "trainer.pt").unlink()
    with pytest.raises(NoValidCheckpointError) as info:
        load_latest(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'checkpoints'}: no valid checkpoint")
    assert str(newest / "model.safetensors") in message
    assert f"{older / 'trainer.pt'}: missing" in message


def without_manifest(ckpt: Path) -> None:
    (ckpt / "manifest.json").unlink()  # as written before manifests


def test_a_checkpoint_without_manifest_still_loads(tmp_path: Path) -> None:
    older, newest = two_checkpoints(tmp_path)
    without_manifest(older)
    without_manifest(newest)
    assert load_latest(tmp_path).path == newest
    truncate(newest / "trainer.pt")  # structure is still checked: the zip directory is gone
    found = load_latest(tmp_path)
    assert found.path == older
    found.load_model(Tied())
    assert found.trainer_state()["step"] == 2


def test_an_unreadable_file_passing_the_structure_check_is_named(tmp_path: Path) -> None:
    _, newest = two_checkpoints(tmp_path)
    without_manifest(newest)
    path = newest / "trainer.pt"
    with zipfile.ZipFile(path) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    pickle = next(n for n in entries if n.endswith("data.pkl"))
    entries[pickle] = b"garbage"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    ckpt = load_latest(tmp_path)
    assert ckpt.path == newest  # not detectable without a manifest
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: unreadable"):
        ckpt.trainer_state()


def test_the_manifest_is_written_inside_the_atomic_rename(tmp_path: Path) -> None:
    _, newest = two_checkpoints(tmp_path)
    manifest = json.loads((newest / "manifest.json").read_text())
    for name in ("model.safetensors", "trainer.pt", "meta.json"):
        data = (newest / name).read_bytes()
        assert manifest["files"][name] == {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }


def test_meta_naming_another_step_is_refused(tmp_path: Path) -> None:
    _, newest = two_checkpoints(tmp_path)
    without_manifest(newest)  # the manifest would catch the edit first
    meta = json.loads((newest / "meta.json").read_text())
    (newest / "meta.json").write_text(json.dumps({**meta, "step": 2}))
    with pytest.raises(CheckpointError, match=r"meta\.json: step 2, expected 4"):
        verify_checkpoint(newest)
