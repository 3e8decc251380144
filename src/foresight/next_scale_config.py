"""`NextScaleConfig`: the sizes of a `NextScaleGenerator` (DESIGN.md s3)."""

from dataclasses import dataclass

from foresight.scales import check_generator_scales


@dataclass(frozen=True)
class NextScaleConfig:
    """Sizes of the generator.

    scales: side lengths of the token pyramid, scales[0] == 1 (the SOS scale), increasing.
    vocab_size, latent_dim: the tokenizer's codebook size and latent width.
    width: the network's token width d (context tokens come in at this width).
    cond_drop_prob: per-sample probability, in training, of replacing the context with the
        learned null context (what classifier-free guidance samples against).
    """

    scales: tuple[int, ...]
    vocab_size: int
    latent_dim: int
    width: int
    cond_drop_prob: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(self.scales))
        check_generator_scales(self.scales)
        for name in ("vocab_size", "latent_dim", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size: expected >= 2, got {self.vocab_size}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob: expected 0 <= p < 1, got {self.cond_drop_prob}")

    @property
    def token_counts(self) -> tuple[int, ...]:
        """Tokens per scale, s_k^2."""
        return tuple(s * s for s in self.scales)
