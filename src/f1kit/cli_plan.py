"""``f1kit recipe plan FILE [--world-size N] [--gpu-memory GiB]``: per-rank memory of each
training stage (`f1kit.recipe.memory_plan`), from the model built on the meta device.

Registered on the recipe app by `f1kit.cli`; nothing is allocated, downloaded or written.
"""

from pathlib import Path

import typer


def plan_command(
    file: Path = typer.Argument(..., help="recipe YAML file"),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="override KEY.PATH=VALUE (YAML value), repeatable"
    ),
    world_size: int = typer.Option(1, "--world-size", min=1, help="ranks (GPUs) in all"),
    gpu_memory: float | None = typer.Option(
        None, "--gpu-memory", min=0.0, help="GiB per GPU: warn where a stage needs more"
    ),
) -> None:
    """Print what one rank holds in each training stage: parameters, gradients, optimizer state,
    FSDP's gathered units and an activation estimate, under the recipe's parallel section."""
    from f1kit.cli import _load_or_exit
    from f1kit.recipe.memory_plan import GiB, format_plan, plan_recipe

    recipe = _load_or_exit(file, overrides)
    try:
        plans = plan_recipe(recipe, world_size)
    except ValueError as err:  # e.g. hsdp's shard_size not dividing the world size
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    if not plans:
        typer.echo(f"{recipe.name}: no training stage to plan")
        return
    typer.echo(format_plan(plans, gpu_memory))
    if gpu_memory is not None and any(p.total / GiB > gpu_memory for p in plans):
        raise typer.Exit(1)
