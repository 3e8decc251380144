"""``f1kit layout``: F1's UGA layout and its attention mask, drawn as text (no model needed).

Registered on the main app by `f1kit.cli`.
"""

import typer

from attention import uga_layout


def _parse_scales(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated ints like 1,2,3,4, got {text!r}"
        ) from None


def layout_command(
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
