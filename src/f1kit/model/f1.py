"""`F1`: the three experts on one MoT trunk under the UGA mask (arXiv 2509.06951; DESIGN.md s1-s5).

Joint sequence and who runs it (`attention.uga_layout`):

    [ images, instruction | history | SOS, scale 2..K | state | noisy action chunk ]
      Understanding (U)     Generation (G)               Action (A)

* U: `Understanding` (vision encoder + text embedding) gives the prefix tokens.
* G: the frozen tokenizer turns the history frames into teacher-forcing sequences, collapsed by
  `foresight.TemporalAggregator`; `foresight.NextScaleGenerator` embeds the SOS and scale inputs,
  reads logits and samples, running on the trunk's G slice (`trunk.GenerationExpert`).
* A: `flow.FlowMatchingHead` embeds the state and the noisy chunk and integrates the velocity,
  running on the trunk's A slice (`trunk.ActionExpert`, `trunk.JointPass`).

Training (``forward``) is ONE trunk pass over U + G + A under the full mask; the loss is
``w_gen * CE(foresight codes) + w_act * flow MSE`` (DESIGN.md s4: w_gen = 0.1 in stages II/III).
Inference (``predict``): a prefix pass fills the KV cache with U + history + SOS, each foresight
scale appends its tokens, then every flow step runs the state + chunk rows against the cache
without writing to it.

Inputs are uint8 camera frames [b, v, 3, H, W] and data-normalised state and actions (the
`F1Policy` wrapper applies the dataset statistics to raw observations).
"""

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float, Int, Shaped, UInt8
from torch import Tensor, nn

from attention import ACTION, GENERATION, UNDERSTANDING, Layout, uga_layout
from f1kit.model.config import F1Config
from f1kit.model.objective import Objective
from f1kit.model.trunk import ActionExpert, BoundTrunk, GenerationExpert, JointPass
from f1kit.model.understanding import Understanding
from flow import FlowMatchingHead
from foresight import MultiScaleVQVAE, NextScaleConfig, NextScaleGenerator, TemporalAggregator
from mot import KVCache, MoTStack

log = logging.getLogger(__name__)


@dataclass
class Prefix:
    """The Understanding tokens of a batch and (G models) its history tokens."""

    tokens: Float[Tensor, "b nu du"]
    valid: Bool[Tensor, "b nu"]
    history: Float[Tensor, "b nh dg"] | None


@dataclass
class Prediction:
    """A predicted chunk (data-normalised units, padded action_dim) and its foresight tokens."""

    actions: Float[Tensor, "b c a"]
    foresight: list[Int[Tensor, "b _"]] | None


class F1(nn.Module):
    """F1 (or No-Gen, when ``config.generation`` is None) built from its config.

    Example:
        >>> model = F1(F1Config.tiny())
        >>> batch = {"images": ..., "history": ..., "foresight": ..., "state": ..., "action": ...,
        ...          "action_is_pad": ..., "task": [...]}          # a `WindowedDataset` batch
        >>> loss, metrics = model(batch, objective=Objective(generation=0.1, action=1.0, scales=4))
        >>> chunk = model.predict(images, texts, state, history).actions
    """

    def __init__(self, config: F1Config) -> None:
        super().__init__()
        self.config = config
        trunk_cfg = config.trunk
        self.understanding = Understanding(
            config.vision, config.text, trunk_cfg.understanding.width, config.text_vocab
        )
        self.trunk = MoTStack(trunk_cfg.mot_config())
        self.tokenizer: MultiScaleVQVAE | None = None
        self.aggregator: TemporalAggregator | None = None
        self.generator: NextScaleGenerator | None = None
        gen = config.generation
        if gen is not None and trunk_cfg.generation is not None:
            vq = gen.tokenizer.vqvae_config()
            width = trunk_cfg.generation.width
            self.tokenizer = MultiScaleVQVAE(vq).requires_grad_(False).eval()
            self.aggregator = TemporalAggregator(
                gen.history, vq.num_tokens - 1, vq.latent_dim, width
            )
            gen_cfg = NextScaleConfig(vq.scales, vq.vocab_size, vq.latent_dim, width)
            # The generator's own network is unused (F1 passes the trunk slice per call); an
            # object, not a module, so the trunk's weights are not registered twice.
            self.generator = NextScaleGenerator(gen_cfg, _NoNetwork(width))
        self.action_head = FlowMatchingHead(config.action.head_config(trunk_cfg.action.width))

    # ---- experts, freezing, optimiser groups ----------------------------------------------

    @property
    def experts(self) -> tuple[str, ...]:
        return self.trunk.config.expert_names

    def expert_parameters(self, name: str) -> list[nn.Parameter]:
        """An expert's trunk slice plus the modules that only feed or read it (no tokenizer)."""
        if name not in self.experts:
            raise ValueError(f"expert {name!r}: this model has {self.experts}")
        own: list[nn.Module] = {
            UNDERSTANDING: [self.understanding],
            GENERATION: [m for m in (self.aggregator, self.generator) if m is not None],
            ACTION: [self.action_head],
        }[name]
        params = list(self.trunk.expert_parameters(name))
        for module in own:
            params.extend(module.parameters())
        return params

    def set_trainable(self, experts: Iterable[str]) -> None:
        """Train exactly ``experts``; freeze the others. The tokenizer always stays frozen."""
        chosen = set(experts)
        unknown = sorted(chosen - set(self.experts))
        if unknown:
            raise ValueError(f"experts: {unknown} are not in this model, it has {self.experts}")
        for name in self.experts:
            for p in self.expert_parameters(name):
                p.requires_grad_(name in chosen)

    def param_groups(self, lrs: dict[str, float]) -> list[dict]:
        """AdamW groups, one per trainable expert with its learning rate from ``lrs``."""
        groups = []
        for name in self.experts:
            params = [p for p in self.expert_parameters(name) if p.requires_grad]
            if not params:
                continue
            if name not in lrs:
                raise ValueError(f"lrs: no learning rate for the trained expert {name!r}")
            groups.append({"name": name, "params": params, "lr": float(lrs[name])})
        return groups

    def train(self, mode: bool = True) -> "F1":
        super().train(mode)
        if self.tokenizer is not None:
            self.tokenizer.eval()  # frozen: its dropout (if any) stays off
        return self

    # ---- inputs -----------------------------------------------------------------------------

    def tokenizer_images(self, frames: Shaped[Tensor, "b 3 H W"]) -> Float[Tensor, "b 3 S S"]:
        """uint8 frames -> [-1, 1] floats at the tokenizer's size (resized when different)."""
        tokenizer = self._tokenizer()
        size = tokenizer.config.image_size
        x = frames.float() / 127.5 - 1.0 if frames.dtype == torch.uint8 else frames.float()
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x.to(next(tokenizer.parameters()).dtype)

    def frame_codes(self, frames: Shaped[Tensor, "b v 3 H W"]) -> Int[Tensor, "b N"]:
        """The generation camera's frames -> their whole token pyramid, scales concatenated.

        The tokenizer is frozen, so these codes can be computed once per dataset frame (the
        recipes do) or per env step (`F1Policy` does) and passed as ``*_codes`` instead.
        """
        tokenizer = self._tokenizer()
        if frames.ndim != 5:
            raise ValueError(f"frames: expected [b, v, 3, H, W], got {list(frames.shape)}")
        with torch.no_grad():
            frame = frames[:, self._camera(frames.shape[1])]
            return torch.cat(tokenizer.encode(self.tokenizer_images(frame)), dim=1)

    def split_codes(self, codes: Int[Tensor, "*b N"]) -> list[Int[Tensor, "*b _"]]:
        """Concatenated pyramid codes -> one tensor per scale."""
        counts = [s * s for s in self._tokenizer().scales]
        if codes.shape[-1] != sum(counts):
            raise ValueError(
                f"codes: expected {sum(counts)} tokens per frame (scales "
                f"{self._tokenizer().scales}), got {codes.shape[-1]}"
            )
        return list(codes.long().split(counts, dim=-1))

    def history_tokens(self, codes: Int[Tensor, "b t N"]) -> Float[Tensor, "b n d"]:
        """History frames' codes (oldest first) -> aggregated history tokens (DESIGN.md s3)."""
        tokenizer, gen = self._tokenizer(), self.config.generation
        assert gen is not None and self.aggregator is not None  # _tokenizer() checked it
        if codes.ndim != 3 or codes.shape[1] != gen.history:
            raise ValueError(
                f"history: expected {gen.history} frames per sample, got {list(codes.shape)}"
            )
        flat = rearrange(codes, "b t N -> (b t) N")
        with torch.no_grad():
            inputs = tokenizer.teacher_forcing_inputs(self.split_codes(flat)[:-1])
        inputs = rearrange(inputs, "(b t) n z -> b t n z", b=codes.shape[0])
        return self.aggregator(inputs)

    def batch_codes(self, batch: dict, key: str) -> Int[Tensor, "..."]:
        """``batch[key + '_codes']`` when precomputed, else the codes of ``batch[key]`` frames
        (history [b, t, v, 3, H, W] -> [b, t, N]; foresight [b, v, 3, H, W] -> [b, N])."""
        if f"{key}_codes" in batch:
            return batch[f"{key}_codes"]
        if key not in batch:
            raise ValueError(f"batch: missing {key!r} (or precomputed {key + '_codes'!r})")
        frames = batch[key]
        if key == "history":
            if frames.ndim != 6:
                raise ValueError(f"history: expected [b, t, v, 3, H, W], got {list(frames.shape)}")
            codes = self.frame_codes(rearrange(frames, "b t v c H W -> (b t) v c H W"))
            return rearrange(codes, "(b t) N -> b t N", b=frames.shape[0])
        return self.frame_codes(frames)

    def layout(self, prefix_tokens: int, num_scales: int, actions: bool = True) -> Layout:
        """This model's UGA layout for a prefix of ``prefix_tokens`` and ``num_scales`` scales."""
        gen = self.config.generation
        history = 0 if self.aggregator is None else self.aggregator.tokens
        scales = () if self.generator is None else self.generator.scales[:num_scales]
        chunk = self.config.action.chunk if actions else 0
        return uga_layout(
            prefix_tokens,
            history=history,
            scales=scales,
            state=1 if actions else 0,
            actions=chunk,
            history_in_prefix=True if gen is None else gen.history_in_prefix,
        )

    def bind(self, prefix: Prefix, num_scales: int, actions: bool = True) -> BoundTrunk:
        """The trunk bound to ``prefix``'s batch: its layout (``num_scales`` scales, the action
        rows when ``actions``) and padding (the instruction's; every later token is valid)."""
        layout = self.layout(prefix.tokens.shape[1], num_scales, actions=actions)
        rest = prefix.valid.new_ones(prefix.valid.shape[0], layout.n - prefix.valid.shape[1])
        return BoundTrunk(self.trunk, layout, torch.cat([prefix.valid, rest], dim=1))

    def encode_prefix(
        self,
        images: Shaped[Tensor, "b v 3 H W"],
        texts: Sequence[str],
        history_codes: Int[Tensor, "b t N"] | None = None,
    ) -> Prefix:
        """Understanding tokens and (G models) the aggregated history tokens."""
        tokens, valid = self.understanding(images, texts)
        hist = None
        if self.generator is not None:
            if history_codes is None:
                raise ValueError(
                    "history_codes: this F1 model has a Generation expert; pass the history "
                    "frames' codes (F1.batch_codes / F1.frame_codes)"
                )
            hist = self.history_tokens(history_codes).to(tokens.dtype)
        return Prefix(tokens, valid, hist)

    # ---- training ---------------------------------------------------------------------------

    def forward(
        self,
        batch: dict,
        generator: torch.Generator | None = None,
        *,
        objective: Objective,
    ) -> tuple[Tensor, dict[str, float]]:
        """One training step's loss on a `WindowedDataset` batch -> (total loss, metrics).

        batch: ``images`` uint8 [b, v, 3, H, W], ``task`` (b instructions), ``state`` [b, s],
        ``action`` [b, c, a] and ``action_is_pad`` [b, c] (data-normalised), and for G models
        ``history`` [b, t, v, 3, H, W] and ``foresight`` [b, v, 3, H, W] frames, or their
        precomputed ``history_codes`` [b, t, N] and ``foresight_codes`` [b, N].
        generator: the flow time / noise draws and the sampled-foresight draws.
        """
        _require(batch, ("images", "task"))
        if objective.action > 0:
            _require(batch, ("state", "action", "action_is_pad"))
        if self.generator is None and objective.generation > 0:
            raise ValueError("objective.generation: this No-Gen model has no Generation expert")
        history = self.batch_codes(batch, "history") if self.generator is not None else None
        prefix = self.encode_prefix(batch["images"], batch["task"], history)
        k = self._num_scales(objective.scales)
        with_actions = objective.action > 0
        bound = self.bind(prefix, k, actions=with_actions)
        parts: dict[str, Tensor] = {UNDERSTANDING: prefix.tokens}
        metrics: dict[str, float] = {}
        targets = None
        if self.generator is not None:
            gen_tokens, targets = self._generation_tokens(
                batch, prefix, bound, k, objective, generator
            )
            parts[GENERATION] = gen_tokens
        total = prefix.tokens.new_zeros(())
        if with_actions:
            joint = JointPass(bound, parts)
            action_loss = self.action_head.loss(
                batch["action"].to(prefix.tokens.dtype),
                state=batch["state"].to(prefix.tokens.dtype),
                chunk_mask=~batch["action_is_pad"].bool(),
                generator=generator,
                network=joint,
            )
            outputs = joint.outputs
            total = total + objective.action * action_loss
            metrics["loss/action"] = float(action_loss.detach())
        else:
            outputs = bound.run(parts, slice(0, bound.layout.n))
        if self.generator is not None and targets is not None:
            n_h = prefix.history.shape[1] if prefix.history is not None else 0
            logits = self.generator.head(outputs[GENERATION][:, n_h:])
            scored = self.generator.score(logits, targets)
            total = total + objective.generation * scored.loss
            metrics["loss/generation"] = float(scored.loss.detach())
            metrics["accuracy/foresight"] = float(scored.accuracy.mean())
            metrics["accuracy/foresight_last_scale"] = float(scored.accuracy[-1])
        metrics["loss/total"] = float(total.detach())
        return total, metrics

    def _generation_tokens(
        self,
        batch: dict,
        prefix: Prefix,
        bound: BoundTrunk,
        k: int,
        objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, list[Tensor]]:
        """G tokens [history | SOS | inputs of scales 2..k] and the k target scales."""
        assert self.generator is not None and prefix.history is not None
        tokenizer = self._tokenizer()
        targets = self.split_codes(self.batch_codes(batch, "foresight"))[:k]
        # Sampling exists for the actions' sake (they train on what inference shows them); a
        # pass without action tokens (stage I) teacher-forces whatever the mode says.
        if objective.foresight == "sampled" and k > 1 and objective.action > 0:
            gen = self.config.generation
            assert gen is not None
            net = GenerationExpert(bound, prefix.tokens.detach())
            with torch.no_grad():
                drawn = self.generator.generate(
                    prefix.history.detach(),
                    tokenizer,
                    num_scales=k,
                    top_k=gen.top_k,
                    top_p=gen.top_p,
                    temperature=gen.temperature,
                    generator=generator,
                    network=net,
                ).tokens
            source = drawn
        else:
            source = targets
        inputs = tokenizer.teacher_forcing_inputs(source[: k - 1]) if k > 1 else None
        if inputs is None:
            inputs = prefix.history.new_zeros(
                prefix.history.shape[0], 0, tokenizer.config.latent_dim
            )
        scale_tokens = self.generator.embed_scales(prefix.history, inputs.to(prefix.history.dtype))
        return torch.cat([prefix.history, scale_tokens], dim=1), targets

    # ---- inference --------------------------------------------------------------------------

    @torch.no_grad()
    def start(self, prefix: Prefix, num_scales: int | None = None) -> tuple[BoundTrunk, KVCache]:
        """No-Gen models: the prefix pass filling a fresh cache (G models: see ``foresee``)."""
        bound = self.bind(prefix, self._num_scales(num_scales, inference=True))
        cache = bound.new_cache(prefix.tokens.shape[0], dtype=prefix.tokens.dtype)
        bound.run({UNDERSTANDING: prefix.tokens}, bound.layout.slice("prefix"), cache)
        return bound, cache

    @torch.no_grad()
    def foresee(
        self,
        prefix: Prefix,
        *,
        num_scales: int | None = None,
        generator: torch.Generator | int | None = None,
    ) -> tuple[list[Tensor], BoundTrunk, KVCache]:
        """Prefix pass + K foresight scales, all appended to one KV cache (DESIGN.md s3)."""
        gen = self.config.generation
        if self.generator is None or gen is None or prefix.history is None:
            raise ValueError("foresee: this No-Gen model has no Generation expert")
        k = self._num_scales(num_scales, inference=True)
        net = GenerationExpert(self.bind(prefix, k), prefix.tokens)
        tokens = self.generator.generate(
            prefix.history,
            self._tokenizer(),
            num_scales=k,
            top_k=gen.top_k,
            top_p=gen.top_p,
            temperature=gen.temperature,
            generator=generator,
            network=net,
        ).tokens
        assert net.cache is not None  # generate() made it through net.new_cache
        # The cache now holds U, history, SOS and the inputs of scales 2..K: the G rows of the
        # training pass. Scale K's sampled codes have no input slot (as in training), the
        # actions read the hidden states that predicted them.
        return tokens, net.bound, net.cache

    @torch.no_grad()
    def act(
        self,
        bound: BoundTrunk,
        cache: KVCache,
        state: Float[Tensor, "b s"],
        *,
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "b c a"] | None = None,
    ) -> Float[Tensor, "b c a"]:
        """Integrate the flow from noise to a chunk, every step reading the filled cache."""
        net = ActionExpert(bound, cache)
        return self.action_head.sample(
            state.shape[0],
            state=state.to(self.action_head.action_out.weight.dtype),
            generator=generator,
            noise=noise,
            network=net,
        ).sample

    @torch.no_grad()
    def predict(
        self,
        images: Shaped[Tensor, "b v 3 H W"],
        texts: Sequence[str],
        state: Float[Tensor, "b s"],
        history_codes: Int[Tensor, "b t N"] | None = None,
        *,
        num_scales: int | None = None,
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "b c a"] | None = None,
    ) -> Prediction:
        """One chunk: prefix pass, K foresight scales (G models), the action flow.

        history_codes: the history frames' codes (`frame_codes` of each past frame).
        """
        prefix = self.encode_prefix(images, texts, history_codes)
        foresight = None
        if self.generator is None:
            bound, cache = self.start(prefix)
        else:
            foresight, bound, cache = self.foresee(
                prefix, num_scales=num_scales, generator=generator
            )
        actions = self.act(bound, cache, state, generator=generator, noise=noise)
        return Prediction(actions, foresight)

    @torch.no_grad()
    def decode_foresight(self, tokens: list[Int[Tensor, "b _"]]) -> UInt8[Tensor, "b H W 3"]:
        """The foresight frame of the generated scales, as displayable uint8 images."""
        image = self._tokenizer().decode(tokens)
        image = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(image, "b c H W -> b H W c")

    # ---- helpers ----------------------------------------------------------------------------

    def _tokenizer(self) -> MultiScaleVQVAE:
        if self.tokenizer is None or self.config.generation is None:
            raise ValueError("this No-Gen model has no tokenizer (generation: null)")
        return self.tokenizer

    def _camera(self, cameras: int) -> int:
        gen = self.config.generation
        assert gen is not None
        if gen.camera >= cameras:
            raise ValueError(
                f"generation.camera: index {gen.camera} but the batch has {cameras} cameras"
            )
        return gen.camera

    def _num_scales(self, scales: int | None, *, inference: bool = False) -> int:
        if self.generator is None:
            return 0
        gen = self.config.generation
        assert gen is not None
        if scales is None:
            scales = gen.scales if inference else self.generator.num_scales
        if not 1 <= scales <= self.generator.num_scales:
            raise ValueError(f"scales: expected 1..{self.generator.num_scales}, got {scales}")
        return scales


class _NoNetwork:
    """Placeholder network of F1's generator: every call passes the trunk slice instead."""

    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(
        self, tokens: Tensor, mask: Tensor | None, positions: Tensor, cache=None
    ) -> Tensor:
        raise RuntimeError("F1's generator runs on the trunk: pass network=GenerationExpert(...)")

    def new_cache(self, batch: int, capacity: int, *, device=None, dtype=None) -> object:
        raise RuntimeError("F1's generator runs on the trunk: pass network=GenerationExpert(...)")


def _require(batch: dict, keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch: missing keys {missing} (has {sorted(batch)})")
