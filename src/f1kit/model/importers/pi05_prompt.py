"""pi0.5's prompt: the task and the discretised robot state, as one instruction text.

pi0.5 has no state token: its processor (lerobot ``processor_pi05``, openpi's tokenizer) writes
the state into the prompt. The state is first normalised to [-1, 1] (pi0.5's QUANTILES
normalisation: the 1st / 99th percentiles of the training data map to -1 / 1), then each real
(unpadded) dim is cut into 256 equal bins over [-1, 1]:

    bin(s) = #{k in 0..255 : -1 + k / 128 <= s} - 1       (numpy: digitize(s, edges) - 1)

so s in [-1 + k/128, -1 + (k+1)/128) gives k, s >= 1 - 1/128 gives 255, and s < -1 gives -1 (the
rule has no lower clip; a state the normaliser keeps in range never hits it). The prompt is

    "Task: {task}, State: {b_1} {b_2} ... {b_s};\\nAction: "

with the task stripped and its ``_`` and newlines turned into spaces. It is then tokenized with
PaliGemma's tokenizer, BOS first, no EOS, padded to ``tokenizer_max_length`` (200): an imported
pi0.5's text settings do that (``append_eos: false``).

Example:
    >>> pi05_prompt("pick_up the cube\\n", torch.tensor([-1.0, 0.0, 0.999]))
    'Task: pick up the cube, State: 0 128 255;\\nAction: '
"""

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

BINS = 256


def discretize_state(state: Float[Tensor, "*b s"]) -> Int[Tensor, "*b s"]:
    """256-bin indices of a [-1, 1]-normalised state (the rule in the module docstring)."""
    if not state.is_floating_point():
        raise ValueError(f"state: expected a float tensor normalised to [-1, 1], got {state.dtype}")
    edges = torch.linspace(-1.0, 1.0, BINS + 1, dtype=torch.float64, device=state.device)[:-1]
    # right=True counts the edges <= s, as numpy's digitize does for increasing edges.
    return torch.searchsorted(edges, state.to(torch.float64).contiguous(), right=True) - 1


def pi05_prompt(task: str, state: Float[Tensor, " s"]) -> str:
    """One sample's prompt from its task and its normalised, unpadded state [s]."""
    if state.ndim != 1:
        raise ValueError(f"state: expected one sample's state [s], got {list(state.shape)}")
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    bins = " ".join(str(int(b)) for b in discretize_state(state))
    return f"Task: {cleaned}, State: {bins};\nAction: "


def pi05_prompts(tasks: Sequence[str], states: Float[Tensor, "b s"]) -> list[str]:
    """The prompts of a batch: b tasks and their normalised, unpadded states [b, s]."""
    if states.ndim != 2 or states.shape[0] != len(tasks):
        raise ValueError(
            f"states: expected [{len(tasks)}, s] (one row per task), got {list(states.shape)}"
        )
    return [pi05_prompt(task, row) for task, row in zip(tasks, states, strict=True)]
