"""F1's training pass: one trunk forward, L = w_act * L_flow + w_gen * CE (docs/contract.md).

The contract with inference (`f1kit.model.inference`) for a pass with action tokens:

* **The Action rows see what inference shows them.** The foresight they attend to is drawn by the
  model itself with ``inference.foresee`` (no gradient, the same sampling settings, the same
  ``model.config.generation.scales`` scales), so the G rows they read are the SOS and the inputs
  of scales 2..K built from the *drawn* codes, at the positions inference gives them.
* **The cross-entropy scores targets against inputs they belong to.** In a residual quantizer the
  true code of scale k+1 quantises what the true scales 1..k left over, so the CE reads a
  teacher-forced twin of the scale inputs, built from the ground-truth scales 1..K-1
  (arXiv 2404.02905 eq. 3 / VAR's teacher forcing).
* Both views run in ONE forward (`attention.Twin`): [U | history | SOS | drawn 2..K | true 2..K |
  state | actions], the true inputs visible only to themselves, the drawn ones to the actions.

Stage I (no action tokens) is the plain teacher-forced pass over the stage's scales. No-Gen
models run [U | state | actions].
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attention import GENERATION, UNDERSTANDING, Twin
from f1kit.global_batch import GlobalBatch
from f1kit.model.codes import batch_codes, scale_inputs, split_codes
from f1kit.model.inference import Prefix, encode_prefix, foresee
from f1kit.model.objective import Objective
from f1kit.model.trunk import BoundTrunk, JointPass
from flow.head import math_dtype
from foresight import token_uniforms

if TYPE_CHECKING:  # f1.py imports this module
    from f1kit.model.f1 import F1


def training_scales(model: "F1", objective: Objective) -> int:
    """Foresight scales of a pass: the inference count when it acts, else the stage's choice
    (None = every tokenizer scale, stage I). An acting pass at another count is refused: its
    layout, token count and state/action positions would differ from inference's."""
    if model.generator is None:
        return 0
    gen = model.config.generation
    assert gen is not None
    if objective.action > 0:
        if objective.scales not in (None, gen.scales):
            raise ValueError(
                f"objective.scales: a pass with actions trains on the {gen.scales} scales "
                f"inference generates (model.generation.scales), got {objective.scales}"
            )
        return gen.scales
    k = model.generator.num_scales if objective.scales is None else objective.scales
    if not 1 <= k <= model.generator.num_scales:
        raise ValueError(f"objective.scales: expected 1..{model.generator.num_scales}, got {k}")
    return k


def loss(
    model: "F1",
    batch: dict,
    generator: torch.Generator | GlobalBatch | None = None,
    *,
    objective: Objective,
) -> tuple[Tensor, dict[str, float]]:
    """One training step's loss on a `WindowedDataset` batch -> (total loss, metrics).

    batch: ``images`` uint8 [b, v, 3, H, W], ``task`` (b instructions), ``state`` [b, s] (not
    read by models without a state token, pi0.5: their ``task`` texts carry it),
    ``action`` [b, c, a] and ``action_is_pad`` [b, c] (data-normalised), and for G models
    ``history`` [b, t, v, 3, H, W] and ``foresight`` [b, v, 3, H, W] frames, or their
    precomputed ``history_codes`` [b, t, N] and ``foresight_codes`` [b, N].
    generator: the foresight draws (first) and the flow time and noise draws (after), in the
    order inference makes them. A `GlobalBatch` (the trainer's) draws them for its global batch
    and keeps this batch's rows, and divides the action loss by the global batch's count of
    real entries, so a step split over ranks computes what one process computes; a plain
    generator draws for this batch alone; None uses torch's global generator.
    """
    _require(batch, ("images", "task"))
    draws = generator
    if isinstance(generator, torch.Generator):
        draws = GlobalBatch.whole(generator, batch["images"].shape[0])
    acting = objective.action > 0
    stateful = model.config.action.state_dim is not None
    if acting:
        _require(batch, ("action", "action_is_pad", *(("state",) if stateful else ())))
    if model.generator is None and objective.generation > 0:
        raise ValueError("objective.generation: this No-Gen model has no Generation expert")
    k = training_scales(model, objective)
    history = batch_codes(model, batch, "history") if model.generator is not None else None
    prefix = encode_prefix(model, batch["images"], batch["task"], history)
    bound = model.bind(prefix, k, actions=acting)
    parts: dict[str, Tensor] = {UNDERSTANDING: prefix.tokens}
    targets = None
    if model.generator is not None and (objective.generation > 0 or not acting):
        targets = split_codes(model, batch_codes(model, batch, "foresight"))[:k]
    twin = None
    if model.generator is not None:
        assert prefix.history is not None
        if acting:
            drawn = foresee(model, prefix.detach(), uniforms=_foresight_uniforms(model, draws))[0]
            parts[GENERATION], twin = _acting_tokens(model, prefix, bound, drawn, targets)
        else:
            assert targets is not None
            parts[GENERATION] = torch.cat(
                [prefix.history, _scale_tokens(model, prefix, targets)], 1
            )
    metrics: dict[str, float] = {}
    total = prefix.tokens.new_zeros(())
    if acting:
        joint = JointPass(bound, parts, twin)
        tau, noise = _flow_draws(model, batch["action"], draws)
        action_loss = model.action_head.loss(
            batch["action"],  # the head keeps a, eps, x_tau and the target in float32
            state=batch["state"].to(prefix.tokens.dtype) if stateful else None,
            chunk_mask=~batch["action_is_pad"].bool(),
            tau=tau,
            noise=noise,
            network=joint,
            share=None if draws is None else draws.share,
        )
        outputs = joint.outputs
        total = total + objective.action * action_loss
        metrics["loss/action"] = float(action_loss.detach())
    else:
        outputs = bound.run(parts, slice(0, bound.layout.n))
    if targets is not None:
        assert model.generator is not None and prefix.history is not None
        hidden = _scored_rows(outputs[GENERATION], prefix.history.shape[1], twin)
        scored = model.generator.score(model.generator.head(hidden), targets)
        total = total + objective.generation * scored.loss
        metrics["loss/generation"] = float(scored.loss.detach())
        metrics["accuracy/foresight"] = float(scored.accuracy.mean())
        metrics["accuracy/foresight_last_scale"] = float(scored.accuracy[-1])
    metrics["loss/total"] = float(total.detach())
    return total, metrics


def _foresight_uniforms(model: "F1", draws: GlobalBatch | None) -> Float[Tensor, "b n"] | None:
    """One uniform per foresight token the acting pass draws (`foresight.sample_tokens`)."""
    if draws is None:
        return None
    assert model.generator is not None and model.config.generation is not None
    n, g = model.generator.tokens_upto(model.config.generation.scales), draws.generator
    return draws.rows(lambda rows: token_uniforms(rows, n, g))


def _flow_draws(
    model: "F1", actions: Float[Tensor, "b c _"], draws: GlobalBatch | None
) -> tuple[Float[Tensor, " b"] | None, Float[Tensor, "b c a"] | None]:
    """Flow time and noise of this batch's rows (None, None: the head draws them itself).

    Drawn as `FlowMatchingHead.loss` would (time first, then noise at the padded action width,
    in the flow's arithmetic dtype), so one process draws the same numbers either way."""
    if draws is None:
        return None, None
    head, g = model.action_head, draws.generator
    tau = draws.rows(lambda rows: head.config.time_sampler(rows, generator=g, device=g.device))
    shape = (actions.shape[1], head.config.action_dim)
    dtype = math_dtype(actions.dtype)
    noise = draws.rows(
        lambda rows: torch.randn((rows, *shape), generator=g, dtype=dtype, device=g.device)
    )
    return tau.to(actions.device), noise.to(actions.device)


def _scale_tokens(
    model: "F1", prefix: Prefix, scales: list[Int[Tensor, "b _"]], first_scale: int = 0
) -> Float[Tensor, "b n d"]:
    """Generator tokens of the inputs built from ``scales`` ([SOS,] inputs of scales 2..K)."""
    assert model.generator is not None and prefix.history is not None
    inputs = scale_inputs(model, scales, prefix.history.dtype)
    return model.generator.embed_scales(prefix.history, inputs, first_scale=first_scale)


def _acting_tokens(
    model: "F1",
    prefix: Prefix,
    bound: BoundTrunk,
    drawn: list[Tensor],
    targets: list[Tensor] | None,
) -> tuple[Tensor, Twin | None]:
    """G tokens of an acting pass: [history | SOS | drawn inputs 2..K (| true inputs 2..K)]
    and the `Twin` that keeps the true inputs private to themselves (None: no twin needed, as
    without a CE or with one scale, whose only input is the shared SOS)."""
    assert prefix.history is not None
    tokens = [prefix.history, _scale_tokens(model, prefix, drawn)]
    twin = None
    if targets is not None and len(targets) > 1:
        tokens.append(_scale_tokens(model, prefix, targets, first_scale=1))
        foresight = bound.layout.slice("foresight")
        twin = Twin(bound.layout, foresight.start + 1, foresight.stop)
    return torch.cat(tokens, dim=1), twin


def _scored_rows(hidden: Tensor, n_history: int, twin: Twin | None) -> Tensor:
    """G outputs that predict the targets: the SOS row, then the teacher-forced scale rows."""
    if twin is None:
        return hidden[:, n_history:]
    sos = hidden[:, n_history : n_history + 1]
    return torch.cat([sos, hidden[:, n_history + 1 + twin.length :]], dim=1)


def _require(batch: dict, keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch: missing keys {missing} (has {sorted(batch)})")
