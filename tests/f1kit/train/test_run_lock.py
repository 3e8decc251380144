import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from f1kit.train import RunLock, RunLockedError

HOLDER = """
import sys, time
from f1kit.train import RunLock
with RunLock({directory!r}):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(directory=str(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(tmp_path) in message and "started" in message
        assert info.value.owner["pid"] == holder.pid
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / ".lock").exists()  # released on exit
    with RunLock(tmp_path):  # free again
        pass


def test_one_process_cannot_hold_it_twice(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunLockedError, match=f"pid {os.getpid()} "):
        RunLock(tmp_path).acquire()


def test_a_killed_holders_lock_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(directory=str(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL: no clean-up ran, the file stays
    holder.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING"), RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"pid {holder.pid} on host" in caplog.text and "taking over" in caplog.text
    assert not (tmp_path / ".lock").exists()


def test_a_stale_lock_file_from_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()
