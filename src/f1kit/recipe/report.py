"""``report.md`` of a recipe run: the recipe, per-stage losses and times, success rates with
Wilson intervals, and the pictures (loss curves, success rates, foresight next to ground truth)."""

import datetime
import json
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt
import numpy as np
import torch

from f1kit.data import WindowConfig, WindowedDataset, episode_ids, held_out_rows
from f1kit.model import F1
from f1kit.recipe.loading import resolved_yaml
from f1kit.recipe.run_dir import resume_records
from f1kit.recipe.schema import Recipe
from f1kit.train import plot_losses, read_metrics
from foresight import future_pairs


def write_report(
    out: Path,
    recipe: Recipe,
    results: list[dict],
    seconds: float,
    model: F1,
    data: list,
    window: WindowConfig,
    codes: list[np.ndarray] | None,
) -> Path:
    """Write ``out/report.md`` and ``out/plots/*.png``; returns the report's path."""
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    lines = [
        f"# {recipe.name}",
        "",
        recipe.description or "",
        "",
        f"- finished: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- wall time: {seconds / 60:.1f} min ({seconds:.0f} s)",
        f"- device: {next(model.parameters()).device}, torch {torch.__version__}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads",
        f"- model: {_count(model)} parameters "
        f"({_count(model, trainable_only=True)} trainable at the end), "
        f"experts {', '.join(model.experts)}",
        *_demo_lines(out),
        "",
        "## Stages",
        "",
        "| stage | kind | steps | first loss | last loss | wall time |",
        "|---|---|---|---|---|---|",
    ]
    curves = {}
    for r in results:
        first = last = "-"
        metrics = out / r["dir"] / "metrics.jsonl"
        if metrics.exists():
            rows = read_metrics(metrics)
            key = _loss_key(rows)
            if rows and key:
                first, last = f"{rows[0][key]:.4f}", f"{rows[-1][key]:.4f}"
                curves[r["name"]] = metrics
        wall = r.get("wall_seconds")
        lines.append(
            f"| {r['name']} | {r['kind']} | {r.get('steps', '-')} | {first} | {last} | "
            f"{'-' if wall is None else f'{wall:.0f} s'} |"
        )
    if curves:
        plot_losses(curves, plots / "losses.png")
        lines += ["", "![losses](plots/losses.png)"]
    held = held_out_rows(data, recipe.data.validation)
    for r in results:
        if r["kind"] == "tokenizer" and r.get("quality"):
            lines += _tokenizer_section(r, model, data, held, recipe, plots)
    evaluated = [r for r in results if (out / r["dir"] / "evals.jsonl").exists()]
    for r in evaluated:
        lines += _training_eval_section(r, out, plots)
    if evaluated:
        lines += _foresight_vs_success(evaluated, out, plots)
    for r in results:
        if r["kind"] == "evaluate" and r.get("tasks"):
            lines += _success_section(r, plots, out)
    if model.generator is not None and codes is not None:
        path = _foresight_picture(model, data, window, codes, held, plots / "foresight.png")
        h = window.foresight
        lines += [
            "",
            "## Foresight",
            "",
            f"Per row: the current frame, the frame {h} steps ahead (ground truth, through the "
            "tokenizer), and the model's foresight (the generated scales, decoded); "
            + ("held-out episodes." if held.any() else "training episodes."),
            "",
            f"![foresight](plots/{path.name})",
        ]
    lines += _resume_section(out)
    lines += ["", "## Recipe", "", "```yaml", resolved_yaml(recipe).rstrip(), "```", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def _training_eval_section(result: dict, out: Path, plots: Path) -> list[str]:
    """A train stage's evaluations: the table, the success and validation curves, the choice."""
    rows = read_metrics(out / result["dir"] / "evals.jsonl")
    if not rows:
        return []
    best = result.get("best", {}).get("step")
    columns = [
        c
        for c in (
            "success",
            "val_loss",
            "foresight/psnr",
            "foresight/motion_mse",
            "foresight/copy_motion_mse",
        )
        if any(c in r for r in rows)
    ]
    lines = [
        "",
        f"## Evaluation during training ({result['name']})",
        "",
        "Scored at each evaluation on layouts and held-out episodes never trained on "
        f"(evals.jsonl); the best weights (step {best}) are the stage's result.",
        "",
        "| step | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for r in rows:
        mark = " (best)" if r["step"] == best else ""
        cells = [_cell(r.get(c)) for c in columns]
        lines.append(f"| {r['step']}{mark} | " + " | ".join(cells) + " |")
    curves = [c for c in ("success", "val_loss") if c in columns]
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3), squeeze=False)
    for ax, key in zip(axes[0], curves, strict=True):
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r.get(key) for r in rows], marker="o", label=key)
        if key == "success":
            for task in sorted({k[8:] for r in rows for k in r if k.startswith("success/")}):
                values = [r.get(f"success/{task}") for r in rows]
                ax.plot(steps, values, alpha=0.5, lw=1, label=task)
            ax.set_ylim(-0.05, 1.05)
        if best is not None:
            ax.axvline(best, color="grey", ls="--", lw=1)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.legend(fontsize=6)
    fig.tight_layout()
    png = plots / f"evals-{result['name']}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [*lines, "", f"![evaluations](plots/{png.name})"]


def _resume_section(out: Path) -> list[str]:
    """What resumes changed (``--allow-changes``): the recipe below is the last one given."""
    records = resume_records(out)
    if not records:
        return []
    lines = ["", "## Changed on resume", "", "| when | key | old | new |", "|---|---|---|---|"]
    for record in records:
        for c in record["changes"]:
            old, new = json.dumps(c["old"]), json.dumps(c["new"])
            lines.append(f"| {record['time']} | `{c['key']}` | {old} | {new} |")
    return lines


def _cell(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


def _foresight_vs_success(results: list[dict], out: Path, plots: Path) -> list[str]:
    """Per task and evaluation: foresight error on what moves against closed-loop success."""
    points: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        for row in read_metrics(out / r["dir"] / "evals.jsonl"):
            for key, success in row.items():
                task = key[len("success/") :] if key.startswith("success/") else None
                error = row.get(f"foresight/{task}/motion_mse") if task else None
                if error is not None and success is not None:
                    points.setdefault(task, []).append((error, success))
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for task, xy in sorted(points.items()):
        x, y = zip(*xy, strict=True)
        ax.scatter(x, y, label=task, s=18)
    ax.set_xlabel("foresight MSE on moving pixels (held-out)")
    ax.set_ylabel("closed-loop success")
    ax.legend(fontsize=6)
    fig.tight_layout()
    png = plots / "foresight-vs-success.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [
        "",
        "## Foresight quality against success",
        "",
        "One point per task and evaluation: the error of the model's own foresight on the pixels "
        "that move (held-out episodes) against its success on that task's unseen layouts.",
        "",
        f"![foresight vs success](plots/{png.name})",
    ]


def _success_section(result: dict, plots: Path, out: Path) -> list[str]:
    tasks = list(result["tasks"].values())
    lines = [
        "",
        f"## Success rates ({result['name']})",
        "",
        "| task | success | rate | 95% CI (Wilson) | mean steps |",
        "|---|---|---|---|---|",
    ]
    names, rates, errs = [], [], []
    for t in tasks:
        lo, hi = t["ci_low"], t["ci_high"]
        rate = t["successes"] / t["episodes"]
        lines.append(
            f"| {t['task']} | {t['successes']}/{t['episodes']} | {rate:.2f} | "
            f"[{lo:.2f}, {hi:.2f}] | {t.get('mean_steps', float('nan')):.0f} |"
        )
        names.append(t["task"])
        rates.append(rate)
        errs.append((rate - lo, hi - rate))
    mean = float(np.mean(rates))
    lines.append(f"| **mean** | | **{mean:.2f}** | | |")
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    ax.bar(names, rates, yerr=np.array(errs).T, capsize=4, color="#4477aa")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(f"{result['name']}: 95% Wilson intervals")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    png = plots / f"success-{result['name']}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    lines += ["", f"![success]({png.relative_to(out)})"]
    videos = sorted((out / result["dir"] / "videos").glob("*.mp4"))
    if videos:
        lines += [
            "",
            "Rollouts (camera | foresight): "
            + ", ".join(f"[{v.stem}]({v.relative_to(out)})" for v in videos),
        ]
    return lines


def _tokenizer_section(
    result: dict, model: F1, data: list, held: np.ndarray, recipe: Recipe, plots: Path
) -> list[str]:
    """The tokenizer's reconstructions of held-out frames at the foresight horizon, scored
    (``foresight.tokenizer_quality``) and pictured beside the truth and the current frame."""
    h = recipe.data.foresight
    lines = [
        "",
        f"## Tokenizer on held-out episodes ({result['name']})",
        "",
        f"Reconstructions of the frame {h} steps ahead, scored at the data's image size against "
        "the truth. *motion MSE*: error on the pixels that move between t and t + h (the "
        "arm, the gripper, what they touch); *copy* is the current frame standing in for the "
        "future one: a tokenizer no better than the copy there cannot carry the change to the "
        f"policy. "
        f"{result['quality']['copy']['moving']:.1%} of pixels move.",
        "",
        "| estimate of x(t+h) | PSNR (dB) | motion MSE | static MSE |",
        "|---|---|---|---|",
    ]
    for label, q in result["quality"].items():
        name = "copy of x(t)" if label == "copy" else label.replace("scales_", "first ") + " scales"
        lines.append(
            f"| {name} | {q['psnr']:.2f} | {q['motion_mse']:.4f} | {q['static_mse']:.4f} |"
        )
    png = plots / f"tokenizer-{result['name']}.png"
    _reconstruction_picture(model, data, held, recipe, png)
    return [*lines, "", f"![tokenizer](plots/{png.name})"]


@torch.no_grad()
def _reconstruction_picture(
    model: F1, data: list, held: np.ndarray, recipe: Recipe, png: Path, rows: int = 4
) -> None:
    key = recipe.data.image_keys[model.config.generation.camera]
    # Decode the held-out rows only (a dataset's frames may be PNG- or video-encoded).
    masks = np.split(held, np.cumsum([len(ds) for ds in data])[:-1])
    frames = np.concatenate(
        [ds.frames(key, np.flatnonzero(m)) for ds, m in zip(data, masks, strict=True)]
    )
    episodes = episode_ids(data)[held]
    now, future = future_pairs(torch.from_numpy(episodes), recipe.data.foresight)
    picks = np.linspace(0, len(now) - 1, rows).astype(int)
    truth = torch.from_numpy(frames[future[picks].numpy()]).permute(0, 3, 1, 2)
    vq = model.tokenizer
    device = next(vq.parameters()).device
    codes = vq.encode(model.tokenizer_images(truth.to(device)))
    k = model.config.generation.scales
    columns = [
        (frames[now[picks].numpy()], "now"),
        (truth.permute(0, 2, 3, 1).numpy(), f"+{recipe.data.foresight} truth"),
        (model.decode_foresight(codes).cpu().numpy(), f"all {len(codes)} scales"),
        (model.decode_foresight(codes[:k]).cpu().numpy(), f"first {k} scales"),
    ]
    fig, axes = plt.subplots(rows, len(columns), figsize=(2 * len(columns), 2 * rows))
    for c, (images, title) in enumerate(columns):
        for r in range(rows):
            axes[r, c].imshow(images[r])
            axes[r, c].set_axis_off()
        axes[0, c].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


@torch.no_grad()
def _foresight_picture(
    model: F1,
    data: list,
    window: WindowConfig,
    codes: list[np.ndarray],
    held: np.ndarray,
    png: Path,
    rows: int = 4,
) -> Path:
    was_training = model.training
    model.eval()
    dataset = WindowedDataset(data, window, codes=codes)
    pool = np.flatnonzero(held) if held.any() else np.arange(len(dataset))
    picks = pool[np.linspace(0, len(pool) - 1, rows).astype(int)]
    samples = [dataset[int(i)] for i in picks]
    device = next(model.parameters()).device
    images = torch.stack([s["images"] for s in samples]).to(device)
    history = torch.stack([s["history_codes"] for s in samples]).to(device)
    state = torch.stack([s["state"] for s in samples]).to(device)
    pred = model.predict(
        images,
        [s["task"] for s in samples],
        state,
        history,
        generator=torch.Generator(device=device).manual_seed(0),
    )
    guess = model.decode_foresight(pred.foresight).cpu().numpy()
    truth_codes = torch.stack([s["foresight_codes"] for s in samples]).to(device)
    truth = model.decode_foresight(model.split_codes(truth_codes)).cpu().numpy()
    now = images[:, 0].permute(0, 2, 3, 1).cpu().numpy()
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows))
    for r in range(rows):
        for c, (img, title) in enumerate(
            ((now[r], "now"), (truth[r], f"+{window.foresight} truth"), (guess[r], "foresight"))
        ):
            axes[r, c].imshow(img)
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    model.train(was_training)
    return png


def _demo_lines(out: Path) -> list[str]:
    marker = out / "data" / "demos.json"
    if not marker.exists():
        return []
    demos = json.loads(marker.read_text())
    kept = sum(demos["successes"].values())
    tried = kept + sum(demos["failures"].values())
    return [
        f"- demos: {kept} expert episodes kept of {tried} tried, {demos['frames']} frames, "
        f"generated in {demos['seconds']:.0f} s"
    ]


def _loss_key(rows: list[dict]) -> str | None:
    for key in ("loss", "loss/total", "total"):
        if rows and key in rows[0]:
            return key
    return None


def _count(model: torch.nn.Module, trainable_only: bool = False) -> str:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    return f"{n / 1e6:.1f} M"
