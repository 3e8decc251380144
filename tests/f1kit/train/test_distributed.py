"""DDP over gloo on CPU: two processes train exactly like one with the same global batch."""

import sys
from pathlib import Path

import torch

from f1kit.train import TrainSettings, load_latest, load_model_weights, read_metrics, train_stage
from tests.f1kit.train.ranks import run_two_ranks
from tests.f1kit.train.toy import Net, Regression, custom_method_loss

SETTINGS = dict(steps=8, batch_size=8, lr=0.05, warmup_steps=2, checkpoint_every=4, log_every=1)

SCRIPT = """
import sys
sys.path.insert(0, {toy_dir!r})
import torch
torch.set_num_threads(1)
from toy import Net, Regression, custom_method_loss
from f1kit.train import TrainSettings, init_distributed, shutdown_distributed, train_stage

info = init_distributed()
assert info.world_size == 2, info
settings = TrainSettings(**{settings!r})
train_stage(Net(seed=info.rank), custom_method_loss, Regression(n=20), settings, {out!r},
            progress=False)
shutdown_distributed()
"""


def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    out = tmp_path / "ddp"
    toy_dir = str(Path(__file__).parent)
    script.write_text(SCRIPT.format(toy_dir=toy_dir, settings=SETTINGS, out=str(out)))
    run_two_ranks([sys.executable, str(script)], timeout=120)

    # Rank 1 built its model from another seed: DDP's start-up broadcast makes rank 0's the one.
    single = tmp_path / "single"
    train_stage(
        Net(seed=0),
        custom_method_loss,
        Regression(n=20),
        TrainSettings(**SETTINGS),
        single,
        progress=False,
    )
    ddp_records, one_records = (
        read_metrics(out / "metrics.jsonl"),
        read_metrics(single / "metrics.jsonl"),
    )
    assert [r["step"] for r in ddp_records] == list(range(1, 9))
    for a, b in zip(ddp_records, one_records, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-5, (a, b)
    # The loss moved, so matching trajectories are not a constant coincidence.
    assert one_records[-1]["loss"] < 0.8 * one_records[0]["loss"]
    ddp_weights = load_model_weights(load_latest(out).model_path)
    one_weights = load_model_weights(load_latest(single).model_path)
    for key, value in one_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, atol=1e-5, rtol=0)
    assert load_latest(out).meta["world_size"] == 2
