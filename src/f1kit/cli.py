"""The ``f1kit`` command line."""

import json
from pathlib import Path

import typer

from f1kit.cli_layout import layout_command
from f1kit.cli_plan import plan_command
from f1kit.cli_serve import serve_command

app = typer.Typer(
    help="f1kit: foresight-guided robot policies (F1) from independent blocks.",
    no_args_is_help=True,
)
recipe_app = typer.Typer(
    help="Recipes: a whole F1 run (data, model, stages) in one YAML file (docs/recipes.md).",
    no_args_is_help=True,
)
app.add_typer(recipe_app, name="recipe")
app.command("layout")(layout_command)

# Exit status of a recipe that fails validation (typer's own usage errors also exit 2).
INVALID_RECIPE = 2


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
    video: bool = typer.Option(
        False, "--video", help="store cameras as MP4 files (H.264) instead of PNG in the parquet"
    ),
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
        images = "video" if video else "png"
        result = generate_demos(config, out, overwrite=overwrite, images=images)
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
    _print_report(evaluate(ScriptedExpert, config))


@app.command("eval")
def eval_policy(
    policy_dir: Path | None = typer.Argument(
        None, help="a saved policy (e.g. runs/f1/policy); or --server"
    ),
    tasks: str = typer.Option("reach-v3", help="MT10, MT50 or comma-separated task names"),
    episodes: int = typer.Option(10, help="held-out layouts per task"),
    max_steps: int = typer.Option(200, help="step cap per episode"),
    seed: int = typer.Option(10_000, help="first held-out layout seed (not the demos' seed)"),
    image_size: int = typer.Option(64, help="camera frames' size (the training data's)"),
    embodiment: str | None = typer.Option(None, help="the processor's embodiment id, if several"),
    policy_seed: int = typer.Option(0, help="seed of the policy's foresight and flow draws"),
    output: Path | None = typer.Option(
        None, help="also write the report (per-episode outcomes included) to this JSON file"
    ),
    server: str | None = typer.Option(
        None, help="HOST:PORT of an `f1kit serve`: act through it instead of a policy dir"
    ),
    delay_steps: int | None = typer.Option(
        None,
        help="with --server: act through the real-time loop with this simulated inference "
        "delay in env steps (default: select_action, execute n of c, as in process)",
    ),
    threshold: float = typer.Option(0.5, help="with --delay-steps: ask at this chunk fraction"),
    rtc_horizon: int = typer.Option(0, help="with --delay-steps: RTC over this many steps (0 off)"),
) -> None:
    """Evaluate a saved policy on held-out Meta-World layouts (success with 95 % intervals)."""
    from f1kit.sim import EvalConfig, evaluate

    if (policy_dir is None) == (server is None):
        raise typer.BadParameter("give a policy directory or --server HOST:PORT, not both")
    if delay_steps is None and (rtc_horizon or threshold != 0.5):
        raise typer.BadParameter("--threshold / --rtc-horizon act with --delay-steps only")
    if server is not None:
        from f1kit.cli_serve import served_agent
        from f1kit.serve import ServerError

        try:
            agent, cameras = served_agent(server, delay_steps, threshold, rtc_horizon)
        except (OSError, ServerError) as err:
            typer.echo(f"--server {server}: {err}", err=True)
            raise typer.Exit(1) from None
    else:
        from f1kit.model import F1Policy

        agent = F1Policy.from_pretrained(policy_dir, seed=policy_seed, embodiment=embodiment)
        cameras = agent.cameras
    try:
        config = EvalConfig(
            tasks=tasks,
            episodes=episodes,
            max_steps=max_steps,
            seed=seed,
            cameras=cameras,
            size=image_size,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    report = evaluate(agent, config)
    _print_report(report)
    if output is not None:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(json.dumps(report.as_dict(), indent=2))
        tmp.replace(output)  # atomic: never a half-written report


@app.command("compare")
def compare(
    first: Path = typer.Argument(..., help="evaluation report (a run's eval.json, eval --output)"),
    second: Path = typer.Argument(..., help="the other policy's report, on the same layouts"),
    resamples: int = typer.Option(10_000, help="bootstrap resamples"),
) -> None:
    """Paired bootstrap of two policies' success on the same layouts: first minus second."""
    from f1kit.sim.compare import outcomes_of, paired_bootstrap

    reports = []
    for path in (first, second):
        try:
            reports.append(outcomes_of(json.loads(path.read_text())))
        except (OSError, ValueError) as err:
            raise typer.BadParameter(f"{path}: {err}") from None
    try:
        result = paired_bootstrap(*reports, resamples=resamples)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(
        f"mean success {result['mean_a']:.3f} vs {result['mean_b']:.3f}: difference "
        f"{result['difference']:+.3f}, paired bootstrap 95% [{result['low']:+.3f}, "
        f"{result['high']:+.3f}] over layouts, P(not better) {result['p_not_better']:.3f}"
    )
    typer.echo(json.dumps(result))


def _print_report(report) -> None:  # an f1kit.sim.EvalReport (imported lazily)
    """One line per task, then the whole report as JSON."""
    for task, r in report.tasks.items():
        typer.echo(
            f"  {task:<28} {r.successes:>3}/{r.episodes:<3} "
            f"rate {r.rate:.2f}  95% CI [{r.ci_low:.2f}, {r.ci_high:.2f}]"
        )
    typer.echo(json.dumps(report.as_dict()))


app.command("serve")(serve_command)


@app.command()
def convert(
    source: Path = typer.Argument(..., help="the checkpoint: a directory or a weights file"),
    destination: Path = typer.Argument(..., help="the f1kit model directory to write"),
    kind: str = typer.Option(
        ..., "--from", help="the source's layout: paligemma, pi0, pi05, f1-vla or var"
    ),
    dtype: str | None = typer.Option(
        None, help="cast floating weights, e.g. bfloat16 (default: keep the source's)"
    ),
    option: list[str] | None = typer.Option(
        None, "--option", "-o", help="an importer option KEY=VALUE (YAML value), repeatable"
    ),
    overwrite: bool = typer.Option(False, help="replace an existing f1kit model directory"),
) -> None:
    """Import a published checkpoint into an f1kit model directory (docs/weights.md)."""
    import logging

    import torch
    import yaml

    from f1kit.model.importers import (
        IMPORTERS,
        ModelDirError,
        SourceError,
        WeightImportError,
        convert_checkpoint,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if kind not in IMPORTERS:
        raise typer.BadParameter(
            f"unknown source {kind!r}; known: {sorted(IMPORTERS)}", param_hint="--from"
        )
    cast = None
    if dtype is not None:
        cast = getattr(torch, dtype, None)
        if not isinstance(cast, torch.dtype) or not cast.is_floating_point:
            raise typer.BadParameter(f"expected a float dtype such as bfloat16, got {dtype!r}")
    options = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        options[key] = yaml.safe_load(value)
    try:
        found = convert_checkpoint(
            kind, source, destination, dtype=cast, overwrite=overwrite, progress=True, **options
        )
    except (SourceError, WeightImportError, ModelDirError, TypeError, ValueError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"wrote {found.path}: parts {list(found.parts)}, {len(found.dropped)} source tensors "
        "dropped on purpose (listed in its config.json)"
    )


@app.command()
def version() -> None:
    """Print the f1kit version."""
    from f1kit import __version__

    typer.echo(__version__)


# ---- f1kit recipe ... ------------------------------------------------------------------------

_SET_HELP = "override KEY.PATH=VALUE (YAML value), repeatable: --set stages.1.steps=10"


def _load_or_exit(file: Path, overrides: list[str] | None, open_data: bool = False):  # -> Recipe
    """The recipe at ``file``, or exit 2 listing every problem; ``open_data`` also holds its local
    datasets' metadata against it (`f1kit.recipe.dataset_checks`)."""
    from f1kit.recipe import RecipeError, check_datasets, load_recipe

    try:
        recipe = load_recipe(file, overrides or ())
        if open_data:
            check_datasets(recipe, str(file))
        return recipe
    except RecipeError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(INVALID_RECIPE) from None


recipe_app.command("plan")(plan_command)


@recipe_app.command("validate")
def recipe_validate(
    file: Path = typer.Argument(..., help="recipe YAML file"),
    overrides: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),
) -> None:
    """Check a recipe (schema, cross-stage rules, and its local datasets' metadata against the
    model and stages); exit 2 listing every problem."""
    recipe = _load_or_exit(file, overrides, open_data=True)
    typer.echo(f"ok: {recipe.name}, {len(recipe.stages)} stages")


@recipe_app.command("show")
def recipe_show(
    file: Path = typer.Argument(..., help="recipe YAML file"),
    overrides: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),
) -> None:
    """Print the fully resolved recipe: every default filled in, overrides applied."""
    from f1kit.recipe import resolved_yaml

    typer.echo(resolved_yaml(_load_or_exit(file, overrides)), nl=False)


@recipe_app.command("run")
def recipe_run(
    file: Path = typer.Argument(..., help="recipe YAML file"),
    overrides: list[str] | None = typer.Option(None, "--set", help=_SET_HELP),
    resume: bool = typer.Option(False, help="continue the run in the output directory"),
    allow_changes: bool = typer.Option(
        False,
        help="with --resume: accept changes to stages not yet started (logged, in the report)",
    ),
    output: Path | None = typer.Option(
        None, help="run directory (default: the recipe's output, runs/{name})"
    ),
) -> None:
    """Run every stage of a recipe: data, training stages, evaluation, report."""
    recipe = _load_or_exit(file, overrides, open_data=True)  # nothing is written before this
    from f1kit.recipe import RecipeError
    from f1kit.recipe.run import run_recipe
    from f1kit.train import (
        NoValidCheckpointError,
        RunLockedError,
        WeightsError,
        shutdown_distributed,
    )

    try:
        out = run_recipe(
            recipe,
            output_dir=output or recipe.output_dir(),
            resume=resume,
            allow_changes=allow_changes,
        )
    except (RecipeError, FileExistsError) as err:  # refused before any stage ran: one clear line
        typer.echo(str(err), err=True)
        raise typer.Exit(INVALID_RECIPE) from None
    except (RunLockedError, NoValidCheckpointError, WeightsError) as err:  # the run's own state
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    shutdown_distributed()  # under torchrun; only after success (a failed rank's peers may hang)
    typer.echo(f"done: {out}")


@recipe_app.command("list")
def recipe_list(
    folder: Path | None = typer.Option(
        None, "--dir", help="folder of recipe files (default: ./recipes, else the repository's)"
    ),
) -> None:
    """List the recipes in a folder: file, name, stages and description."""
    from f1kit.recipe import RecipeError, load_recipe

    if folder is None:
        here = Path("recipes")
        folder = here if here.is_dir() else Path(__file__).resolve().parents[2] / "recipes"
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) if folder.is_dir() else []
    if not files:
        typer.echo(f"no recipes (*.yaml) in {folder}", err=True)
        raise typer.Exit(1)
    for path in files:
        try:
            recipe = load_recipe(path)
        except RecipeError as err:
            first = err.problems[0] if err.problems else ("", str(err))
            typer.echo(f"{path.name}: INVALID ({': '.join(p for p in first if p)})")
            continue
        summary = recipe.description.strip().splitlines()[0] if recipe.description.strip() else ""
        typer.echo(f"{path.name}: {recipe.name} ({len(recipe.stages)} stages) {summary}".rstrip())


if __name__ == "__main__":  # python -m f1kit.cli (tests run the CLI in a fresh process)
    app()
