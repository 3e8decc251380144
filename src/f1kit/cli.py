"""The ``f1kit`` command line."""

import json
from pathlib import Path

import typer

from attention import uga_layout

app = typer.Typer(
    help="f1kit: foresight-guided robot policies (F1) from independent blocks.",
    no_args_is_help=True,
)


def _parse_scales(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated ints like 1,2,3,4, got {text!r}"
        ) from None


@app.command()
def layout(
    prefix: int = typer.Option(8, help="image + instruction tokens"),
    history: int = typer.Option(4, help="aggregated history tokens (0 for none)"),
    scales: str = typer.Option("1,2,3,4", help="foresight scale sizes; empty for No-Gen"),
    state: int = typer.Option(1, help="state tokens"),
    actions: int = typer.Option(4, help="action chunk length"),
    history_in_prefix: bool = typer.Option(True, help="history shares the prefix block"),
) -> None:
    """Print F1's UGA layout and its attention mask (row attends to column)."""
    lay = uga_layout(
        prefix,
        history=history,
        scales=_parse_scales(scales),
        state=state,
        actions=actions,
        history_in_prefix=history_in_prefix,
    )
    typer.echo(f"{lay.n} tokens, {lay.num_blocks} blocks, experts {', '.join(lay.experts)}")
    for seg in lay.segments:
        span = lay.slice(seg.name)
        typer.echo(
            f"  {seg.name:<10} {seg.expert:<14} tokens {span.start:>4}..{span.stop - 1:<4}"
            f" blocks {list(seg.blocks)}{' (joins previous block)' if seg.joins_previous else ''}"
        )
    if lay.n > 120:
        typer.echo("(mask not drawn for more than 120 tokens)")
        return
    mask = lay.mask()
    letters = {e: e[0].upper() for e in lay.experts}
    owner = [letters[lay.experts[i]] for i in lay.expert_ids.tolist()]
    typer.echo("\n   " + "".join(owner))
    for i, row in enumerate(mask.tolist()):
        typer.echo(f"{owner[i]}  " + "".join("#" if m else "." for m in row))


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@app.command()
def demos(
    out: Path = typer.Argument(..., help="dataset folder to write (LeRobot v3 layout)"),
    tasks: str = typer.Option("MT10", help="MT10, MT50 or comma-separated Meta-World v3 names"),
    episodes: int = typer.Option(10, help="successful demos per task"),
    size: int = typer.Option(64, help="camera image size in pixels"),
    cameras: str = typer.Option("corner", help="comma-separated camera names"),
    seed: int = typer.Option(0, help="layout seed"),
    workers: int = typer.Option(1, help="processes (0 = one per CPU core)"),
    overwrite: bool = typer.Option(False, help="replace an existing dataset folder"),
) -> None:
    """Generate scripted-expert Meta-World demos (only successes kept) into a dataset folder."""
    from f1kit.sim import DemoConfig, generate_demos

    try:
        config = DemoConfig(
            tasks=tasks,
            episodes=episodes,
            cameras=_names(cameras),
            size=size,
            seed=seed,
            workers=workers,
        )
        result = generate_demos(config, out, overwrite=overwrite)
    except (ValueError, FileExistsError) as err:
        raise typer.BadParameter(str(err)) from None
    for task in config.tasks:
        typer.echo(
            f"  {task:<28} kept {result.successes[task]:>3}  failed {result.failures[task]:>3}"
        )
    typer.echo(f"{result.frames} frames in {result.seconds:.1f} s -> {out}")


@app.command("eval-expert")
def eval_expert(
    tasks: str = typer.Option("reach-v3", help="MT10, MT50 or comma-separated task names"),
    episodes: int = typer.Option(10, help="held-out layouts per task"),
    max_steps: int = typer.Option(200, help="step cap per episode"),
    seed: int = typer.Option(10_000, help="first held-out layout seed"),
) -> None:
    """Run Meta-World's scripted experts through the evaluation loop (checks the simulator)."""
    from f1kit.sim import EvalConfig, ScriptedExpert, evaluate

    try:
        config = EvalConfig(
            tasks=tasks, episodes=episodes, max_steps=max_steps, seed=seed, cameras=()
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    report = evaluate(ScriptedExpert, config)
    for task, r in report.tasks.items():
        typer.echo(
            f"  {task:<28} {r.successes:>3}/{r.episodes:<3} "
            f"rate {r.rate:.2f}  95% CI [{r.ci_low:.2f}, {r.ci_high:.2f}]"
        )
    typer.echo(json.dumps(report.as_dict()))


@app.command()
def version() -> None:
    """Print the f1kit version."""
    from f1kit import __version__

    typer.echo(__version__)
