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

This file holds the modules, the experts' parameters and the layout. The two contracts live in
one short file each, to be read side by side (docs/contract.md): `training.py` (the joint pass
and its loss) and `inference.py` (prefix -> foresee -> act); `codes.py` is the tokenizer's side.

Parameters no loss reaches (the official layout, kept so its checkpoints map one to one): U's
last-layer attention output, post-norm and MLP, and U's final norm, feed only U's last hidden
states, which nothing reads (G and A read U's keys and values); they get no gradient.

Inputs are uint8 camera frames [b, v, 3, H, W] and data-normalised state and actions (the
`F1Policy` wrapper applies the processor to raw observations).
"""

from collections.abc import Iterable

import torch
from einops import rearrange
from jaxtyping import Int, UInt8
from torch import Tensor, nn

from attention import ACTION, GENERATION, UNDERSTANDING, Layout, uga_layout
from f1kit.model import codes, inference, training
from f1kit.model.config import F1Config
from f1kit.model.engine import Engine
from f1kit.model.inference import Prediction, Prefix
from f1kit.model.trunk import BoundTrunk
from f1kit.model.understanding import Understanding
from flow import FlowMatchingHead
from foresight import MultiScaleVQVAE, NextScaleConfig, NextScaleGenerator, TemporalAggregator
from mot import MoTStack

__all__ = ["F1", "LEGACY_KEYS", "Prediction", "Prefix"]

LEGACY_KEYS = ("generator.null_context",)
"""Tensors of older F1 checkpoints that this layout no longer has, dropped on load: the
generator's CFG null context (built only when condition dropout trains it; F1 never did)."""


class F1(nn.Module):
    """F1 (or No-Gen, when ``config.generation`` is None) built from its config.

    Example:
        >>> model = F1(F1Config.tiny())
        >>> batch = {"images": ..., "history": ..., "foresight": ..., "state": ..., "action": ...,
        ...          "action_is_pad": ..., "task": [...]}          # a `WindowedDataset` batch
        >>> loss, metrics = model(batch, objective=Objective(generation=0.1, action=1.0, scales=4))
        >>> chunk = model.predict(images, texts, state, history_codes).actions
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
            # No network of its own: every call passes the trunk's G slice (trunk.py).
            self.generator = NextScaleGenerator(gen_cfg)
        head = config.action.head_config(trunk_cfg.action.width, config.adaptive_action)
        self.action_head = FlowMatchingHead(head)
        self._register_load_state_dict_pre_hook(self._drop_legacy_keys)
        self._layouts: dict[tuple[int, int, bool], Layout] = {}

    def upgrade_state_dict(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of an older checkpoint layout in this one (``LEGACY_KEYS`` dropped)."""
        own = self.state_dict().keys()
        return {k: v for k, v in tensors.items() if k in own or k not in LEGACY_KEYS}

    def _drop_legacy_keys(self, state_dict: dict, prefix: str, *args: object) -> None:
        for key in LEGACY_KEYS:
            if prefix + key in state_dict and key not in self.state_dict():
                del state_dict[prefix + key]

    # ---- sharding (f1kit.train.parallel) ---------------------------------------------------

    def shard_units(self) -> list[nn.Module]:
        """What FSDP shards as units of their own (each is called through its ``forward``):
        each MoT layer, the vision tower and the text embedding; the rest (norms, the
        generator's, aggregator's and action expert's small modules) is the root unit."""
        return [*self.trunk.layers, self.understanding.vision, self.understanding.text_embedding]

    def unsharded_units(self) -> list[nn.Module]:
        """What FSDP leaves whole on every rank: the frozen tokenizer, which stays float32
        (`loading.FP32_MODULES`) and is called through its own methods, not ``forward``."""
        return [self.tokenizer] if self.tokenizer is not None else []

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

    # ---- layout ------------------------------------------------------------------------------

    def layout(self, prefix_tokens: int, num_scales: int, actions: bool = True) -> Layout:
        """This model's UGA layout for a prefix of ``prefix_tokens`` and ``num_scales`` scales
        (built once per shape: its tables, on the host and on devices, are kept with it)."""
        key = (prefix_tokens, num_scales, actions)
        if key not in self._layouts:
            self._layouts[key] = self._build_layout(prefix_tokens, num_scales, actions)
        return self._layouts[key]

    def _build_layout(self, prefix_tokens: int, num_scales: int, actions: bool) -> Layout:
        gen = self.config.generation
        history = 0 if self.aggregator is None else self.aggregator.tokens
        scales = () if self.generator is None else self.generator.scales[:num_scales]
        chunk = self.config.action.chunk if actions else 0
        return uga_layout(
            prefix_tokens,
            history=history,
            scales=scales,
            state=1 if actions and self.config.action.state_dim is not None else 0,
            actions=chunk,
            history_in_prefix=True if gen is None else gen.history_in_prefix,
        )

    def bind(
        self,
        prefix: Prefix,
        num_scales: int,
        actions: bool = True,
        engine: Engine | None = None,
    ) -> BoundTrunk:
        """The trunk bound to ``prefix``'s batch: its layout (``num_scales`` scales, the action
        rows when ``actions``) and padding (the instruction's; every later token is valid),
        run by ``engine`` (`engine.Engine`: compiled, caches kept) or eagerly."""
        layout = self.layout(prefix.tokens.shape[1], num_scales, actions=actions)
        rest = prefix.valid.new_ones(prefix.valid.shape[0], layout.n - prefix.valid.shape[1])
        valid = torch.cat([prefix.valid, rest], dim=1)
        return BoundTrunk(self.trunk, layout, valid, engine)

    # ---- the two contracts (training.py, inference.py) and the tokenizer side (codes.py) -----
    # The functions take the model first, so they serve as its methods unchanged.

    forward = training.loss  # (batch, generator=None, *, objective) -> (loss, metrics)
    predict = inference.predict  # (images, texts, state, history_codes, ...) -> Prediction
    encode_prefix = inference.encode_prefix
    start = inference.start
    foresee = inference.foresee
    act = inference.act
    tokenizer_images = codes.tokenizer_images
    frame_codes = codes.frame_codes
    batch_codes = codes.batch_codes
    split_codes = codes.split_codes

    @torch.no_grad()
    def decode_foresight(self, tokens: list[Int[Tensor, "b _"]]) -> UInt8[Tensor, "b H W 3"]:
        """The foresight frame of the generated scales, as displayable uint8 images."""
        image = codes.tokenizer(self).decode(tokens)
        image = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(image, "b c H W -> b H W c")
