"""Kill a training process with SIGKILL after a checkpoint, resume it: the same loss trajectory."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from f1kit.train import (
    NoValidCheckpointError,
    TrainSettings,
    load_latest,
    read_metrics,
    train_stage,
)
from tests.f1kit.train.toy import Net, Regression, make_loss

SETTINGS = dict(steps=40, batch_size=8, lr=0.02, warmup_steps=5, checkpoint_every=5, log_every=1)

SCRIPT = """
import sys
sys.path.insert(0, {toy_dir!r})
import torch
torch.set_num_threads({threads})
from toy import Net, Regression, make_loss
from f1kit.train import TrainSettings, train_stage

train_stage(Net(dropout=0.3), make_loss(noise=0.1, sleep=0.1), Regression(),
            TrainSettings(**{settings!r}), {out!r}, progress=False)
"""


def test_resume_after_sigkill_continues_the_same_trajectory(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    toy_dir = str(Path(__file__).parent)
    threads = torch.get_num_threads()
    script.write_text(
        SCRIPT.format(toy_dir=toy_dir, threads=threads, settings=SETTINGS, out=str(out))
    )
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    try:
        # Kill once a mid-run checkpoint is published (the run needs >= 4 s more to finish).
        while not (latest.exists() and latest.read_text().strip() >= "step-0000010"):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_latest(out, clean=False).step
    assert 10 <= killed_at < SETTINGS["steps"]

    settings = TrainSettings(**SETTINGS)
    result = train_stage(
        Net(dropout=0.3, seed=1), make_loss(noise=0.1), Regression(), settings, out,
        resume=True, progress=False,
    )  # fmt: skip
    assert result.resumed_from == killed_at
    assert not list((out / "checkpoints").glob(".tmp-*"))
    full = tmp_path / "full"
    train_stage(
        Net(dropout=0.3), make_loss(noise=0.1), Regression(), settings, full, progress=False
    )
    resumed, reference = read_metrics(out / "metrics.jsonl"), read_metrics(full / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 41))
    for a, b in zip(resumed, reference, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-7, (a["step"], a["loss"], b["loss"])
    assert result.final_loss == reference[-1]["loss"]


def test_resume_skips_a_corrupt_latest_checkpoint_and_stays_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = TrainSettings(steps=12, batch_size=8, lr=0.02, checkpoint_every=4, log_every=1)
    base = make_loss(noise=0.1)

    def dies_in_step_10(model, batch, generator):
        dies_in_step_10.calls += 1
        if dies_in_step_10.calls == 10:
            raise KeyboardInterrupt
        return base(model, batch, generator)

    dies_in_step_10.calls = 0
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_stage(Net(), dies_in_step_10, Regression(), settings, out, progress=False)
    bad = out / "checkpoints" / "step-0000008" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        result = train_stage(
            Net(seed=1), base, Regression(), settings, out, resume=True, progress=False
        )
    assert result.resumed_from == 4
    assert str(bad) in caplog.text
    full = tmp_path / "full"
    train_stage(Net(), base, Regression(), settings, full, progress=False)
    resumed, reference = read_metrics(out / "metrics.jsonl"), read_metrics(full / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    for a, b in zip(resumed, reference, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-7, (a["step"], a["loss"], b["loss"])

    for step in (8, 12):  # all corrupt: one line naming every bad file, and no fresh start
        (out / "checkpoints" / f"step-{step:07d}" / "trainer.pt").write_bytes(b"")
    with pytest.raises(NoValidCheckpointError) as info:
        train_stage(Net(), base, Regression(), settings, out, resume=True, progress=False)
    assert "\n" not in str(info.value) and "step-0000012/trainer.pt" in str(info.value)
    assert "step-0000008/trainer.pt" in str(info.value)
