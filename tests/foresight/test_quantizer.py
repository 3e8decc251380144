"""The multi-scale residual quantizer against a plain re-statement of VAR's Algorithm 1."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from foresight import MultiScaleQuantizer, phi_index


def make_quantizer(scales=(1, 2, 3, 5), vocab=16, dim=4, phi_count=2, seed=0):
    torch.manual_seed(seed)
    q = MultiScaleQuantizer(vocab_size=vocab, dim=dim, scales=scales, phi_count=phi_count)
    # Codes of the latent's magnitude, so that every scale picks informative codes.
    torch.nn.init.normal_(q.codebook.weight)
    return q


def reference_quantize(q: MultiScaleQuantizer, f: torch.Tensor):
    """Algorithm 1 written out with cdist and explicit per-position loops over the batch."""
    b, c, size, _ = f.shape
    codes = q.codebook.weight.detach()
    rest, f_hat = f.clone(), torch.zeros_like(f)
    indices, f_hats = [], []
    for k, s in enumerate(q.scales):
        down = rest if s == size else F.adaptive_avg_pool2d(rest, s)
        z = down.permute(0, 2, 3, 1).reshape(-1, c)
        idx = torch.cdist(z, codes).argmin(1)
        emb = codes[idx].reshape(b, s, s, c).permute(0, 3, 1, 2)
        if s != size:
            emb = F.interpolate(emb, size=(size, size), mode="bicubic", align_corners=False)
        conv = q.phi.convs[phi_index(k, len(q.scales), len(q.phi.convs))]
        h = 0.5 * emb + 0.5 * conv(emb)
        f_hat, rest = f_hat + h, rest - h
        indices.append(idx.reshape(b, s * s))
        f_hats.append(f_hat)
    return indices, f_hats


@torch.no_grad()
def test_matches_reference_algorithm():
    q = make_quantizer()
    f = torch.randn(3, 4, 5, 5)
    ref_idx, ref_fhat = reference_quantize(q, f)
    idx = q.tokenize(f)
    assert [t.shape for t in idx] == [(3, 1), (3, 4), (3, 9), (3, 25)]
    for ours, ref in zip(idx, ref_idx, strict=True):
        assert torch.equal(ours, ref)
    for ours, ref in zip(q.running_reconstruction(idx), ref_fhat, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_reference_detects_a_wrong_phi_choice():
    # Counter-case: the comparison above is sensitive to which phi conv each scale uses.
    q = make_quantizer()
    f = torch.randn(3, 4, 5, 5)
    before = q.running_reconstruction_of_latent(f)[-1]
    q.phi.convs[0], q.phi.convs[1] = q.phi.convs[1], q.phi.convs[0]
    assert not torch.allclose(q.running_reconstruction_of_latent(f)[-1], before, atol=1e-3)


@torch.no_grad()
def test_tokens_reproduce_the_running_reconstruction_exactly():
    q = make_quantizer()
    f = torch.randn(2, 4, 5, 5)
    from_latent = q.running_reconstruction_of_latent(f)
    from_tokens = q.running_reconstruction(q.tokenize(f))
    for a, b in zip(from_latent, from_tokens, strict=True):
        assert torch.equal(a, b)


@torch.no_grad()
def test_latent_error_shrinks_with_scales_for_a_pure_residual_quantizer():
    # With phi ~ identity and codes of the data's scale, each scale removes error from what the
    # earlier ones left (fixed seed; the trained-model version is in test_tokenizer_training).
    q = make_quantizer(scales=(1, 2, 4), vocab=64)
    q.phi.ratio = 1e-6  # phi ~ identity: a pure residual quantizer
    f = torch.randn(8, 4, 4, 4) * 0.3 + torch.randn(1, 4, 1, 1)
    errors = [float(((fh - f) ** 2).mean()) for fh in q.running_reconstruction_of_latent(f)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.5 * errors[0]


def test_training_pass_loss_and_straight_through():
    q = make_quantizer()
    f = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = q(f)
    f_hats = q.running_reconstruction(out.indices)
    # VAR's loss: mean over scales of beta * MSE(sg(f_hat), f) + MSE(f_hat, sg(f)).
    expected = sum(1.25 * F.mse_loss(fh, f.detach()) for fh in f_hats) / len(f_hats)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.f_hat, f_hats[-1], atol=1e-6, rtol=0)
    # Straight-through: the decoder's gradient reaches f unchanged, and not the codebook.
    w = torch.randn_like(f)
    (out.f_hat * w).sum().backward()
    torch.testing.assert_close(f.grad, w)
    assert q.codebook.weight.grad is None
    # The VQ loss trains the codebook and pulls f towards f_hat (commitment, weight beta).
    f.grad = None
    q(f).loss.backward()
    assert q.codebook.weight.grad.abs().sum() > 0
    assert q.phi.convs[0].weight.grad.abs().sum() > 0
    assert f.grad.abs().sum() > 0


def test_code_hits_and_ema_schedule():
    q = make_quantizer().train()
    f = torch.randn(2, 4, 5, 5)
    out = q(f)
    assert out.hits.shape == (4, 16)
    assert out.hits.sum(1).tolist() == [2.0 * s * s for s in q.scales]
    assert torch.equal(q.ema_hits, out.hits)  # first update copies
    second = q(f * 0.5)
    torch.testing.assert_close(q.ema_hits, 0.9 * out.hits + 0.1 * second.hits)
    q.eval()
    q(f * 2)  # no bookkeeping outside training
    torch.testing.assert_close(q.ema_hits, 0.9 * out.hits + 0.1 * second.hits)


def test_dead_code_restart_is_seeded_and_targets_unused_codes():
    def run(seed):
        q = make_quantizer(vocab=64).train()
        q(torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1)))
        dead = q.ema_hits.sum(0) < 0.5
        before = q.codebook.weight.detach().clone()
        n = q.restart_dead_codes(0.5, torch.Generator().manual_seed(seed))
        return q, dead, before, n

    q, dead, before, n = run(0)
    assert n == int(dead.sum()) > 0
    after = q.codebook.weight.detach()
    assert torch.equal(after[~dead], before[~dead])
    assert not torch.equal(after[dead], before[dead])
    # New codes are residual vectors the quantizer saw.
    seen = q._residuals
    assert (after[dead][:, None] == seen[None]).all(-1).any(1).all()
    assert torch.equal(run(0)[0].codebook.weight, after)
    assert not torch.equal(run(1)[0].codebook.weight, after)
    assert q.restart_dead_codes(0.0, torch.Generator()) == 0


@given(
    data=st.data(),
    size=st.integers(1, 7),
    batch=st.integers(1, 3),
    dim=st.integers(1, 5),
)
def test_shapes_and_teacher_forcing_over_random_schedules(data, size, batch, dim):
    inner = data.draw(st.sets(st.integers(1, max(1, size - 1)), max_size=size - 1))
    scales = (*sorted(s for s in inner if s < size), size)
    count = data.draw(st.integers(1, len(scales)))
    q = MultiScaleQuantizer(vocab_size=8, dim=dim, scales=scales, phi_count=count)
    torch.nn.init.normal_(q.codebook.weight)
    f = torch.randn(batch, dim, size, size)
    idx = q.tokenize(f)
    assert [tuple(t.shape) for t in idx] == [(batch, s * s) for s in scales]
    assert all(int(t.min()) >= 0 and int(t.max()) < 8 for t in idx)
    f_hats = q.running_reconstruction(idx)
    if len(scales) == 1:
        with pytest.raises(ValueError, match="single-scale"):
            q.teacher_forcing_inputs(idx)
        return
    tf = q.teacher_forcing_inputs(idx)
    assert tf.shape == (batch, sum(s * s for s in scales[1:]), dim)
    # Block k is f_hat after scales 1..k, area-pooled to s_{k+1}, flattened row-major.
    start = 0
    for k, s in enumerate(scales[1:]):
        pooled = F.adaptive_avg_pool2d(f_hats[k], s).permute(0, 2, 3, 1).reshape(batch, s * s, dim)
        torch.testing.assert_close(tf[:, start : start + s * s], pooled)
        start += s * s
    # The last block is the full-size f_hat after K-1 scales, untouched by pooling.
    torch.testing.assert_close(tf[:, -size * size :], f_hats[-2].flatten(2).transpose(1, 2))
    # A partial pyramid gives exactly the leading blocks.
    m = data.draw(st.integers(1, len(scales)))
    n = sum(s * s for s in scales[1 : m + 1])
    assert torch.equal(q.teacher_forcing_inputs(idx[:m]), tf[:, :n])


@torch.no_grad()
def test_teacher_forcing_is_causal_over_scales():
    q = make_quantizer(scales=(1, 2, 3, 4, 5))
    idx = q.tokenize(torch.randn(2, 4, 5, 5))
    tf = q.teacher_forcing_inputs(idx)
    bounds = [0, 4, 13, 29, 54]  # block k (inputs of scale k+2) spans bounds[k]:bounds[k+1]
    for j in range(4):  # changing the tokens of scale j + 1 ...
        changed = [t.clone() for t in idx]
        changed[j] = (changed[j] + 1) % 16
        tf2 = q.teacher_forcing_inputs(changed)
        # ... leaves the inputs of scales <= j + 1 bit-identical and changes scale j + 2's.
        assert torch.equal(tf2[:, : bounds[j]], tf[:, : bounds[j]])
        assert not torch.allclose(
            tf2[:, bounds[j] : bounds[j + 1]], tf[:, bounds[j] : bounds[j + 1]]
        )


def test_kmeans_init_fits_the_residuals_and_is_seeded():
    torch.manual_seed(0)
    f = torch.randn(8, 4, 5, 5) * 0.5 + torch.randn(8, 4, 1, 1)

    def error(q):
        return float(((q.running_reconstruction_of_latent(f)[-1] - f) ** 2).mean())

    def fitted(seed):
        torch.manual_seed(0)
        q = MultiScaleQuantizer(vocab_size=32, dim=4, scales=(1, 2, 3, 5), phi_count=2)
        q.init_codebook_kmeans(f, torch.Generator().manual_seed(seed), rounds=2)
        return q

    torch.manual_seed(0)
    q = MultiScaleQuantizer(vocab_size=32, dim=4, scales=(1, 2, 3, 5), phi_count=2)
    after = error(fitted(0))
    assert after < 0.5 * error(q), (error(q), after)  # against the default (tiny uniform) init
    assert after < error(make_quantizer(vocab=32))  # and against codes drawn from N(0, 1)
    assert torch.equal(fitted(0).codebook.weight, fitted(0).codebook.weight)
    assert not torch.equal(fitted(0).codebook.weight, fitted(1).codebook.weight)
    with pytest.raises(ValueError, match="rounds"):
        q.init_codebook_kmeans(f, torch.Generator(), rounds=0)


def test_bad_inputs_are_named():
    q = make_quantizer()
    with pytest.raises(ValueError, match="latent f"):
        q.tokenize(torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match="codes in"):
        q.running_reconstruction([torch.tensor([[16]])])
    with pytest.raises(ValueError, match="at most 4 scales"):
        q.running_reconstruction([torch.zeros(1, s * s, dtype=torch.long) for s in (1, 2, 3, 5, 6)])
    with pytest.raises(ValueError, match="expected 4 tokens"):
        q.running_reconstruction([torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3).long()])
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiScaleQuantizer(vocab_size=4, dim=2, scales=(1, 3, 2))
