"""Test-wide setup: runtime shape checking for every f1kit package, and hypothesis profiles.

The jaxtyping import hook must be installed before any of our packages is imported, so it sits at
the top of the root conftest (pytest loads it before collecting test modules). Every function
with jaxtyping annotations in these packages is then checked by beartype on each call.
"""

import os

from jaxtyping import install_import_hook

PACKAGES = ("attention", "mot", "foresight", "flow", "f1kit")
_hook = install_import_hook(list(PACKAGES), "beartype.beartype")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# CI runs >= 200 examples per property; `HYPOTHESIS_PROFILE=dev` gives quick local runs.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Two cores in CI: keep torch from oversubscribing them. Under pytest-xdist (pyproject's addopts
# run one worker per core, at most 4) each worker gets its share, and the subprocesses tests
# start inherit it through OMP_NUM_THREADS (spinning threads on a shared core slow all 2-8x).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(_THREADS)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
