"""Render, then train, in one process with triton installed (issue 14, f1kit.sim.env).

Loading triton's libtriton.so after Mesa's llvmpipe has made an EGL context segfaults the process
(exit 139), and the optimizer's lazy ``torch._dynamo`` import loads triton when it is installed
(PyTorch's CUDA wheel ships it). The sequence runs in a subprocess so a crash fails this test
instead of killing pytest. CI installs triton for this file alone (``.ci/run``).
"""

import importlib.util
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.sim
pytest.importorskip("metaworld", reason="needs the Meta-World simulator (the [sim] extra)")
if importlib.util.find_spec("triton") is None:
    pytest.skip(
        "needs triton (PyTorch's CUDA wheel ships it; the CPU wheel does not, and without it "
        "the render-then-train crash cannot happen)",
        allow_module_level=True,
    )

# What evaluation during training does: render a frame, then train on (AdamW imports
# torch._dynamo, which imports triton), then import triton outright in case a later torch
# stops reaching it from the optimizer.
RENDER_THEN_TRAIN = textwrap.dedent(
    """
    import numpy as np
    import torch

    from f1kit.sim import MetaWorldEnv

    with MetaWorldEnv("reach-v3", cameras=("corner",), size=32) as env:
        obs, _ = env.reset(seed=0)
    print("frame mean", float(obs["observation.images.corner"].mean()), flush=True)

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    import triton

    print("trained", float(loss), "triton", triton.__version__, flush=True)
    """
)


def test_render_then_train_with_triton_installed_does_not_crash() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RENDER_THEN_TRAIN], capture_output=True, text=True, timeout=300
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode} (-11/139: segfault)\n{log[-3000:]}"
    # The frame was really drawn through a GL context (the crash needs one), not skipped.
    mean = float(log.split("frame mean ", 1)[1].split()[0])
    assert mean > 20, log
    assert "trained" in log, log
