"""Two gloo ranks on this machine, each a process started with the variables torchrun would set
(launching them directly saves torchrun's start-up)."""

import os
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env() -> dict[str, str]:
    """One thread per rank (two ranks share the two cores), gloo on loopback."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def run_two_ranks(argv: list[str], timeout: float = 240) -> None:
    """Run ``argv`` as ranks 0 and 1 of a 2-rank group; fails with both logs unless both exit 0."""
    base = {**rank_env(), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    base["MASTER_PORT"] = str(free_port())
    procs = [
        subprocess.Popen(
            argv,
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-4000:]
