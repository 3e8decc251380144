"""The CLI's serving commands: `f1kit serve`, and the agent `f1kit eval --server` acts through.

Registered on the main app by `f1kit.cli` (which it keeps under 400 lines); heavy imports stay
inside the functions, as in the main CLI.
"""

from pathlib import Path

import typer


def serve_command(
    policy_dir: Path = typer.Argument(..., help="a saved policy (e.g. runs/f1/policy)"),
    host: str = typer.Option("127.0.0.1", help="bind address (beyond loopback: a token)"),
    port: int = typer.Option(8765, help="TCP port (0: any free one, printed)"),
    device: str = typer.Option("auto", help="auto (cuda when there is one), cpu, cuda, cuda:1"),
    dtype: str | None = typer.Option(None, help="cast the weights, e.g. bfloat16"),
    compile: str = typer.Option(
        "eager", help="eager, default, reduce-overhead (CUDA graphs) or max-autotune"
    ),
    token_file: Path | None = typer.Option(
        None, help="a file holding the token clients must send (else $F1KIT_SERVE_TOKEN)"
    ),
    fps: float | None = typer.Option(None, help="the robot's control rate, told to clients"),
    seed: int = typer.Option(0, help="seed of each connection's foresight and flow draws"),
    batch_window_ms: float = typer.Option(
        0.0, help="gather the connections' predicts for this long into one call (0: off)"
    ),
) -> None:
    """Serve a saved policy to robot clients over websockets (docs/deploy.md)."""
    import logging
    import os

    import torch

    from f1kit.model import F1Policy
    from f1kit.model.engine import COMPILE_MODES
    from f1kit.serve import PolicyServer, ServeError

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if compile not in COMPILE_MODES:
        raise typer.BadParameter(f"expected one of {COMPILE_MODES}", param_hint="--compile")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cast = None
    if dtype is not None:
        cast = getattr(torch, dtype, None)
        if not isinstance(cast, torch.dtype) or not cast.is_floating_point:
            raise typer.BadParameter(f"expected a float dtype such as bfloat16, got {dtype!r}")
    token = os.environ.get("F1KIT_SERVE_TOKEN") or None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as err:
            raise typer.BadParameter(str(err), param_hint="--token-file") from None
        if not token:
            raise typer.BadParameter(f"{token_file} is empty", param_hint="--token-file")
    policy = F1Policy.from_pretrained(policy_dir, device=device, dtype=cast, seed=seed)
    try:
        server = PolicyServer(
            policy,
            host=host,
            port=port,
            token=token,
            fps=fps,
            compile=compile,  # type: ignore[arg-type]
            batch_window_ms=batch_window_ms,
        )
    except ServeError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    server.serve_forever()


def served_agent(server: str, delay_steps: int | None, threshold: float, rtc_horizon: int):
    """(agent, cameras) acting through the `f1kit serve` at HOST:PORT ($F1KIT_SERVE_TOKEN)."""
    import os

    from f1kit.serve import PolicyClient, ServedAgent
    from flow import RTCConfig

    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT, got {server!r}", param_hint="--server")
    rtc = None
    if rtc_horizon:
        rtc = RTCConfig(delay=min(delay_steps or 0, rtc_horizon), horizon=rtc_horizon)
    client = PolicyClient(
        host or "127.0.0.1",
        int(port),
        token=os.environ.get("F1KIT_SERVE_TOKEN") or None,
        threshold=threshold,
        rtc=rtc,
        delay_steps=delay_steps or 0,
    )
    agent = client if delay_steps is None else ServedAgent(client)
    return agent, tuple(client.spec["cameras"])
