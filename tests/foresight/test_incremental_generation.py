"""Incremental next-scale inputs and host-sync-free generation.

`next_scale_inputs` must equal the matching slice of `teacher_forcing_inputs` bit for bit, so that
generation through it draws exactly the tokens the full recomputation drew; and a cached
`generate` with a `MultiScaleVQVAE` must not read a single tensor value on the host (each such
read is a device -> host sync on a GPU).
"""

import pytest
import torch
from jaxtyping import TypeCheckError
from torch import Tensor

from f1kit.host_reads import HostReadError, host_reads
from foresight import IncrementalScaleTokenizer, MultiScaleVQVAE, ScaleTokenizer
from foresight.scales import check_code_range, check_pyramid
from tests.foresight.generator_helpers import QuantizerTokenizer, tiny_generator
from tests.foresight.helpers import tiny_model

SCALES = (1, 2, 3, 4)
VOCAB, LATENT = 32, 8


class FullRecompute:
    """The VQ-VAE seen through the plain protocol only: generation then rebuilds f_hat from all
    scales each step with ``teacher_forcing_inputs`` (the behaviour before incremental inputs)."""

    def __init__(self, vae: MultiScaleVQVAE) -> None:
        self.vae = vae

    @property
    def scales(self) -> tuple[int, ...]:
        return self.vae.scales

    def teacher_forcing_inputs(self, indices: list[Tensor]) -> Tensor:
        return self.vae.teacher_forcing_inputs(indices)

    def decode(self, indices: list[Tensor]) -> Tensor:
        return self.vae.decode(indices)


def spread_vae(seed: int = 0) -> MultiScaleVQVAE:
    vae = tiny_model(seed, scales=SCALES, vocab_size=VOCAB, latent_dim=LATENT)
    # Spread the codes (the default init is tiny) so that every token moves the inputs visibly.
    with torch.no_grad():
        vae.quantizer.codebook.weight.normal_()
    return vae


def pyramid(batch: int, seed: int, scales=SCALES, vocab: int = VOCAB) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, s * s), generator=g) for s in scales]


# ---- next_scale_inputs == teacher_forcing_inputs, bit for bit --------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_incremental_inputs_equal_the_full_recomputation_bit_for_bit(dtype) -> None:
    vae = spread_vae().to(dtype)
    tokens = pyramid(3, seed=1)
    full = vae.teacher_forcing_inputs(tokens)
    f_hats = vae.running_reconstruction(tokens)
    counts = [s * s for s in SCALES]
    f_hat, offset = None, 0
    for k in range(len(SCALES) - 1):
        f_hat, inputs = vae.next_scale_inputs(f_hat, tokens[k], k)
        assert inputs.shape == (3, counts[k + 1], LATENT)
        assert inputs.dtype == full.dtype == dtype
        assert torch.equal(f_hat, f_hats[k])
        assert torch.equal(inputs, full[:, offset : offset + counts[k + 1]])
        # and the slice generation used to take from the partial pyramid's inputs
        assert torch.equal(inputs, vae.teacher_forcing_inputs(tokens[: k + 1])[:, -counts[k + 1] :])
        offset += counts[k + 1]
    assert offset == full.shape[1]


def test_quantizer_incremental_inputs_with_int32_codes_and_wide_steps() -> None:
    tok = QuantizerTokenizer((1, 3, 4, 7), 16, 4, seed=2)
    q = tok.quantizer
    tokens = [t.int() for t in tok.random_pyramid(2, torch.Generator().manual_seed(3))]
    full, f_hat, got = q.teacher_forcing_inputs(tokens), None, []
    for k in range(3):
        f_hat, inputs = q.next_scale_inputs(f_hat, tokens[k], k, check=False)
        got.append(inputs)
    assert torch.equal(torch.cat(got, dim=1), full)


def test_next_scale_inputs_rejects_bad_steps() -> None:
    vae = spread_vae()
    tokens = pyramid(2, seed=0)
    f_hat, _ = vae.next_scale_inputs(None, tokens[0], 0)
    with pytest.raises(ValueError, match="f_hat: expected None exactly for the first scale"):
        vae.next_scale_inputs(f_hat, tokens[0], 0)
    with pytest.raises(ValueError, match="f_hat: expected None exactly for the first scale"):
        vae.next_scale_inputs(None, tokens[1], 1)
    with pytest.raises(ValueError, match=r"k: expected a scale with a next scale, 0\.\.2"):
        vae.next_scale_inputs(f_hat, tokens[3], 3)  # the last scale has no next scale
    with pytest.raises(ValueError, match="expected 4 tokens"):
        vae.next_scale_inputs(f_hat, tokens[2], 1)
    with pytest.raises(ValueError, match="latent f"):
        vae.next_scale_inputs(f_hat[:, :3], tokens[1], 1)
    # float codes: the jaxtyping hook of the test suite refuses them first, our check otherwise
    with pytest.raises((ValueError, TypeCheckError), match=r"integer tensor|indices"):
        vae.next_scale_inputs(None, tokens[0].float(), 0)


# ---- code range checks: once, at the boundary, skippable --------------------------------------


def test_code_range_is_checked_by_default_and_skipped_on_request() -> None:
    vae = spread_vae()
    tokens = pyramid(2, seed=0)
    bad = [tokens[0], tokens[1].clone().fill_(VOCAB)]
    for call in (vae.teacher_forcing_inputs, vae.running_reconstruction, vae.decode):
        with pytest.raises(ValueError, match=rf"scale 1: expected codes in \[0, {VOCAB}\)"):
            call(bad)
    with pytest.raises(ValueError, match=rf"scale 0: expected codes in \[0, {VOCAB}\)"):
        vae.next_scale_inputs(None, tokens[0] - VOCAB, 0)
    # check=False: the caller vouches for the codes; valid ones give the same result unread
    with host_reads(forbid=True):
        unchecked = vae.teacher_forcing_inputs(tokens, check=False)
        recon = vae.running_reconstruction(tokens, check=False)
        step = vae.next_scale_inputs(None, tokens[0], 0, check=False)
    assert torch.equal(unchecked, vae.teacher_forcing_inputs(tokens))
    assert all(map(torch.equal, recon, vae.running_reconstruction(tokens)))
    assert torch.equal(step[1], unchecked[:, :4])


def test_a_pyramid_check_reads_the_host_once() -> None:
    tokens = pyramid(2, seed=0)
    reads = []
    saved, tolist = torch.Tensor.__dict__.get("tolist"), torch.Tensor.tolist

    def counting(self):
        reads.append(tuple(self.shape))
        return tolist(self)

    torch.Tensor.tolist = counting
    try:
        check_code_range(tokens, VOCAB)
        check_pyramid(tokens, SCALES, VOCAB)
        spread_vae().quantizer.teacher_forcing_inputs(tokens)
    finally:
        if saved is None:
            del torch.Tensor.tolist
        else:
            torch.Tensor.tolist = saved
    assert reads == [(4, 2)] * 3  # one [scales, (min, max)] read per call
    bad = tokens[2].clone()
    bad[1, 3] = -1
    message = r"targets\[2\]: expected codes in \[0, 32\), got range \[-1, "
    with pytest.raises(ValueError, match=message):
        check_pyramid([*tokens[:2], bad], SCALES, VOCAB, "targets")


# ---- generation: same tokens as the full recomputation, no host reads ------------------------


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"top_k": 5, "top_p": 0.9, "temperature": 1.3},
        {"temperature": 0.0},
        {"cfg_scale": 2.5},
    ],
)
def test_generation_draws_the_tokens_of_the_full_recomputation(use_cache, sampling) -> None:
    vae = spread_vae()
    gen = tiny_generator(SCALES, vocab_size=VOCAB, latent_dim=LATENT, cond_drop_prob=0.1)
    ctx = torch.randn(3, 2, 16, dtype=torch.float64)
    reference = FullRecompute(vae)
    assert isinstance(vae, IncrementalScaleTokenizer)
    assert isinstance(reference, ScaleTokenizer)
    assert not isinstance(reference, IncrementalScaleTokenizer)
    for seed in range(3):
        kwargs = dict(generator=seed, use_cache=use_cache, **sampling)
        ours = gen.generate(ctx, vae, **kwargs).tokens
        ref = gen.generate(ctx, reference, **kwargs).tokens
        assert len(ours) == len(ref) == len(SCALES)
        assert all(map(torch.equal, ours, ref)), seed


def test_generation_with_partial_schedules_and_padding_matches_too() -> None:
    vae = spread_vae(seed=4)
    gen = tiny_generator((1, 2, 3), vocab_size=VOCAB, latent_dim=LATENT)
    ctx = torch.randn(2, 3, 16, dtype=torch.float64)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    for num_scales in (1, 2, 3):
        kwargs = dict(generator=7, num_scales=num_scales, context_valid=valid, top_k=8)
        ours = gen.generate(ctx, vae, **kwargs).tokens
        ref = gen.generate(ctx, FullRecompute(vae), **kwargs).tokens
        assert len(ours) == num_scales
        assert all(map(torch.equal, ours, ref))


def test_cached_generation_reads_nothing_back_from_the_device() -> None:
    vae = spread_vae()
    gen = tiny_generator(SCALES, vocab_size=VOCAB, latent_dim=LATENT)
    ctx = torch.randn(2, 3, 16, dtype=torch.float64)
    # first call of all (cold: nothing cached by an earlier call may hide a read)
    with host_reads(forbid=True):  # any read raises
        tokens = gen.generate(ctx, vae, generator=0, top_k=8, top_p=0.9).tokens
    expected = gen.generate(ctx, vae, generator=0, top_k=8, top_p=0.9).tokens
    assert all(map(torch.equal, tokens, expected))
    # the guard works: the full recomputation validates the codes on the host every scale
    with pytest.raises(HostReadError), host_reads(forbid=True):
        gen.generate(ctx, FullRecompute(vae), generator=0)
    assert torch.tensor(3).item() == 3  # and the patched methods are restored after the block
    assert bool(torch.tensor(True)) and int(torch.tensor(2)) == 2
