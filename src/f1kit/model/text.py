"""Instruction text -> the Understanding expert's text prefix tokens (DESIGN.md s1).

A tokenizer turns a batch of strings into ``TokenizedText`` (ids and a validity mask), always
exactly ``max_length`` wide: a fixed prefix length keeps the UGA attention layout static, so masks,
KV caches and compiled graphs are built once. Every text keeps at least its end-of-text token,
so no sample ever has an empty instruction block. `TextEmbedding` maps ids to the U expert's width.

* `ByteTokenizer`: UTF-8 bytes, no files needed (the default for small runs).
* `HFTokenizer`: a transformers tokenizer from a LOCAL directory (e.g. PaliGemma's Gemma tokenizer);
  needs the optional ``transformers`` (``pip install 'f1kit[hf]'``).

Example:
    >>> tok = build_text_tokenizer("bytes", max_length=16)
    >>> text = tok(["open the drawer"])
    >>> TextEmbedding(tok.vocab_size, 256)(text.ids).shape
    torch.Size([1, 16, 256])
"""

import inspect
import logging
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

log = logging.getLogger(__name__)

PAD_ID = 0
END_ID = 1
BYTE_OFFSET = 2  # byte value x has id x + 2 (ids 0 and 1 are pad and end-of-text)


@dataclass(frozen=True)
class TokenizedText:
    """A batch of tokenized texts: ids [b, n] (int64) and valid [b, n] (False on padding).

    Valid tokens form a prefix of each row; padding ids sit exactly where valid is False.
    """

    ids: Int[Tensor, "b n"]
    valid: Bool[Tensor, "b n"]

    def to(self, device: torch.device | str) -> "TokenizedText":
        return TokenizedText(self.ids.to(device), self.valid.to(device))


@runtime_checkable
class TextTokenizer(Protocol):
    """What the model needs from a tokenizer (both tokenizers here satisfy it)."""

    vocab_size: int
    max_length: int

    def __call__(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> TokenizedText: ...

    def decode(self, ids: Int[Tensor, "b n"]) -> list[str]: ...


def check_texts(texts: object, key: str = "texts") -> list[str]:
    """``texts`` as a list of valid UTF-8 str, or an error naming ``key`` (and the item)."""
    # A bare str is a Sequence[str] too: it would silently become one text per character.
    if isinstance(texts, str):
        raise TypeError(f"{key}: expected a sequence of str, got a single str (wrap it in a list)")
    if not isinstance(texts, Sequence):
        raise TypeError(f"{key}: expected a sequence of str, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"{key}[{i}]: expected str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate such as "\ud800"
            raise ValueError(f"{key}[{i}]: not valid UTF-8 ({err.reason} at {err.start})") from err
    return out


def _check_max_length(max_length: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(
            f"max_length: expected an int >= 2 (one token and the end), got {max_length!r}"
        )


def _pack(
    rows: list[list[int]], max_length: int, pad_id: int, device: torch.device | str | None
) -> TokenizedText:
    """Right-pads every row to ``max_length`` (rows are already at most that long)."""
    ids = torch.full((len(rows), max_length), pad_id, dtype=torch.int64)
    valid = torch.zeros((len(rows), max_length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        valid[i, : len(row)] = True
    return TokenizedText(ids.to(device), valid.to(device))


class ByteTokenizer:
    """UTF-8 bytes as tokens: id = byte + 2, 0 = padding, 1 = end-of-text; vocab_size 258.

    ``tok(texts)`` -> `TokenizedText` [b, max_length]: each text's bytes, then the end token, then
    padding. Longer texts keep their first bytes, cut back to a whole UTF-8 character, so
    ``decode`` always returns a prefix of the input (a logged warning once per distinct length).
    """

    vocab_size = 256 + BYTE_OFFSET

    def __init__(self, max_length: int = 32) -> None:
        _check_max_length(max_length)
        self.max_length = max_length
        self._warned: set[int] = set()

    def _encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        room = self.max_length - 1  # the end token always stays
        if len(data) > room:
            if len(data) not in self._warned:
                self._warned.add(len(data))
                log.warning(
                    "text of %d bytes truncated to max_length %d: %r...",
                    len(data),
                    self.max_length,
                    text[:40],
                )
            cut = room
            # 0b10xxxxxx is a continuation byte: the character straddles the cut, drop it whole
            while cut > 0 and data[cut] & 0xC0 == 0x80:
                cut -= 1
            data = data[:cut]
        return [byte + BYTE_OFFSET for byte in data] + [END_ID]

    def __call__(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> TokenizedText:
        rows = [self._encode(text) for text in check_texts(texts)]
        return _pack(rows, self.max_length, PAD_ID, device)

    def decode(self, ids: Int[Tensor, "b n"]) -> list[str]:
        """Texts up to each row's first end or pad id (invalid UTF-8 from a model -> U+FFFD)."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"ids: expected values in [0, {self.vocab_size}), "
                f"got [{int(ids.min())}, {int(ids.max())}]"
            )
        texts = []
        for row in ids.tolist():
            data = bytearray()
            for i in row:
                if i < BYTE_OFFSET:
                    break
                data.append(i - BYTE_OFFSET)
            texts.append(data.decode("utf-8", errors="replace"))
        return texts


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError("HF tokenizers need transformers: pip install 'f1kit[hf]'") from error
    return transformers


class HFTokenizer:
    """A transformers tokenizer loaded from a LOCAL directory, with the `ByteTokenizer` contract.

    ``tok(texts)`` -> `TokenizedText` [b, max_length]: the tokenizer's ids with its own special
    tokens (e.g. Gemma's BOS), then its eos token when ``append_eos`` (PaliGemma / pi0 prompts
    end with "\\n" instead: pass such texts with ``append_eos=False``), then padding with its pad
    id (eos when it has none; padding is masked anyway). Longer texts keep their first tokens and
    the eos. ``vocab_size`` is ``len(tokenizer)`` (added tokens included).
    """

    def __init__(self, path: str | Path, max_length: int = 32, append_eos: bool = True) -> None:
        _check_max_length(max_length)
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer path: no local directory at {path}")
        self.tokenizer = _transformers().AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.eos_id: int | None = self.tokenizer.eos_token_id
        if append_eos and self.eos_id is None:
            raise ValueError(f"append_eos: the tokenizer at {path} has no eos token")
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else (self.eos_id or 0)
        self.append_eos = append_eos
        self.max_length = max_length
        self.vocab_size = len(self.tokenizer)
        self._warned: set[int] = set()

    def _fit(self, row: list[int], index: int) -> list[int]:
        if self.append_eos and (not row or row[-1] != self.eos_id):
            row = [*row, self.eos_id]
        if not row:
            raise ValueError(f"texts[{index}]: encodes to no tokens and append_eos is off")
        if len(row) > self.max_length:
            if len(row) not in self._warned:
                self._warned.add(len(row))
                log.warning("text of %d tokens truncated to %d", len(row), self.max_length)
            row = (
                row[: self.max_length - 1] + row[-1:] if self.append_eos else row[: self.max_length]
            )
        return row

    def __call__(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> TokenizedText:
        texts = check_texts(texts)
        encoded = self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
        rows = [self._fit(list(row), i) for i, row in enumerate(encoded)]
        return _pack(rows, self.max_length, self.pad_id, device)

    def decode(self, ids: Int[Tensor, "b n"]) -> list[str]:
        """Texts up to each row's first eos, special tokens dropped."""
        rows = []
        for row in ids.tolist():
            if self.eos_id is not None and self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            rows.append(row)
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)


class TextEmbedding(nn.Module):
    """Token embedding scaled by sqrt(width): ids [b, n] -> [b, n, width].

    Gemma's convention (and so PaliGemma's / pi0's / F1's): the looked-up embedding is multiplied
    by sqrt(width), the normaliser rounded to the activation dtype first (sqrt(2048) is 45.25 in
    bf16), which is what makes imported Gemma embeddings reproduce. Weights start N(0, 1 / width)
    so the scaled output starts at unit scale.
    """

    def __init__(self, vocab_size: int, width: int) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.width = width
        self.embed = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embed.weight, std=width**-0.5)

    def forward(self, ids: Int[Tensor, "b n"]) -> Float[Tensor, "b n d"]:
        x = self.embed(ids)
        # A Python scalar, not a device tensor built per call (a host-to-device copy, which
        # synchronises the stream): the same product, since the scalar is exact in x's dtype.
        return x * rounded_to(math.sqrt(self.width), x.dtype)


def rounded_to(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to nearest-even in ``dtype`` (float64/32/16, bfloat16) as
    ``torch.tensor(value, dtype=dtype)`` rounds it (through float32), in Python."""
    if dtype == torch.float64:
        return value
    try:
        value = struct.unpack("<f", struct.pack("<f", value))[0]  # torch rounds via float32 too
        if dtype == torch.float16:
            value = struct.unpack("<e", struct.pack("<e", value))[0]
    except OverflowError:  # past the dtype's largest finite value: torch gives inf
        return math.copysign(math.inf, value)
    if dtype in (torch.float32, torch.float16):
        return value
    if dtype == torch.bfloat16:  # the top 16 bits of the float32, rounded to nearest even
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]
    raise ValueError(f"dtype: expected a float dtype of 16 to 64 bits, got {dtype}")


TEXT_TOKENIZERS: dict[str, Callable[..., TextTokenizer]] = {
    "bytes": ByteTokenizer,
    "hf": HFTokenizer,
}


def build_text_tokenizer(name: str, **args: Any) -> TextTokenizer:
    """The registered tokenizer ``name``: ``"bytes"`` (max_length) or ``"hf"`` (path, ...)."""
    if name not in TEXT_TOKENIZERS:
        raise ValueError(
            f"text tokenizer: unknown name {name!r}; registered: {sorted(TEXT_TOKENIZERS)}"
        )
    params = inspect.signature(TEXT_TOKENIZERS[name]).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ValueError(f"{name}: unknown args {unknown}; expected {sorted(params)}")
    missing = sorted(k for k, p in params.items() if p.default is p.empty and k not in args)
    if missing:
        raise ValueError(f"{name}: missing args {missing}")
    return TEXT_TOKENIZERS[name](**args)
