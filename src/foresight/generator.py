"""`NextScaleGenerator`: VAR next-scale prediction as a block (arXiv 2404.02905; DESIGN.md s3).

The joint sequence is ``[context | SOS | inputs of scale 2 | ... | inputs of scale K]``:

    context  n_c tokens [b, n_c, d] (class / instruction / prefix tokens): one bidirectional block
    scale 1  the SOS: a learned vector + a projection of the mean valid context token
    scale k  the tokenizer's teacher-forcing inputs (f_hat after scales 1..k-1, area-downsampled
             to s_k x s_k, latent_dim wide) projected to the width: s_k^2 tokens, one block

Every scale token also gets a learned absolute position embedding and its scale's level
embedding. The blocks follow the block rule (`attention.uga_layout`): a scale sees the context
and all earlier scales, never later ones; the output at scale k's positions predicts scale k's
codes through the head (norm + linear to the vocabulary), trained with cross-entropy.

Generation runs the context + SOS once, then one network call per scale, appending to the
network's KV cache (or, as the reference, the whole growing sequence without a cache).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from attention import Layout, uga_layout
from foresight.generation import GenerationOutput, sample_scales, scale_draws, step_inputs
from foresight.network import TokenNetwork
from foresight.next_scale_config import NextScaleConfig
from foresight.sampling import check_sampling
from foresight.scales import ScaleTokenizer, check_pyramid


@dataclass
class GeneratorLoss:
    """Teacher-forced loss: the weighted CE (scalar) and, per scale, CE and token accuracy."""

    loss: Tensor
    per_scale: Tensor
    accuracy: Tensor


class NextScaleGenerator(nn.Module):
    """Next-scale prediction around any `TokenNetwork`; see the module docstring.

    Example:
        >>> cfg = NextScaleConfig(scales=(1, 2, 3), vocab_size=64, latent_dim=8, width=32)
        >>> gen = NextScaleGenerator(cfg, DefaultTransformer(TransformerConfig(width=32)))
        >>> context = torch.randn(2, 3, 32)                # e.g. class tokens
        >>> logits = gen(context, torch.randn(2, 4 + 9, 8))  # inputs of scales 2..3
        >>> logits.shape                                   # 1 + 4 + 9 predicted tokens
        torch.Size([2, 14, 64])
    """

    def __init__(self, config: NextScaleConfig, network: TokenNetwork | None = None) -> None:
        """network: the transformer that runs the tokens, or None when every call passes its
        own (F1 runs the generator on a slice of its MoT trunk)."""
        super().__init__()
        if network is not None and not isinstance(network, TokenNetwork):
            raise TypeError(
                "network: expected a TokenNetwork (callable(tokens, mask, positions, cache) and "
                f"new_cache(batch, capacity, ...)), got {type(network).__name__}"
            )
        net_width = getattr(network, "width", config.width)
        if net_width != config.width:
            raise ValueError(f"network width {net_width} differs from config.width {config.width}")
        self.config = config
        self.network = network
        d, counts = config.width, config.token_counts
        self.sos = nn.Parameter(torch.randn(d) * 0.02)
        self.context_to_sos = nn.Linear(d, d)
        # The null context exists only when condition dropout trains it (CFG samples against it).
        self.null_context: nn.Parameter | None = None
        if config.cond_drop_prob > 0:
            self.null_context = nn.Parameter(torch.randn(d) * 0.02)
        self.input_proj = nn.Linear(config.latent_dim, d)
        self.position = nn.Parameter(torch.randn(sum(counts), d) * 0.02)
        self.level = nn.Embedding(len(counts), d)
        nn.init.normal_(self.level.weight, std=0.02)
        self.head_norm = nn.LayerNorm(d)
        self.head_proj = nn.Linear(d, config.vocab_size)
        self.register_buffer("levels", self._levels(None), persistent=False)

    def _levels(self, device: torch.device | str | None) -> Int[Tensor, " n"]:
        """The scale index of every token, SOS first (the level embedding's ids)."""
        counts = self.config.token_counts
        # output_size: lets the model be built on the meta device (sizing, deferred init).
        return torch.repeat_interleave(
            torch.arange(len(counts), device=device),
            torch.tensor(counts, device=device),
            output_size=sum(counts),
        )

    def init_buffers(self, device: torch.device | str) -> None:
        """Compute the non-persistent buffer ``levels`` on ``device``. A generator built on the
        meta device and loaded with ``assign=True`` (`f1kit.model.loading`) gets it here: it is
        derived from the config, never saved."""
        self.levels = self._levels(device)

    # ---- sizes and layout -----------------------------------------------------------------

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    @property
    def num_scales(self) -> int:
        return len(self.config.scales)

    def tokens_upto(self, num_scales: int) -> int:
        """Tokens of the first ``num_scales`` scales (SOS included)."""
        return sum(self.config.token_counts[:num_scales])

    def layout(self, context_tokens: int, num_scales: int | None = None) -> Layout:
        """Block layout of ``context_tokens`` context tokens and the first ``num_scales`` scales."""
        k = self._check_num_scales(num_scales)
        return uga_layout(prefix=context_tokens, scales=self.scales[:k], state=0)

    def _check_num_scales(self, num_scales: int | None) -> int:
        if num_scales is None:
            return self.num_scales
        if not isinstance(num_scales, int) or not 1 <= num_scales <= self.num_scales:
            raise ValueError(f"num_scales: expected 1..{self.num_scales}, got {num_scales!r}")
        return num_scales

    def scales_of_inputs(self, inputs: Tensor) -> int:
        """K such that ``inputs`` holds the teacher-forcing inputs of scales 2..K."""
        if inputs.ndim != 3 or inputs.shape[-1] != self.config.latent_dim:
            raise ValueError(
                f"inputs: expected [b, n, {self.config.latent_dim}], got {list(inputs.shape)}"
            )
        n = inputs.shape[1]
        for k in range(1, self.num_scales + 1):
            if self.tokens_upto(k) - 1 == n:
                return k
        options = [self.tokens_upto(k) - 1 for k in range(1, self.num_scales + 1)]
        raise ValueError(
            f"inputs: {n} tokens match no prefix of the scales {self.scales}; expected one of "
            f"{options} (inputs of scales 2..K, the SOS stands in for scale 1)"
        )

    # ---- embedding, head --------------------------------------------------------------------

    def embed_scales(
        self,
        context: Float[Tensor, "b nc d"],
        inputs: Float[Tensor, "b ni z"],
        context_valid: Bool[Tensor, "b nc"] | None = None,
        first_scale: int = 0,
    ) -> Float[Tensor, "b n d"]:
        """Scale tokens [SOS, proj(inputs)] + position + level embeddings, for the MoT slice.

        first_scale > 0: ``inputs`` are the inputs of scales first_scale+1.. only (one cached
        step); the SOS is then not part of the output.
        """
        parts = []
        if first_scale == 0:
            parts.append(self._sos(context, context_valid).unsqueeze(1))
        parts.append(self.input_proj(inputs.to(self.input_proj.weight.dtype)))
        x = torch.cat(parts, dim=1)
        start = self.tokens_upto(first_scale)
        stop = start + x.shape[1]
        if stop > self.position.shape[0]:
            raise ValueError(
                f"inputs: {x.shape[1]} scale tokens from scale {first_scale} exceed the "
                f"{self.position.shape[0]} tokens of the scales {self.scales}"
            )
        return x + self.position[start:stop] + self.level(self.levels[start:stop])

    def head(self, hidden: Float[Tensor, "b n d"]) -> Float[Tensor, "b n v"]:
        """Network outputs at scale positions -> codebook logits (norm + linear)."""
        return self.head_proj(self.head_norm(hidden))

    def _sos(self, context: Tensor, context_valid: Tensor | None) -> Tensor:
        if context_valid is None:
            pooled = context.mean(dim=1)
        else:
            weights = context_valid.to(context.dtype).unsqueeze(-1)
            pooled = (context * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.sos + self.context_to_sos(pooled)

    def null_context_like(self, context: Float[Tensor, "b nc d"]) -> Float[Tensor, "b nc d"]:
        """The unconditional context (learned null token at every position) for CFG."""
        if self.null_context is None:
            raise ValueError(
                "null context: this generator has none (config.cond_drop_prob = 0 trains no "
                "unconditional model); classifier-free guidance needs cond_drop_prob > 0"
            )
        return self.null_context.to(context.dtype).expand_as(context)

    def _check_context(self, context: Tensor, context_valid: Tensor | None) -> None:
        if context.ndim != 3 or context.shape[-1] != self.config.width or context.shape[1] < 1:
            raise ValueError(
                f"context: expected [b, n_c >= 1, {self.config.width}], got {list(context.shape)}"
            )
        if context_valid is not None:
            if context_valid.shape != context.shape[:2]:
                raise ValueError(
                    f"context_valid: expected {list(context.shape[:2])}, "
                    f"got {list(context_valid.shape)}"
                )
            if not bool(context_valid.any(dim=1).all()):
                raise ValueError("context_valid: every sample needs at least one valid token")

    def sequence_valid(
        self, context_valid: Bool[Tensor, "b nc"] | None, total: int
    ) -> Bool[Tensor, "b n"] | None:
        """Padding mask of the whole sequence (``total`` tokens): scale tokens are all valid."""
        if context_valid is None:
            return None
        ones = context_valid.new_ones(context_valid.shape[0], total - context_valid.shape[1])
        return torch.cat([context_valid, ones], dim=1)

    # ---- teacher forcing ----------------------------------------------------------------------

    def forward(
        self,
        context: Float[Tensor, "b nc d"],
        inputs: Float[Tensor, "b ni z"],
        context_valid: Bool[Tensor, "b nc"] | None = None,
        network: TokenNetwork | None = None,
    ) -> Float[Tensor, "b n v"]:
        """Teacher-forced logits of scales 1..K, K given by the number of input tokens.

        inputs: the tokenizer's teacher-forcing inputs of scales 2..K
            (``tokenizer.teacher_forcing_inputs(indices[:K - 1])``), [b, sum_{k=2}^K s_k^2, z].
        network: run this call on another `TokenNetwork` than the generator's own (F1 passes
            its MoT Generation expert bound to the Understanding prefix).
        Returns [b, sum_{k=1}^K s_k^2, vocab_size] (scale k's logits at scale k's positions).
        """
        self._check_context(context, context_valid)
        k = self.scales_of_inputs(inputs)
        layout = self.layout(context.shape[1], k)
        valid = self.sequence_valid(context_valid, layout.n)
        tokens = torch.cat([context, self.embed_scales(context, inputs, context_valid)], dim=1)
        mask, positions = step_inputs(layout, valid, 0, layout.n, context.device)
        hidden = self._network(network)(tokens, mask, positions, None)
        return self.head(hidden[:, context.shape[1] :])

    def _network(self, network: TokenNetwork | None) -> TokenNetwork:
        if network is None:
            if self.network is None:
                raise ValueError(
                    "network: this generator was built without a network of its own; pass the "
                    "TokenNetwork that runs it per call (network=...)"
                )
            return self.network
        if not isinstance(network, TokenNetwork):
            raise TypeError(f"network: expected a TokenNetwork, got {type(network).__name__}")
        return network

    def loss(
        self,
        context: Float[Tensor, "b nc d"],
        inputs: Float[Tensor, "b ni z"],
        targets: list[Int[Tensor, "b _"]],
        *,
        scale_weights: Float[Tensor, " k"] | None = None,
        context_valid: Bool[Tensor, "b nc"] | None = None,
        generator: torch.Generator | None = None,
        network: TokenNetwork | None = None,
    ) -> GeneratorLoss:
        """Cross-entropy of the first K = len(targets) scales' codes under teacher forcing.

        scale_weights: one weight >= 0 per scale (None = all ones); each token of scale k counts
            with weight w_k, so all-ones is VAR's mean over tokens and zeros leave scales out.
        generator: draws the per-sample context drop (``cond_drop_prob``) in training mode.
        network: a per-call `TokenNetwork` (see `forward`).
        """
        check_pyramid(targets, self.scales, self.config.vocab_size, "targets")
        k = len(targets)
        if self.scales_of_inputs(inputs) != k:
            raise ValueError(
                f"inputs: expected the inputs of scales 2..{k} ({self.tokens_upto(k) - 1} "
                f"tokens) for {k} target scales, got {inputs.shape[1]} tokens"
            )
        if self.training and self.config.cond_drop_prob > 0:
            draw_on = context.device if generator is None else generator.device
            u = torch.rand(context.shape[0], 1, 1, generator=generator, device=draw_on)
            drop = u.to(context.device) < self.config.cond_drop_prob
            context = torch.where(drop, self.null_context_like(context), context)
        logits = self(context, inputs, context_valid, network)
        return self.score(logits, targets, scale_weights=scale_weights)

    def score(
        self,
        logits: Float[Tensor, "b n v"],
        targets: list[Int[Tensor, "b _"]],
        *,
        scale_weights: Float[Tensor, " k"] | None = None,
    ) -> GeneratorLoss:
        """Weighted cross-entropy and per-scale accuracy of logits of the first K scales.

        The loss half of `loss`, for callers that run the network themselves (F1's joint
        U + G + A pass): logits [b, sum_{k<=K} s_k^2, v], targets the K ground-truth scales.
        Each token of scale k counts with weight w_k (VAR: all ones = mean over tokens).
        """
        check_pyramid(targets, self.scales, self.config.vocab_size, "targets")
        k = len(targets)
        if logits.shape[1] != self.tokens_upto(k):
            raise ValueError(
                f"logits: expected {self.tokens_upto(k)} tokens for {k} scales, "
                f"got {logits.shape[1]}"
            )
        weights = torch.ones(k, device=logits.device)
        if scale_weights is not None:
            if scale_weights.shape != (k,) or bool((scale_weights < 0).any()):
                raise ValueError(
                    f"scale_weights: expected {k} weights >= 0, got {scale_weights.tolist()}"
                )
            if not bool((scale_weights > 0).any()):
                raise ValueError("scale_weights: expected at least one positive weight")
            weights = scale_weights.to(logits.device, torch.float32)
        target = torch.cat(targets, dim=1)
        flat = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))
        ce = F.cross_entropy(flat, target.flatten(), reduction="none")
        ce = ce.view_as(target)
        per_scale = torch.stack([c.mean() for c in ce.split(self.config.token_counts[:k], 1)])
        hits = (logits.argmax(-1) == target).float()
        accuracy = torch.stack([h.mean() for h in hits.split(self.config.token_counts[:k], 1)])
        counts = torch.tensor(self.config.token_counts[:k], device=weights.device)
        token_weights = torch.repeat_interleave(weights, counts)
        loss = (ce * token_weights).sum() / (token_weights.sum() * ce.shape[0])
        return GeneratorLoss(loss, per_scale.detach(), accuracy.detach())

    # ---- generation -------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        context: Float[Tensor, "b nc d"],
        tokenizer: ScaleTokenizer,
        *,
        num_scales: int | None = None,
        context_valid: Bool[Tensor, "b nc"] | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        generator: torch.Generator | int | None = None,
        uniforms: Float[Tensor, "b n"] | None = None,
        use_cache: bool = True,
        decode: bool = False,
        network: TokenNetwork | None = None,
    ) -> GenerationOutput:
        """Sample the first K = ``num_scales`` scales (all by default) given the context.

        One network call for context + SOS, then one per scale; the tokenizer turns the scales
        sampled so far into the next scale's inputs (one scale per step, without re-validating
        the drawn codes, when it is an `IncrementalScaleTokenizer` such as `MultiScaleVQVAE`:
        with such a tokenizer, a `DefaultTransformer`, the cache, no ``context_valid`` and no
        ``decode``, nothing is read back from the device). ``use_cache=False`` reruns the whole
        growing sequence each scale (the reference the cache must match token for token).
        cfg_scale: classifier-free guidance, logits = u + cfg_scale (c - u) with u the logits
            under the null context (1 = off; the batch is doubled otherwise).
        generator / uniforms: a torch.Generator or an int seed (on the context's device), or
            the draws themselves: one uniform per generated token (`generation.scale_draws`).
        decode: also return ``tokenizer.decode(tokens)``.
        network: a per-call `TokenNetwork` (see `forward`); its ``new_cache`` makes the cache.
        F1 samples 4 scales with top_k=900, top_p=0.95, temperature=1, no guidance.
        """
        self._check_context(context, context_valid)
        k_total = self._check_num_scales(num_scales)
        check_sampling(top_k, top_p, temperature)
        if not isinstance(tokenizer, ScaleTokenizer):
            raise TypeError(
                "tokenizer: expected a ScaleTokenizer (scales, teacher_forcing_inputs, decode), "
                f"got {type(tokenizer).__name__}"
            )
        if tuple(tokenizer.scales[: self.num_scales]) != self.scales:
            raise ValueError(
                f"tokenizer scales {tuple(tokenizer.scales)} do not start with the generator's "
                f"scales {self.scales}"
            )
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale: expected >= 0 (1 = no guidance), got {cfg_scale}")
        if isinstance(generator, int):
            generator = torch.Generator(device=context.device).manual_seed(generator)
        sampling = dict(top_k=top_k, top_p=top_p, temperature=temperature)
        counts, b = self.config.token_counts[:k_total], context.shape[0]
        draw = scale_draws(counts, b, generator, uniforms, sampling, context.device)
        was_training = self.training
        self.eval()  # dropout would make the cached and uncached passes differ
        try:
            tokens = sample_scales(
                self,
                self._network(network),
                context,
                tokenizer,
                k_total,
                context_valid,
                cfg_scale,
                use_cache,
                draw,
            )
        finally:
            self.train(was_training)
        return GenerationOutput(tokens, tokenizer.decode(tokens) if decode else None)
