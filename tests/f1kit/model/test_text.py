"""Text tokenizers (bytes, local HF) and the Gemma-scaled text embedding."""

import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from f1kit.model.text import (
    END_ID,
    PAD_ID,
    TEXT_TOKENIZERS,
    ByteTokenizer,
    HFTokenizer,
    TextEmbedding,
    TokenizedText,
    build_text_tokenizer,
    check_texts,
    rounded_to,
)

SENTENCES = ["pick up the red block", "open the drawer", "push the blue button", "close it"]


def check_layout(out: TokenizedText, max_length: int, pad_id: int) -> list[int]:
    """Fixed width, valid is a prefix, padding ids exactly where invalid; returns valid counts."""
    assert out.ids.dtype == torch.int64 and out.valid.dtype == torch.bool
    assert out.ids.shape[1] == max_length and out.valid.shape == out.ids.shape
    counts = out.valid.sum(1).tolist()
    positions = torch.arange(max_length)
    for row, count in enumerate(counts):
        assert torch.equal(out.valid[row], positions < count)
        assert (out.ids[row, count:] == pad_id).all()
    return counts


# ---------------------------------------------------------------- bytes


@given(st.integers(2, 40), st.data())
def test_bytes_round_trip_for_texts_that_fit(max_length: int, data: st.DataObject) -> None:
    tok = ByteTokenizer(max_length)
    texts = data.draw(
        st.lists(
            st.text(max_size=max_length).filter(lambda s: len(s.encode()) < max_length),
            max_size=4,
        )
    )
    out = tok(texts)
    counts = check_layout(out, max_length, PAD_ID)
    assert tok.decode(out.ids) == texts
    assert counts == [len(s.encode()) + 1 for s in texts]
    for row, count in zip(out.ids, counts, strict=True):
        assert row[count - 1] == END_ID and (row[: count - 1] >= 2).all()


@given(st.integers(2, 24), st.lists(st.text(max_size=40), max_size=4))
def test_bytes_truncate_to_the_longest_whole_character_prefix(max_length: int, texts) -> None:
    tok = ByteTokenizer(max_length)
    out = tok(texts)
    counts = check_layout(out, max_length, PAD_ID)
    for text, decoded, count in zip(texts, tok.decode(out.ids), counts, strict=True):
        size = len(text.encode())
        assert text.startswith(decoded)
        assert count == len(decoded.encode()) + 1 >= 1
        if size < max_length:
            assert decoded == text
        else:  # the next character would not have fit beside the end token
            assert len(text[: len(decoded) + 1].encode()) > max_length - 1
            assert count > max_length - 4  # a UTF-8 character is at most 4 bytes
        if text.isascii():
            assert count == min(size + 1, max_length)


def test_bytes_examples() -> None:
    tok = ByteTokenizer(max_length=6)
    out = tok(["ab", "", "abcdefgh", "éééé"])
    assert out.ids.tolist() == [
        [ord("a") + 2, ord("b") + 2, END_ID, 0, 0, 0],
        [END_ID, 0, 0, 0, 0, 0],
        [ord(c) + 2 for c in "abcde"] + [END_ID],
        [0xC3 + 2, 0xA9 + 2, 0xC3 + 2, 0xA9 + 2, END_ID, 0],  # "é" = C3 A9, not cut in half
    ]
    assert tok.decode(out.ids) == ["ab", "", "abcde", "éé"]
    assert tok.vocab_size == 258


def test_bytes_warn_once_per_distinct_length(caplog: pytest.LogCaptureFixture) -> None:
    tok = ByteTokenizer(max_length=4)
    with caplog.at_level(logging.WARNING, logger="f1kit.model.text"):
        tok(["abcdef", "ghijkl", "abc"])
        tok(["mnopqr"])
        assert len(caplog.records) == 1 and "6 bytes" in caplog.records[0].getMessage()
        tok(["abcdefg"])
    assert len(caplog.records) == 2 and "7 bytes" in caplog.records[1].getMessage()


def test_bytes_decode_of_model_samples() -> None:
    tok = ByteTokenizer(max_length=4)
    # a sampled lone continuation byte is invalid UTF-8: replaced, not raised
    assert tok.decode(torch.tensor([[0x80 + 2, ord("a") + 2, END_ID, 7]])) == ["\ufffda"]
    with pytest.raises(ValueError, match="ids"):
        tok.decode(torch.tensor([[258, 1]]))


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ("open", "single str"),
        (["ok", b"bytes"], r"texts\[1\]: expected str, got bytes"),
        (3, "int"),
    ],
)
def test_bytes_reject_non_str_input(texts, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        check_texts(texts)
    # the public path; the test-suite's type checker may name the parameter first
    with pytest.raises(TypeError, match=f"texts|{match}"):
        ByteTokenizer()(texts)


def test_bytes_validate_max_length_and_place_on_device() -> None:
    with pytest.raises((ValueError, TypeError), match="max_length"):
        ByteTokenizer(max_length=1)
    out = ByteTokenizer(4)(["a"], device="meta")
    assert out.ids.device.type == out.valid.device.type == "meta"
    moved = ByteTokenizer(4)(["a"]).to("meta")
    assert moved.ids.device.type == moved.valid.device.type == "meta"


# ---------------------------------------------------------------- HF


def make_hf_tokenizer(root: Path, eos: bool = True) -> Path:
    """A tiny word-level tokenizer trained on SENTENCES, saved like a hub folder (no download)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    tok.train_from_iterator(SENTENCES, tokenizers.trainers.WordLevelTrainer(special_tokens=special))
    # Gemma-like: the tokenizer itself adds a BOS to every text
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", tok.token_to_id("[BOS]"))]
    )
    names = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]"}
    if eos:
        names["eos_token"] = "[EOS]"
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(root)
    return root


def test_hf_round_trip_and_layout(tmp_path: Path) -> None:
    tok = HFTokenizer(make_hf_tokenizer(tmp_path / "tok"), max_length=8)
    hf = tok.tokenizer
    assert tok.vocab_size == len(hf) == 4 + len({w for s in SENTENCES for w in s.split()})
    out = tok([*SENTENCES, ""])
    counts = check_layout(out, 8, hf.pad_token_id)
    assert counts == [len(s.split()) + 2 for s in SENTENCES] + [2]  # BOS ... EOS
    assert (out.ids[:, 0] == hf.bos_token_id).all()
    assert [row[c - 1] for row, c in zip(out.ids.tolist(), counts, strict=True)] == [
        hf.eos_token_id
    ] * 5
    assert tok.decode(out.ids) == [*SENTENCES, ""]


def test_hf_truncation_keeps_bos_and_eos(tmp_path: Path, caplog) -> None:
    tok = HFTokenizer(make_hf_tokenizer(tmp_path / "tok"), max_length=4)
    with caplog.at_level(logging.WARNING, logger="f1kit.model.text"):
        out = tok(["pick up the red block", "open the drawer"])
    assert out.valid.all()
    assert tok.decode(out.ids) == ["pick up", "open the"]
    assert out.ids[:, -1].tolist() == [tok.eos_id] * 2
    assert [r.getMessage() for r in caplog.records] == [
        "text of 7 tokens truncated to 4",
        "text of 5 tokens truncated to 4",
    ]


def test_hf_without_eos(tmp_path: Path) -> None:
    path = make_hf_tokenizer(tmp_path / "tok", eos=False)
    with pytest.raises(ValueError, match="eos"):
        HFTokenizer(path)
    tok = HFTokenizer(path, max_length=5, append_eos=False)
    out = tok(["open the drawer", "pick up the red block"])
    assert out.valid.sum(1).tolist() == [4, 5]
    assert tok.decode(out.ids) == ["open the drawer", "pick up the red"]


def test_hf_missing_path_and_missing_transformers(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        HFTokenizer(tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"f1kit\[hf\]"):
        HFTokenizer(tmp_path)


# ---------------------------------------------------------------- embedding


def test_text_embedding_is_gemma_scaled() -> None:
    torch.manual_seed(0)
    emb = TextEmbedding(258, 64)
    ids = ByteTokenizer(16)(["open the drawer"]).ids
    out = emb(ids)
    torch.testing.assert_close(out, emb.embed.weight[ids] * 8.0)
    # N(0, 1/width) weights: the scaled output starts at unit scale
    everything = emb(torch.arange(258)[None])
    assert 0.9 < everything.std().item() < 1.1


def test_text_embedding_rounds_the_normaliser_to_the_dtype() -> None:
    emb = TextEmbedding(3, 2048).to(torch.bfloat16)
    ids = torch.tensor([[0, 1, 2]])
    out = emb(ids)
    rows = emb.embed.weight[ids]
    assert torch.equal(out, rows * 45.25)  # sqrt(2048) = 45.2548... is 45.25 in bf16
    exact = (rows.float() * math.sqrt(2048)).to(torch.bfloat16)
    assert not torch.equal(out, exact)  # counter-case: the unrounded factor differs


@pytest.mark.parametrize(("field", "value"), [("vocab_size", 0), ("width", -2)])
def test_text_embedding_validates(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        TextEmbedding(**{"vocab_size": 8, "width": 8, field: value})


# ---------------------------------------------------------------- registry


def test_registry_builds_each_name(tmp_path: Path) -> None:
    assert set(TEXT_TOKENIZERS) == {"bytes", "hf"}
    assert build_text_tokenizer("bytes", max_length=9).max_length == 9
    hf = build_text_tokenizer("hf", path=make_hf_tokenizer(tmp_path / "tok"), max_length=6)
    assert isinstance(hf, HFTokenizer) and hf(["close it"]).ids.shape == (1, 6)


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [
        ("sentencepiece", {}, r"unknown name 'sentencepiece'.*\['bytes', 'hf'\]"),
        ("bytes", {"max_len": 8}, "max_len"),
        ("bytes", {"max_length": 0}, "max_length"),
        ("hf", {"max_length": 8}, r"missing args \['path'\]"),
    ],
)
def test_registry_errors_are_named(name: str, args: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_text_tokenizer(name, **args)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_rounded_to_matches_torch_rounding(dtype):
    """The embedding's Python normaliser equals the dtype tensor it replaced (no H2D copy)."""
    g = torch.Generator().manual_seed(0)
    values = [math.sqrt(w) for w in (16, 960, 1024, 2048, 3072)]
    values += (torch.rand(4000, generator=g, dtype=torch.float64) * 200 - 100).tolist()
    for value in values:
        assert rounded_to(value, dtype) == torch.tensor(value, dtype=dtype).item(), value
    for value in (1e39, -1e300, 65520.0, math.inf, -math.inf):  # overflow: inf, as torch
        assert rounded_to(value, dtype) == torch.tensor(value, dtype=dtype).item(), value
    assert math.isnan(rounded_to(math.nan, dtype))
    with pytest.raises(ValueError, match="float dtype"):
        rounded_to(1.0, torch.int32)
