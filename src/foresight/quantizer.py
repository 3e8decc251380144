"""VAR's multi-scale residual vector quantizer (arXiv 2404.02905, Algorithm 1; DESIGN.md s3).

For scales s_1 < ... < s_K = L (L x L the latent size) and the residual r (initially f):

    for k = 1..K:
        idx_k = argmin_v || area_down(r, s_k) - e_v ||_2     (no downsampling when s_k = L)
        h_k   = phi_k(bicubic_up(e[idx_k], L))               (no upsampling when s_k = L)
        f_hat = f_hat + h_k ;  r = r - h_k

Training loss, averaged over the K scales (f_hat after scale k):
    beta * MSE(sg(f_hat_k), f) + MSE(f_hat_k, sg(f)),   beta = 0.25,
and the decoder receives f_hat through a straight-through estimator, sg(f_hat - f) + f.

Token pyramids are lists of K index tensors, one per scale, each flattened row-major to
``[b, s_k * s_k]`` (the generator's target layout). ``k`` indexes scales from 0 in code.
"""

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn
from vector_quantize_pytorch.vector_quantize_pytorch import kmeans

from foresight.phi import PhiBank
from foresight.scales import check_code_range


def check_scales(scales: tuple[int, ...]) -> None:
    """Raise unless ``scales`` is a non-empty, strictly increasing tuple of positive ints."""
    if not scales or any(not isinstance(s, int) or s < 1 for s in scales):
        raise ValueError(f"scales: expected a non-empty tuple of positive ints, got {scales}")
    if any(a >= b for a, b in itertools.pairwise(scales)):
        raise ValueError(f"scales: expected strictly increasing sizes, got {scales}")


@dataclass
class QuantizerOutput:
    """What one training pass of the quantizer produces.

    f_hat: the full reconstruction with straight-through gradients to the encoder.
    loss: the VQ loss (commitment + codebook terms averaged over scales), a scalar.
    indices: the token pyramid, K tensors of shape [b, s_k^2].
    hits: code counts per scale, [K, vocab_size] (float).
    """

    f_hat: Tensor
    loss: Tensor
    indices: list[Tensor]
    hits: Tensor


class MultiScaleQuantizer(nn.Module):
    """One codebook of ``vocab_size`` codes of width ``dim`` shared by all ``scales``.

    Example:
        >>> q = MultiScaleQuantizer(vocab_size=64, dim=8, scales=(1, 2, 4), phi_count=2)
        >>> [t.shape[1] for t in q.tokenize(torch.randn(2, 8, 4, 4))]
        [1, 4, 16]
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        scales: tuple[int, ...],
        beta: float = 0.25,
        phi_count: int = 4,
        phi_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        check_scales(scales)
        if vocab_size < 2:
            raise ValueError(f"vocab_size: expected >= 2, got {vocab_size}")
        self.scales = tuple(scales)
        self.vocab_size = vocab_size
        self.dim = dim
        self.beta = beta
        self.codebook = nn.Embedding(vocab_size, dim)
        # VQGAN/taming's init: tiny codes, grown by the loss (and by dead-code restarts).
        nn.init.uniform_(self.codebook.weight, -1.0 / vocab_size, 1.0 / vocab_size)
        self.phi = PhiBank(dim, phi_count, phi_ratio)
        # Per-scale EMA of code hits, VAR's usage statistic (saved with the weights).
        self.register_buffer("ema_hits", torch.zeros(len(scales), vocab_size))
        self.hit_updates = 0
        self._residuals: Tensor | None = None

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def latent_size(self) -> int:
        return self.scales[-1]

    def token_counts(self) -> tuple[int, ...]:
        """Tokens per scale, s_k^2."""
        return tuple(s * s for s in self.scales)

    # ---- the pieces of Algorithm 1 ---------------------------------------------------------

    def nearest(self, z: Float[Tensor, "n z"]) -> Int[Tensor, " n"]:
        """Index of the nearest code in L2, ||z||^2 + ||e||^2 - 2 z.e (VAR's arithmetic)."""
        codes = self.codebook.weight.detach()
        dist = torch.addmm(
            z.square().sum(1, keepdim=True) + codes.square().sum(1), z, codes.T, alpha=-2, beta=1
        )
        return dist.argmin(1)

    def code_map(self, indices: Int[Tensor, "b n"], k: int) -> Float[Tensor, "b z hl wl"]:
        """h_k: scale k's codes embedded, bicubic-upsampled to the latent size, through phi."""
        s, size = self.scales[k], self.latent_size
        if indices.shape[1] != s * s:
            raise ValueError(
                f"indices of scale {k}: expected {s * s} tokens (s={s}), got {indices.shape[1]}"
            )
        h = rearrange(self.codebook(indices), "b (y x) z -> b z y x", y=s).contiguous()
        if s != size:
            h = F.interpolate(h, size=(size, size), mode="bicubic")
        return self.phi(h, k, self.num_scales)

    def _check_latent(self, f: Tensor) -> None:
        if (
            f.shape[1] != self.dim
            or f.shape[2] != self.latent_size
            or f.shape[3] != self.latent_size
        ):
            raise ValueError(
                f"latent f: expected [b, {self.dim}, {self.latent_size}, {self.latent_size}], "
                f"got {list(f.shape)}"
            )

    def _check_pyramid(
        self, indices: list[Tensor], allow_empty: bool = False, check_codes: bool = True
    ) -> None:
        """Structure (scale count, integer dtype) always; code range only with ``check_codes``.

        The range check reads the tensors on the host (a device sync), so it runs once per call
        for the whole pyramid, and callers whose codes are in range by construction (generation)
        skip it.
        """
        if not indices and not allow_empty:
            raise ValueError("indices: expected at least the first scale's tokens, got none")
        if len(indices) > self.num_scales:
            raise ValueError(
                f"indices: expected at most {self.num_scales} scales, got {len(indices)}"
            )
        for k, t in enumerate(indices):
            if t.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"indices of scale {k}: expected an integer tensor, got {t.dtype}")
        if check_codes:
            check_code_range(indices, self.vocab_size, "indices of scale {k}")

    def _down(self, f: Tensor, s: int) -> Tensor:
        return f if s == f.shape[-1] else F.interpolate(f, size=(s, s), mode="area")

    # ---- passes ----------------------------------------------------------------------------

    def forward(self, f: Float[Tensor, "b z hl wl"]) -> QuantizerOutput:
        """Training pass: quantize all scales, VQ loss, straight-through f_hat, usage stats."""
        self._check_latent(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            # In the codebook's dtype: float32 unless the caller cast the quantizer (VAR keeps it
            # in float32 under mixed precision).
            f = f.to(self.codebook.weight.dtype)
            f_ng = f.detach()
            rest, f_hat = f_ng.clone(), torch.zeros_like(f_ng)
            loss = f.new_zeros(())
            indices, residuals = [], []
            hits = f.new_zeros(self.num_scales, self.vocab_size)
            for k, s in enumerate(self.scales):
                z = rearrange(self._down(rest, s), "b z y x -> (b y x) z")
                idx = rearrange(self.nearest(z), "(b n) -> b n", b=f.shape[0])
                h = self.code_map(idx, k)
                f_hat = f_hat + h
                rest = rest - h.detach()
                loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_ng)
                indices.append(idx)
                residuals.append(z)
                hits[k] = torch.bincount(idx.flatten(), minlength=self.vocab_size).float()
            loss = loss / self.num_scales
            # Same rounding as VAR: (f_hat - f) first, then + f carrying the encoder's gradient.
            f_hat_st = (f_hat.detach() - f_ng) + f
        if self.training:
            self._record_hits(hits)
            self._residuals = torch.cat(residuals)
        return QuantizerOutput(f_hat_st, loss, indices, hits)

    @torch.no_grad()
    def tokenize(self, f: Float[Tensor, "b z hl wl"]) -> list[Int[Tensor, "b _"]]:
        """The token pyramid of a latent: K index tensors [b, s_k^2] (no gradients)."""
        return self._pyramid(f)[0]

    @torch.no_grad()
    def running_reconstruction_of_latent(
        self, f: Float[Tensor, "b z hl wl"]
    ) -> list[Float[Tensor, "b z hl wl"]]:
        """f_hat after each of the K scales while quantizing ``f`` (no gradients)."""
        return self._pyramid(f)[1]

    def _pyramid(self, f: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        self._check_latent(f)
        f = f.to(self.codebook.weight.dtype)
        rest, f_hat = f.clone(), torch.zeros_like(f)
        indices, f_hats = [], []
        for k, s in enumerate(self.scales):
            z = rearrange(self._down(rest, s), "b z y x -> (b y x) z")
            idx = rearrange(self.nearest(z), "(b n) -> b n", b=f.shape[0])
            h = self.code_map(idx, k)
            f_hat = f_hat + h
            rest = rest - h
            indices.append(idx)
            f_hats.append(f_hat)
        return indices, f_hats

    def running_reconstruction(
        self, indices: list[Int[Tensor, "b _"]], *, check: bool = True
    ) -> list[Float[Tensor, "b z hl wl"]]:
        """f_hat [b, z, L, L] after each given scale, from a (possibly partial, first-m-scales)
        pyramid of m tensors [b, s_k^2].

        Scale k always uses the phi conv of position k / (K - 1) in the *full* schedule.
        check: validate the code range (one device sync); False = the caller validated the codes.
        """
        self._check_pyramid(indices, check_codes=check)
        f_hat, out = None, []
        for k, idx in enumerate(indices):
            f_hat = self._accumulate(f_hat, idx, k)
            out.append(f_hat)
        return out

    def teacher_forcing_inputs(
        self, indices: list[Int[Tensor, "b _"]], *, check: bool = True
    ) -> Float[Tensor, "b n z"]:
        """The generator's inputs for scales 2..m+1 from the tokens of scales 1..m (VAR's
        ``idxBl_to_var_input``): f_hat after scales 1..k, area-downsampled to s_{k+1}, flattened
        row-major and concatenated, n = sum_{k=2}^{min(m+1, K)} s_k^2.

        With the full pyramid (m = K) the last scale's tokens are not needed and are ignored, so
        n = sum_{k>=2} s_k^2 (the first scale's input is the generator's learned SOS).
        check: validate the code range (one device sync); False = the caller validated the codes.
        """
        self._check_pyramid(indices, check_codes=check)
        if self.num_scales == 1:
            raise ValueError("teacher forcing: a single-scale schedule has no next-scale inputs")
        f_hats = self.running_reconstruction(indices[: self.num_scales - 1], check=False)
        return torch.cat(
            [self._inputs_of(f_hat, self.scales[k + 1]) for k, f_hat in enumerate(f_hats)], dim=1
        )

    def next_scale_inputs(
        self,
        f_hat: Float[Tensor, "b z hl wl"] | None,
        indices: Int[Tensor, "b n"],
        k: int,
        *,
        check: bool = True,
    ) -> tuple[Float[Tensor, "b z hl wl"], Float[Tensor, "b m z"]]:
        """One step of `teacher_forcing_inputs`: add scale k's codes to the running f_hat and
        return (f_hat after scale k [b, z, L, L], the inputs of scale k+1 [b, s_{k+1}^2, z]).

        f_hat: the f_hat returned for scale k - 1, None for k = 0. indices: scale k's codes
            [b, s_k^2]; k: the scale, 0 <= k < K - 1 (the last scale has no next scale).
        check: validate the code range (one device sync); False = the caller validated the codes.
        Bit for bit the slice of ``teacher_forcing_inputs(pyramid[:k + 1])`` for scale k+1 (same
        sums in the same order), at O(1) scales of work per step instead of O(k).
        """
        if not isinstance(k, int) or not 0 <= k < self.num_scales - 1:
            raise ValueError(
                f"k: expected a scale with a next scale, 0..{self.num_scales - 2}, got {k!r}"
            )
        if (f_hat is None) != (k == 0):
            raise ValueError(
                f"f_hat: expected None exactly for the first scale (k=0), got "
                f"{'None' if f_hat is None else 'a tensor'} for k={k}"
            )
        if f_hat is not None:
            self._check_latent(f_hat)
        self._check_scale(indices, k, check)
        f_hat = self._accumulate(f_hat, indices, k)
        return f_hat, self._inputs_of(f_hat, self.scales[k + 1])

    def _check_scale(self, indices: Tensor, k: int, check_codes: bool) -> None:
        if indices.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"indices of scale {k}: expected an integer tensor, got {indices.dtype}"
            )
        if check_codes:
            check_code_range([indices], self.vocab_size, f"indices of scale {k}")

    def _accumulate(self, f_hat: Tensor | None, indices: Tensor, k: int) -> Tensor:
        # The one place f_hat grows: h_0 first, then f_hat + h_k, so the full and the
        # incremental paths add in the same order and agree bit for bit.
        h = self.code_map(indices, k)
        return h if f_hat is None else f_hat + h

    def _inputs_of(self, f_hat: Tensor, s: int) -> Tensor:
        return rearrange(self._down(f_hat, s), "b z y x -> b (y x) z")

    # ---- codebook bookkeeping --------------------------------------------------------------

    @torch.no_grad()
    def _record_hits(self, hits: Tensor) -> None:
        # VAR's schedule: copy, then a fast EMA for 100 updates, then a slow one.
        if self.hit_updates == 0:
            self.ema_hits.copy_(hits)
        elif self.hit_updates < 100:
            self.ema_hits.mul_(0.9).add_(hits, alpha=0.1)
        else:
            self.ema_hits.mul_(0.99).add_(hits, alpha=0.01)
        self.hit_updates += 1

    @torch.no_grad()
    def init_codebook_kmeans(
        self,
        f: Float[Tensor, "b z hl wl"],
        generator: torch.Generator,
        rounds: int = 2,
        iters: int = 10,
    ) -> None:
        """Fit the codebook to the residuals it will quantize: ``rounds`` times, quantize ``f``
        with the current codebook, pool the residual vectors of all scales, and replace the
        codebook by their k-means centroids (vector-quantize-pytorch's ``kmeans``, seeded here
        through ``generator``).
        """
        if rounds < 1:
            raise ValueError(f"rounds: expected >= 1, got {rounds}")

        def sample(samples: Tensor, num: int) -> Tensor:
            n = samples.shape[1]
            if n >= num:
                pick = torch.randperm(n, generator=generator, device=generator.device)[:num]
            else:
                pick = torch.randint(0, n, (num,), generator=generator, device=generator.device)
            return samples[:, pick.to(samples.device)]

        for _ in range(rounds):
            self._check_latent(f)
            rest = f.to(self.codebook.weight.dtype).clone()
            pool = []
            for k, s in enumerate(self.scales):
                z = rearrange(self._down(rest, s), "b z y x -> (b y x) z")
                pool.append(z)
                idx = rearrange(self.nearest(z), "(b n) -> b n", b=f.shape[0])
                rest = rest - self.code_map(idx, k)
            means, _ = kmeans(torch.cat(pool)[None], self.vocab_size, iters, sample_fn=sample)
            self.codebook.weight.copy_(means[0])

    @torch.no_grad()
    def restart_dead_codes(self, threshold: float, generator: torch.Generator) -> int:
        """Replace codes whose EMA hits (summed over scales) are below ``threshold`` by residual
        vectors drawn from the last training batch; returns how many were replaced.

        The draws use ``generator`` (vector-quantize-pytorch's samplers use the global RNG, which
        would break seeded training runs).
        """
        if self._residuals is None:
            raise RuntimeError("restart_dead_codes: run a training forward pass first")
        dead = (self.ema_hits.sum(0) < threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = self._residuals
        pick = torch.randint(
            0, pool.shape[0], (dead.numel(),), generator=generator, device=generator.device
        ).to(pool.device)
        self.codebook.weight[dead] = pool[pick].to(self.codebook.weight.dtype)
        # Give restarted codes a grace period before they can be judged dead again.
        self.ema_hits[:, dead] = threshold / self.num_scales
        return int(dead.numel())
