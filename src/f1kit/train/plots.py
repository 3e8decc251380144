"""Loss curves of training stages as one PNG (matplotlib's Agg canvas: no display, no pyplot)."""

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from f1kit.train.metrics import read_metrics


def loss_series(metrics_jsonl: Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{metric: (steps, values)}`` for every numeric metric whose name contains ``"loss"``."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise FileNotFoundError(f"metrics_jsonl: no such file {path}")
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in read_metrics(path):
        for key, value in record.items():
            if "loss" not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(float(value))
    return series


def plot_losses(metrics_jsonl_paths: dict[str, Path], out_png: Path) -> Path:
    """One panel per stage with every loss-like metric over steps; returns ``out_png``.

    The y axis is logarithmic in a panel whose values are all positive (losses spanning decades
    stay readable), linear otherwise.
    """
    if not metrics_jsonl_paths:
        raise ValueError("metrics_jsonl_paths: expected at least one stage")
    stages = {name: loss_series(path) for name, path in metrics_jsonl_paths.items()}
    fig = Figure(figsize=(6.4, 2.6 * len(stages)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(stages), 1, squeeze=False)[:, 0]
    for ax, (stage, series) in zip(axes, stages.items(), strict=True):
        values = [v for _, vs in series.values() for v in vs if math.isfinite(v)]
        for key, (steps, vals) in sorted(series.items()):
            ax.plot(steps, vals, label=key, linewidth=1.2)
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no loss records", ha="center", va="center", transform=ax.transAxes)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
