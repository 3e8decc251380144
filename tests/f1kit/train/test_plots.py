import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from f1kit.train import loss_series, plot_losses, read_metrics
from f1kit.train.metrics import MetricsLog


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_loss_series_takes_numeric_loss_metrics_only(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        [
            {"step": 1, "loss": 2.0, "loss/action": 1.5, "lr/all": 1e-3, "grad_norm": 3.0},
            {"step": 2, "loss": 1.0, "gen_loss": None, "note": "x"},
            {"step": 3, "loss": 0.5, "gen_loss": 0.25},
        ],
    )
    with path.open("a") as f:
        f.write('{"step": 4, "loss": 0.1')  # torn last line of a killed run
    assert loss_series(path) == {
        "loss": ([1, 2, 3], [2.0, 1.0, 0.5]),
        "loss/action": ([1], [1.5]),
        "gen_loss": ([3], [0.25]),
    }


def test_plot_has_one_panel_per_stage(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [{"step": s, "loss": 1 / s} for s in range(1, 20)])
    b = write(tmp_path / "b.jsonl", [{"step": s, "loss": -s, "x_loss": s} for s in range(1, 5)])
    png = plot_losses({"align": a, "post-train": b}, tmp_path / "plots" / "losses.png")
    image = np.asarray(Image.open(png).convert("L"))
    assert image.shape == (520, 640)  # 2.6 in per stage at 100 dpi, 6.4 in wide
    assert image.min() < 100 and image.max() == 255  # something was drawn on white
    with pytest.raises(FileNotFoundError, match="metrics_jsonl"):
        plot_losses({"x": tmp_path / "missing.jsonl"}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one stage"):
        plot_losses({}, tmp_path / "x.png")


def test_metrics_log_resumes_without_duplicate_steps(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.write({"step": step, "loss": float(step), "bad": float("nan")})
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["bad"] is None  # strict JSON, no NaN
    log = MetricsLog(tmp_path, resume_step=3)
    log.write({"step": 4, "loss": 40.0})
    log.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    MetricsLog(tmp_path).close()  # a fresh stage starts a new file
    assert read_metrics(tmp_path / "metrics.jsonl") == []
