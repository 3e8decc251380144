"""The LeRobot virtual environment of ``check_lerobot_interop.py``: find a Python >= 3.12, build or
reuse a venv with ``lerobot[dataset]==0.6.1``, and run ``lerobot_interop_helper.py`` inside it.

A venv counts as ready only once its install finished (a marker file holds the lerobot version),
so an interrupted install is rebuilt on the next run instead of being half-used.
"""

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

LEROBOT_VERSION = "0.6.1"
LEROBOT_REQUIREMENT = f"lerobot[dataset]=={LEROBOT_VERSION}"
# lerobot 0.6.1 pins torch<2.12 / torchvision<0.27. PyPI's Linux torch wheel is the CUDA build
# (~3 GB with its nvidia-* wheels); the CPU index is tried first and skipped when unreachable.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_TORCH = ["torch>=2.7,<2.12", "torchvision>=0.22,<0.27"]
MIN_PYTHON = (3, 12)
MARKER = ".f1kit-interop-ready"
HELPER = Path(__file__).with_name("lerobot_interop_helper.py")
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "f1kit/lerobot-venv"


class Skip(Exception):
    """The check cannot run here (no suitable Python, no package registry): exit 0 with a reason."""


class SetupError(Exception):
    """The LeRobot side could not be set up although it should have been possible."""


def python_version(exe: str) -> tuple[int, int, int] | None:
    """``(major, minor, micro)`` of the interpreter ``exe``, or None when it does not run."""
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        major, minor, micro = (int(x) for x in out.split())
        return major, minor, micro
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def find_python(explicit: str | None) -> tuple[str, tuple[int, int, int]]:
    """A Python >= 3.12: ``explicit``, else the running one, else PATH, else pyenv's versions
    (the oldest suitable first: lerobot's wheels are tested on 3.12)."""
    if explicit:
        version = python_version(explicit)
        if version is None or version[:2] < MIN_PYTHON:
            raise SetupError(f"--python {explicit}: expected a Python >= 3.12, got {version}")
        return explicit, version
    candidates = [sys.executable]
    for name in ("python3.12", "python3.13", "python3.14", "python3"):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found_pyenv = glob.glob(str(pyenv_root / "versions/3.*/bin/python3"))
    candidates += sorted(
        found_pyenv, key=lambda p: [int(x) for x in p.split("/")[-3].split(".")[:2] if x.isdigit()]
    )
    seen = set()
    for exe in candidates:
        real = os.path.realpath(exe)
        if real in seen:
            continue
        seen.add(real)
        version = python_version(exe)
        if version is not None and version[:2] >= MIN_PYTHON:
            return exe, version
    raise Skip(
        "no Python >= 3.12 found (lerobot 0.6.1 requires it): looked at "
        f"{sys.executable}, python3.1x/python3 on PATH and {pyenv_root}/versions/3.*; "
        "pass --python PATH to name one"
    )


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_ready(venv: Path) -> bool:
    marker = venv / MARKER
    return (
        marker.exists()
        and marker.read_text().strip() == LEROBOT_VERSION
        and venv_python(venv).exists()
    )


def _pip(venv: Path, args: list[str], log, timeout: float) -> int:
    cmd = [str(venv_python(venv)), "-m", "pip", *args]
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    try:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        log.write(f"(timed out after {timeout:.0f} s)\n")
        return 124


def _tail(path: Path, n: int = 25) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join("    " + x for x in lines[-n:])


def ensure_venv(venv: Path, python: str, reinstall: bool, say) -> float | None:
    """Make ``venv`` hold lerobot 0.6.1; returns the install seconds, or None when reused."""
    if venv_ready(venv) and not reinstall:
        return None
    if venv.exists():
        if not (venv / "pyvenv.cfg").exists():
            raise SetupError(f"--venv {venv}: exists and is not a virtual environment; not touched")
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / f"{venv.name}-install.log"
    say(f"installing {LEROBOT_REQUIREMENT} into {venv} (log: {log_path}) ...")
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        made = subprocess.run(
            [python, "-m", "venv", str(venv)], stdout=log, stderr=subprocess.STDOUT
        ).returncode
        if made != 0:
            raise SetupError(f"{python} -m venv {venv} failed:\n{_tail(log_path)}")
        cpu = _pip(
            venv,
            [
                "install",
                "--timeout",
                "15",
                "--retries",
                "0",
                "--index-url",
                CPU_TORCH_INDEX,
                *CPU_TORCH,
            ],
            log,
            timeout=900,
        )
        say(
            "  CPU torch from the PyTorch index: "
            + ("installed" if cpu == 0 else "not available here; pip picks torch from PyPI")
        )
        status = _pip(venv, ["install", LEROBOT_REQUIREMENT], log, timeout=3600)
        if status != 0:
            # Tell "no registry reachable" (skip) from a real install failure (error).
            probe = _pip(
                venv,
                [
                    "download",
                    "--no-deps",
                    "--timeout",
                    "15",
                    "--retries",
                    "1",
                    "--dest",
                    str(venv / "probe"),
                    f"lerobot=={LEROBOT_VERSION}",
                ],
                log,
                timeout=300,
            )
            shutil.rmtree(venv, ignore_errors=True)
            if probe != 0:
                raise Skip(
                    f"cannot install {LEROBOT_REQUIREMENT}: no package registry reachable "
                    f"(offline?); see {log_path}"
                )
            raise SetupError(f"pip install {LEROBOT_REQUIREMENT} failed:\n{_tail(log_path)}")
    (venv / MARKER).write_text(LEROBOT_VERSION + "\n")
    return time.perf_counter() - t0


def helper_env(workdir: Path) -> dict[str, str]:
    """The helper's environment: offline Hugging Face libraries, caches inside ``workdir``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(workdir / "hf-home"),
        HF_LEROBOT_HOME=str(workdir / "hf-home/lerobot"),
        PYTHONNOUSERSITE="1",
    )
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def run_helper(venv: Path, workdir: Path, args: list[str], log_name: str) -> tuple[int, str]:
    """Run the helper in the LeRobot venv; (exit status, last lines of its output)."""
    log_path = workdir / f"{log_name}.log"
    with log_path.open("w") as log:
        try:
            status = subprocess.run(
                [str(venv_python(venv)), str(HELPER), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=helper_env(workdir),
                timeout=600,
            ).returncode
        except subprocess.TimeoutExpired:
            log.write("(the helper ran past 600 s and was stopped)\n")
            status = 124
    return status, _tail(log_path, 12)
