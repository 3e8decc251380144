"""The Understanding expert's input: camera tokens then instruction tokens (DESIGN.md s2, row 1).

The vision encoder (registered name: ``vit`` by default, ``siglip`` from a local checkpoint) turns
every camera into tokens projected to U's width; the text tokenizer (``bytes`` by default, needs
no files; ``hf`` from a local path) gives a fixed number of ids per instruction, embedded by a
table scaled by sqrt(width) as Gemma does. Together they form one bidirectional prefix block;
padded instruction positions are marked invalid and neither attend nor are attended to.
"""

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Shaped
from torch import Tensor, nn

from f1kit.model.config import Component
from f1kit.model.text import TextEmbedding, TokenizedText, build_text_tokenizer
from f1kit.model.vision import build_vision_encoder


class Understanding(nn.Module):
    """Images [b, v, 3, H, W] + instructions -> prefix tokens [b, n_u, d_u] and their validity."""

    def __init__(
        self, vision: Component, text: Component, width: int, text_vocab: int | None = None
    ) -> None:
        super().__init__()
        self.vision = build_vision_encoder(vision.name, width, **vision.args)
        self._text_spec = text
        self._tokenizer: Any = None
        # An HF tokenizer reads its files when built; a given text_vocab lets the model be built
        # without them (e.g. on the meta device) and the tokenizer is checked at first use.
        vocab = text_vocab if text_vocab is not None else self.tokenizer.vocab_size
        self.text_embedding = TextEmbedding(vocab, width)
        self.text_tokens = int(text.args.get("max_length", 32))

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer, built on first use (an HF one reads its files only then)."""
        if self._tokenizer is None:
            self._tokenizer = build_text_tokenizer(self._text_spec.name, **self._text_spec.args)
            rows = getattr(self, "text_embedding", None)
            if rows is not None and self._tokenizer.vocab_size > rows.embed.num_embeddings:
                raise ValueError(
                    f"text tokenizer: {self._tokenizer.vocab_size} ids exceed the embedding's "
                    f"{rows.embed.num_embeddings} rows (text_vocab)"
                )
        return self._tokenizer

    @property
    def image_tokens(self) -> int:
        return self.vision.tokens_per_image

    def tokens(self, cameras: int) -> int:
        """Prefix length for ``cameras`` cameras: image tokens, then the instruction's."""
        return cameras * self.image_tokens + self.text_tokens

    def encode_text(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> TokenizedText:
        """The instructions' token ids and validity [b, text_tokens]: what `forward` embeds.

        A caller that keeps this (e.g. `F1Policy` while the instruction is unchanged) passes it
        to `forward` in place of the strings and the tokenizer does not run again.
        """
        return self.tokenizer(list(texts), device)

    def forward(
        self,
        images: Shaped[Tensor, "b v 3 H W"],
        texts: Sequence[str] | TokenizedText,
    ) -> tuple[Float[Tensor, "b n d"], Bool[Tensor, "b n"]]:
        """texts: the b instructions, or their `encode_text` encoding."""
        rows = texts.ids.shape[0] if isinstance(texts, TokenizedText) else len(texts)
        if rows != images.shape[0]:
            raise ValueError(
                f"texts: expected one instruction per image batch row ({images.shape[0]}), "
                f"got {rows}"
            )
        vision = self.vision(images)
        text = texts if isinstance(texts, TokenizedText) else self.encode_text(texts)
        if text.ids.shape[1] != self.text_tokens:
            raise ValueError(
                f"texts: expected {self.text_tokens} tokens per instruction, got "
                f"{text.ids.shape[1]}"
            )
        device = vision.device
        words = self.text_embedding(text.ids.to(device)).to(vision.dtype)
        tokens = torch.cat([vision, words], dim=1)
        valid = torch.cat(
            [
                torch.ones(vision.shape[:2], dtype=torch.bool, device=device),
                text.valid.to(device),
            ],
            dim=1,
        )
        return tokens, valid
