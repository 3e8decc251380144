"""`f1kit recipe run` end to end on a micro recipe: every stage kind, the report, a loadable
policy, and resuming after a kill with the same loss trajectory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from f1kit.model import F1Policy
from f1kit.recipe import load_recipe
from f1kit.train import read_metrics

pytestmark = pytest.mark.sim

MICRO = Path(__file__).with_name("micro.yaml")
# Long enough to be killed in the middle of the post-train stage.
LONGER = ["--set", "stages.post-train.steps=24", "--set", "stages.post-train.checkpoint_every=4"]
# Evaluating the policy (a rollout per task) does not move the training trajectory: runs compared
# with `full_run` by their losses and weights evaluate once, at the end, instead of six times.
ONE_EVALUATION = ["--set", "stages.post-train.evaluate.every=24"]


def _run(out: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    """`f1kit recipe run` of the micro recipe made LONGER into ``out``, plus ``extra`` flags."""
    cmd = [sys.executable, "-m", "f1kit.cli", "recipe", "run", str(MICRO), "--output", str(out)]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.Popen(
        [*cmd, *LONGER, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if wait:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output.decode()[-3000:]
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "micro"
    _run(out)
    return out


def _losses(run: Path, stage: str) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "stages" / stage / "metrics.jsonl")]


def test_every_stage_runs_and_leaves_a_report_and_a_policy(full_run: Path) -> None:
    recipe = load_recipe(full_run / "recipe.yaml")  # the resolved recipe is a valid recipe
    assert recipe == load_recipe(MICRO, LONGER[1::2])
    for stage in ("0-tokenizer", "1-align", "2-post-train", "3-eval"):
        assert (full_run / "stages" / stage / "done.json").exists(), stage
    # Logged every 3 steps and at every checkpoint (every 4).
    steps = [r["step"] for r in read_metrics(full_run / "stages/2-post-train/metrics.jsonl")]
    assert steps == sorted({*range(3, 25, 3), *range(4, 25, 4)})
    report = (full_run / "report.md").read_text()
    for needle in (
        "## Stages",
        "| post-train | train | 24 |",
        "## Success rates",
        "reach-v3",
        "![foresight](plots/foresight.png)",
        "## Tokenizer on held-out episodes (tokenizer)",
        "| copy of x(t) |",
        "| first 4 scales |",
        "```yaml",
    ):
        assert needle in report, needle
    quality = json.loads((full_run / "stages/0-tokenizer/done.json").read_text())["quality"]
    assert set(quality) == {"copy", "scales_4"}  # 4 generated scales of 4
    assert quality["copy"]["static_mse"] < 1e-3 and 0 < quality["copy"]["moving"] < 1
    # Evaluation during post-train: every 4 steps of 24 and at the end; the best kept and saved.
    evals = read_metrics(full_run / "stages/2-post-train/evals.jsonl")
    assert [r["step"] for r in evals] == [4, 8, 12, 16, 20, 24]
    for key in ("success", "success/reach-v3", "val_loss", "foresight/accuracy_scale_4",
                "foresight/psnr", "foresight/reach-v3/motion_mse",
                "foresight/reach-v3/copy_motion_mse"):  # fmt: skip
        assert all(key in r for r in evals), key
    post = json.loads((full_run / "stages/2-post-train/done.json").read_text())
    best = post["best"]["step"]
    # Equal success (one episode per task ties often): the lowest validation loss picks.
    assert best == max(evals, key=lambda r: (r["success"], -r["val_loss"]))["step"]
    assert f"| {best} (best) |" in report and "## Foresight quality against success" in report
    demos = json.loads((full_run / "data" / "demos.json").read_text())
    assert set(demos["successes"].values()) == {3}  # 2 to train on, 1 held out per task
    for png in ("losses.png", "foresight.png", "success-eval.png", "tokenizer-tokenizer.png",
                "evals-post-train.png", "foresight-vs-success.png"):  # fmt: skip
        assert (full_run / "plots" / png).stat().st_size > 1000
    evaluation = json.loads((full_run / "stages" / "3-eval" / "eval.json").read_text())
    assert set(evaluation["tasks"]) == {"reach-v3", "drawer-close-v3"}
    assert list((full_run / "stages" / "3-eval" / "videos").glob("*.mp4"))
    # The saved policy is the best evaluated model and acts on an env observation.
    policy = F1Policy.from_pretrained(full_run / "policy")
    final = load_file(str(full_run / "policy" / "model.safetensors"))
    trained = load_file(str(full_run / "stages" / "2-post-train" / "best" / "model.safetensors"))
    for name, tensor in final.items():
        assert torch.equal(tensor, trained[name]), name
    obs = {
        "observation.images.corner": np.zeros((32, 32, 3), np.uint8),
        "observation.state": np.zeros(4, np.float32),
        "task": "reach the goal",
    }
    assert policy.select_action(obs).shape == (4,)


def test_a_killed_run_resumes_with_the_same_loss_trajectory(full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = _run(out, *ONE_EVALUATION, wait=False)
    latest = out / "stages" / "2-post-train" / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the run ended before its first post-train checkpoint"
    assert not (out / "stages" / "2-post-train" / "done.json").exists()
    # Without --resume the non-empty output directory is refused.
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "f1kit.cli",
            "recipe",
            "run",
            str(MICRO),
            "--output",
            str(out),
            *LONGER,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "--resume" in refused.stdout + refused.stderr
    _run(out, *ONE_EVALUATION, "--resume")
    np.testing.assert_allclose(
        _losses(out, "2-post-train"), _losses(full_run, "2-post-train"), rtol=1e-6
    )
    last = Path("stages/2-post-train/checkpoints/step-0000024/model.safetensors")
    final, reference = (load_file(str(r / last)) for r in (out, full_run))
    for name, tensor in reference.items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "parallel",
    [
        ["parallel.strategy=ddp"],
        ["parallel.strategy=fsdp", "parallel.activation_checkpointing=true"],
    ],
    ids=["ddp", "fsdp"],
)
def test_the_same_recipe_runs_under_torchrun_with_two_ranks(
    full_run: Path, tmp_path: Path, parallel: list[str]
) -> None:
    """2 gloo ranks follow the 1-process loss trajectory of every training stage, post-train's
    foresight, flow time and noise draws included (each rank keeps its rows of the global
    batch's draws), under DDP and sharding every stage (FSDP2 + activation checkpointing: rank 1
    then holds the model's shapes alone and the tokenizer trains on rank 0); rank 0 alone writes
    the report and the policy."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "f1kit.cli",
        "recipe",
        "run",
        str(MICRO),
        "--output",
        str(out),
        *LONGER,
        *ONE_EVALUATION,
        *[arg for key in parallel for arg in ("--set", key)],
    ]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for stage in ("1-align", "2-post-train"):
        np.testing.assert_allclose(_losses(out, stage), _losses(full_run, stage), rtol=1e-5)
    # The last step's whole model (gathered by a sharded run), in the unsharded layout.
    last = Path("stages/2-post-train/checkpoints/step-0000024/model.safetensors")
    sharded, single = (load_file(str(r / last)) for r in (out, full_run))
    assert sharded.keys() == single.keys()
    for name, tensor in single.items():
        torch.testing.assert_close(sharded[name], tensor, rtol=1e-4, atol=1e-5)
    assert (out / "report.md").exists()
    F1Policy.from_pretrained(out / "policy")


def test_f1kit_eval_scores_the_saved_policy(full_run: Path, tmp_path: Path) -> None:
    """`f1kit eval POLICY_DIR` runs the saved policy on held-out layouts and prints the report."""
    from typer.testing import CliRunner

    from f1kit.cli import app

    args = ["eval", str(full_run / "policy"), "--tasks", "reach-v3", "--episodes", "2"]
    saved = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, [*args, "--max-steps", "6", "--image-size", "32", "--output", str(saved)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    task = report["tasks"]["reach-v3"]
    assert task["episodes"] == 2 and 0 <= task["successes"] <= 2
    assert json.loads(saved.read_text()) == report and len(task["outcomes"]) == 2
    # The same policy against itself on the same layouts: a difference of exactly zero.
    same = CliRunner().invoke(app, ["compare", str(saved), str(saved), "--resamples", "200"])
    assert same.exit_code == 0 and json.loads(same.output.splitlines()[-1])["difference"] == 0
    other = CliRunner().invoke(app, ["compare", str(saved), str(full_run / "recipe.yaml")])
    assert other.exit_code != 0 and "recipe.yaml" in other.output
    bad = CliRunner().invoke(app, ["eval", str(full_run / "policy"), "--tasks", "reach-v9"])
    assert bad.exit_code != 0 and "reach-v9" in bad.output
