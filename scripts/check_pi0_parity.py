#!/usr/bin/env python3
"""Parity of f1kit's pi0 / pi0.5 import with lerobot's PI0 / PI05 (lerobot 0.6.1, transformers 5.4).

Run it with f1kit's Python (``.venv/bin/python scripts/check_pi0_parity.py``). lerobot lives in
another environment (``--python``; by default ``/tmp/pi0venv`` or ``~/.cache/f1kit/lerobot-venv``
if it has transformers, pi0's extra), where ``pi0_parity_lerobot.py`` builds a tiny random
``PI0Policy``, saves it with ``save_pretrained`` and records its outputs on fixed inputs and
noise. This side converts the saved directory (``f1kit convert --from pi0``), loads it into a
No-Gen F1 and compares, on the same images, token ids (one row padded), state and noise:

    actions      ``F1.predict`` vs ``PI0Pytorch.sample_actions``: 10 Euler steps over the KV
                 cache of the prefix
    steps        the raw network output (pi0's time, before the flip) at each of those steps,
                 on lerobot's own trajectory and time grid: the cached expert pass alone
    velocity     the uncached joint pass (f1kit's training path) at a fixed (noise, time): our
                 paper-convention velocity at tau = 1 - t vs minus lerobot's v_t
    loss         the flow-matching MSE over the real action dims at that (noise, time)

and again with pi0's time features (computed in float64, as lerobot and openpi do; f1kit
computes them in float32), which isolates what that choice alone changes.

``--variant pi05`` does the same for a tiny ``PI05Policy`` converted with ``--from pi05``: no
state (token ids stand for the prompt that would carry it), the time through the adaptive norms
of the action expert; one more counter-case there: the norms' gates forced to 1.

The processes exchange safetensors and JSON files only. Exit status: 0 matched (or skipped: no
lerobot environment, the reason printed), 1 mismatch, 2 the check could not run.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from attention import UNDERSTANDING
from f1kit.model import F1
from f1kit.model.importers import convert_checkpoint, init_from, read_model_dir
from f1kit.model.text import TokenizedText
from f1kit.model.trunk import ActionExpert, JointPass
from flow import Convention

HELPER = Path(__file__).with_name("pi0_parity_lerobot.py")
CANDIDATES = (Path("/tmp/pi0venv/bin/python"), Path.home() / ".cache/f1kit/lerobot-venv/bin/python")
PROBE = "import transformers, lerobot.policies.pi0.modeling_pi0, lerobot.policies.pi05"
TOLERANCE = {"actions": 1e-4, "steps": 2e-4, "velocity": 2e-4, "loss": 1e-4}
"""Max abs differences allowed with f1kit's own (float32) time features; with pi0's float64
ones everything must agree to float32 rounding (``EXACT``)."""
EXACT = 1e-5
COUNTER = 1e-3
"""The comparison can fail: deliberate mistakes must move the actions by more than this."""


def find_python(explicit: str | None) -> str | None:
    for python in [Path(explicit)] if explicit else CANDIDATES:
        if python.is_file():
            probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, timeout=300)
            if probe.returncode == 0:
                return str(python)
            if explicit:
                raise SystemExit(f"--python {python}: cannot import lerobot's pi0 and transformers")
    return None


def tiny_tokenizer(root: Path) -> Path:
    """A word-level tokenizer's files: the importer copies them (pi0 checkpoints carry none);
    the comparison feeds token ids directly."""
    import tokenizers
    import transformers

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    special = ["<pad>", "<eos>", "<bos>", "<unk>"]
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=special)
    tok.train_from_iterator(["pick up the block", "open the drawer"], trainer)
    names = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(root)
    return root


def pi0_time_features(tau: torch.Tensor, dim: int, *, min_period: float, max_period: float):
    """pi0's sinusoidal features: periods and angles in float64, the float32 time promoted."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=tau.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * tau[:, None].to(torch.float64)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(tau.dtype)


@contextmanager
def time_features(kind: str):
    import flow.head

    own = flow.head.sinusoidal_time_features
    if kind == "pi0-float64":
        flow.head.sinusoidal_time_features = pi0_time_features
    try:
        yield
    finally:
        flow.head.sinusoidal_time_features = own


@torch.no_grad()
def compare(model: F1, data: dict[str, torch.Tensor], action_dim: int) -> dict[str, float]:
    head = model.action_head
    images = data["in.images"].unsqueeze(1)  # one camera
    text = TokenizedText(data["in.tokens"].long(), data["in.token_mask"].bool())
    state, noise = model_state(model, data), data["in.noise"]
    actions = model.predict(images, text, state, noise=noise).actions

    # Each Euler step on lerobot's own trajectory and times (x_{i+1} = x_i + dt v_i, rebuilt from
    # its recorded outputs): the cached expert pass alone, free of the two solvers' time grids.
    token = None if state is None else head.embed_state(state)
    net = ActionExpert(*model.start(model.encode_prefix(images, text)))
    lerobot_steps = data["out.step_outputs"]
    x, dt, steps = noise.clone(), -1.0 / lerobot_steps.shape[0], []
    for i, v in enumerate(lerobot_steps):
        t = torch.tensor(1.0 + i * dt, dtype=torch.float32).expand(x.shape[0])
        tokens, cond = head.embed(x, t)  # pi0's own time; cond: pi0.5's time vector
        steps.append(head.project(net(tokens, cond, token)))
        x = x + dt * v

    prefix = model.encode_prefix(images, text)
    joint = JointPass(model.bind(prefix, 0), {UNDERSTANDING: prefix.tokens})
    tau = 1 - data["in.time"]  # dyadic times: exact
    noisy = Convention.PAPER.interpolate(noise, data["in.actions"], tau)
    velocity = head.velocity(noisy, tau, context=token, network=joint)
    truth = data["in.actions"][..., :action_dim]
    loss = head.loss(truth, state=state, tau=tau, noise=noise, network=joint)

    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max())

    return {
        "actions": diff(actions, data["out.sample"]),
        "steps": diff(torch.stack(steps), lerobot_steps),
        "velocity": diff(velocity, -data["out.velocity"]),
        "loss": abs(float(loss) - float(data["out.losses"][..., :action_dim].mean())),
    }


def model_state(model: F1, data: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """pi0's padded state; None for pi0.5 (no state token: its prompt carries the state)."""
    return None if model.config.action.state_dim is None else data["in.state"]


@torch.no_grad()
def counter_cases(model: F1, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Action differences from lerobot's under deliberate mistakes: the padded instruction tokens
    taken as valid (lerobot masks them), the time convention not flipped, and (pi0.5) the
    adaptive norms' gates forced to 1."""
    images = data["in.images"].unsqueeze(1)
    ids, mask = data["in.tokens"].long(), data["in.token_mask"].bool()
    state, noise, truth = model_state(model, data), data["in.noise"], data["out.sample"]
    out = {}
    padded = model.predict(images, TokenizedText(ids, torch.ones_like(mask)), state, noise=noise)
    out["padding_taken_as_valid"] = float((padded.actions - truth).abs().max())
    head = model.action_head
    own = head.config
    head.config = replace(own, weights_convention=Convention.PAPER)
    try:
        unflipped = model.predict(images, TokenizedText(ids, mask), state, noise=noise)
    finally:
        head.config = own
    out["convention_not_flipped"] = float((unflipped.actions - truth).abs().max())
    if model.config.adaptive_action:
        saved = {k: v.clone() for k, v in model.state_dict().items() if ".dense." in k}
        for key, tensor in model.state_dict().items():
            if ".dense." in key:
                gate = tensor[2 * tensor.shape[0] // 3 :]
                gate.fill_(1.0 if key.endswith("bias") else 0.0)
        try:
            ungated = model.predict(images, TokenizedText(ids, mask), state, noise=noise)
        finally:
            model.load_state_dict(saved, strict=False)
        out["gates_forced_to_one"] = float((ungated.actions - truth).abs().max())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="a Python with lerobot 0.6 and transformers >= 5.4")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    parser.add_argument("--variant", choices=("pi0", "pi05"), default="pi0")
    args = parser.parse_args()
    python = find_python(args.python)
    if python is None:
        print(f"skipped: no Python with lerobot's pi0 and transformers among {list(CANDIDATES)}")
        return 0
    torch.set_num_threads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"{args.variant}-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    command = [python, str(HELPER), "--out", str(work), "--variant", args.variant]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"the lerobot side failed ({python}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return 2
    meta = json.loads((work / "lerobot.json").read_text())
    data = load_file(work / "lerobot.safetensors")
    dst = work / f"f1kit-{args.variant}"
    found = convert_checkpoint(
        args.variant,
        meta["checkpoint"],
        dst,
        text_tokenizer=tiny_tokenizer(work / "tokenizer"),
        vision_heads=meta["vision_heads"],
    )
    model = F1(found.config).eval()
    init_from(model, dst)
    ours = compare(model, data, meta["action_dim"])
    with time_features("pi0-float64"):
        exact = compare(model, data, meta["action_dim"])
    counter = counter_cases(model, data)
    passed = (
        all(ours[k] <= TOLERANCE[k] for k in ours)
        and all(v <= EXACT for v in exact.values())
        and all(v > COUNTER for v in counter.values())
    )
    report = {
        "variant": args.variant,
        "passed": passed,
        "actions_max_abs_diff": ours["actions"],
        "max_abs_diff": ours,
        "tolerance": TOLERANCE,
        "max_abs_diff_with_pi0_float64_time_features": exact,
        "tolerance_with_pi0_float64_time_features": EXACT,
        "counter_cases_actions_max_abs_diff": counter,
        "counter_cases_must_exceed": COUNTER,
        "actions_scale": float(data["out.sample"].abs().max()),
        "config": read_model_dir(dst).source,
        "versions": {**meta["versions"], "f1kit_torch": torch.__version__},
    }
    (work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
