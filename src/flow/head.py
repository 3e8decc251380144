"""Flow-matching action head: F1's Action-expert math around a velocity network.

Training (paper convention, DESIGN.md section 4): draw tau ~ p(tau) and eps ~ N(0, I), form
x_tau = (1 - tau) eps + tau a, and regress the network's velocity on a - eps with an MSE that
skips padded action dims and padded chunk steps. Sampling integrates the learned velocity from
noise at tau = 0 to an action chunk at tau = 1 (10 Euler steps in pi0/F1).

The head owns only the small maps around the network:

    embed(x_tau, tau) -> tokens [b c d] (+ cond [b d])     network(...) -> hidden [b c d]
    project(hidden) -> velocity [b c a]

Time enters as pi0 does it: sinusoidal features (periods 4e-3 .. 4) concatenated with the
projected noisy action, then Linear -> SiLU -> Linear (``conditioning="concat"``); or, with
``conditioning="adanorm"``, as a vector ``cond`` from which the network's norms take their scale
and shift (pi0.5's adaptive norm). The network is passed in (a default transformer or MLP when
standalone) and may be overridden per call: F1 passes its MoT Action expert bound to the
KV cache of the prefix and foresight.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float
from torch import Tensor, nn

from flow.convention import Convention, convert_time, convert_velocity
from flow.normalize import Normalizer
from flow.padding import pad_to_dim, unpad
from flow.rtc import RTCGuide, guided_velocity
from flow.solvers import ODESolution, ODESolver
from flow.time_embedding import sinusoidal_time_features
from flow.time_sampling import BetaTime, TimeSampler

# network(tokens [b c d], cond [b d] | None, context [b n d] | None) -> hidden [b c d]
VelocityNetwork = Callable[[Tensor, Tensor | None, Tensor | None], Tensor]


@dataclass(frozen=True)
class FlowHeadConfig:
    """action_dim: the (padded) action dim a the head predicts; chunk: steps per chunk c;
    width: the network's width d; state_dim: adds a state token (one linear projection).

    weights_convention: the time convention the *weights* were trained in. ``Convention.PI0``
    for weights imported from openpi / the official F1 code: the head then feeds their time
    t = 1 - tau to the time embedding and negates the network's velocity, so everything outside
    (loss, solvers) stays in the paper convention and fine-tuning keeps their convention inside.
    """

    action_dim: int
    chunk: int
    width: int = 256
    state_dim: int | None = None
    conditioning: Literal["concat", "adanorm"] = "concat"
    min_period: float = 4e-3
    max_period: float = 4.0
    weights_convention: Convention = Convention.PAPER
    time_sampler: TimeSampler = field(default_factory=BetaTime)
    solver: ODESolver = field(default_factory=ODESolver)

    def __post_init__(self) -> None:
        for name in ("action_dim", "chunk", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"FlowHeadConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.width % 2:
            raise ValueError(
                f"FlowHeadConfig.width: must be even (sin/cos pairs), got {self.width}"
            )
        if self.state_dim is not None and self.state_dim < 1:
            raise ValueError(
                f"FlowHeadConfig.state_dim: expected >= 1 or None, got {self.state_dim}"
            )
        if not isinstance(self.weights_convention, Convention):
            raise ValueError(
                f"FlowHeadConfig.weights_convention: expected a Convention, "
                f"got {self.weights_convention!r}"
            )
        if self.conditioning not in ("concat", "adanorm"):
            raise ValueError(
                f"FlowHeadConfig.conditioning: expected 'concat' or 'adanorm', "
                f"got {self.conditioning!r}"
            )


class FlowMatchingHead(nn.Module):
    """Embeds noisy chunks with time, projects velocities, computes the loss, samples chunks.

    Example::

        head = FlowMatchingHead(FlowHeadConfig(action_dim=7, chunk=8, width=128),
                                TransformerVelocityNet(128))
        loss = head.loss(actions, generator=g)          # actions [b 8 7]
        chunk = head.sample(4, generator=g).sample      # [4 8 7]

    ``normalizer`` / ``state_normalizer`` (optional) hold the data stats as buffers, so they are
    saved with the weights: raw actions and states go in, ``loss`` normalises and zero-pads them,
    ``sample`` returns raw-unit actions cut to the robot's own dims.
    """

    def __init__(
        self,
        config: FlowHeadConfig,
        network: nn.Module | None = None,
        normalizer: Normalizer | None = None,
        state_normalizer: Normalizer | None = None,
    ) -> None:
        super().__init__()
        d, a = config.width, config.action_dim
        self.config = config
        self.network = network
        if normalizer is not None and normalizer.dim > a:
            raise ValueError(f"normalizer: {normalizer.dim} dims exceed action_dim {a}")
        self.normalizer = normalizer
        if state_normalizer is not None and (config.state_dim or 0) < state_normalizer.dim:
            raise ValueError(
                f"state_normalizer: {state_normalizer.dim} dims need state_dim >= that, "
                f"got {config.state_dim}"
            )
        self.state_normalizer = state_normalizer
        self.action_in = nn.Linear(a, d)
        if config.conditioning == "concat":
            self.time_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))
        else:
            self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d), nn.SiLU())
        self.state_in = nn.Linear(config.state_dim, d) if config.state_dim else None
        self.action_out = nn.Linear(d, a)

    # -- the three maps around the network ------------------------------------------------

    def embed(
        self, noisy: Float[Tensor, "b c a"], tau: Float[Tensor, " b"]
    ) -> tuple[Float[Tensor, "b c d"], Float[Tensor, "b d"] | None]:
        """Tokens for the network and (adanorm only) the time conditioning vector."""
        cfg = self.config
        self._check_chunk(noisy, "noisy")
        # x_tau stays float32 outside (loss, solver); only the network sees the weights' dtype.
        x = self.action_in(noisy.to(self.action_in.weight.dtype))
        t = sinusoidal_time_features(
            tau, cfg.width, min_period=cfg.min_period, max_period=cfg.max_period
        ).to(x.dtype)
        if cfg.conditioning == "adanorm":
            return x, self.time_mlp(t)
        t = repeat(t, "b d -> b c d", c=x.shape[1])
        return self.time_mlp(torch.cat([x, t], dim=-1)), None

    def embed_state(self, state: Float[Tensor, "b s"]) -> Float[Tensor, "b 1 d"]:
        """One state token (a linear projection of the padded proprio state)."""
        if self.state_in is None:
            raise ValueError("state: this head was built without state_dim")
        return self.state_in(state.to(self.state_in.weight.dtype)).unsqueeze(1)

    def project(self, hidden: Float[Tensor, "b c d"]) -> Float[Tensor, "b c a"]:
        return self.action_out(hidden)

    def velocity(
        self,
        noisy: Float[Tensor, "b c a"],
        tau: Float[Tensor, " b"],
        *,
        context: Float[Tensor, "b n d"] | None = None,
        network: VelocityNetwork | None = None,
    ) -> Float[Tensor, "b c a"]:
        """v(x_tau, tau) in the paper convention: an estimate of a - eps."""
        net = self._network(network)
        own = self.config.weights_convention
        tokens, cond = self.embed(noisy, convert_time(tau, Convention.PAPER, own))
        return convert_velocity(self.project(net(tokens, cond, context)), own, Convention.PAPER)

    # -- training ---------------------------------------------------------------------------

    def loss(
        self,
        actions: Float[Tensor, "b c a"],
        *,
        generator: torch.Generator | None = None,
        state: Float[Tensor, "b s"] | None = None,
        context: Float[Tensor, "b n d"] | None = None,
        action_mask: Bool[Tensor, " a"] | Bool[Tensor, "#b a"] | None = None,
        chunk_mask: Bool[Tensor, " c"] | Bool[Tensor, "#b c"] | None = None,
        tau: Float[Tensor, " b"] | None = None,
        noise: Float[Tensor, "b c _"] | None = None,
        network: VelocityNetwork | None = None,
        share: Callable[[Tensor], Tensor] | None = None,
    ) -> Float[Tensor, ""]:
        """Masked flow-matching MSE, mean over real (step, dim) entries.

        actions: raw actions (normalised here when the head has a normalizer) with a <=
            action_dim features; missing features are zero-padded and masked out.
        state: raw proprio state (normalised by ``state_normalizer``, zero-padded to state_dim);
        context: extra prefix tokens [b n d] the chunk attends to (after the state token).
        action_mask: True for real action dims ([a] or [b a]); chunk_mask: True for real chunk
            steps ([c] or [b c], False past an episode's end). ``tau``/``noise`` override the
            draws (for tests and importance sampling). ``share`` maps this batch's count of real
            entries to the count the masked sum is divided by: a batch that is one rank's part
            of a larger one divides by its share of the whole batch's count, so the ranks'
            mean is the whole batch's mean (default: this batch's own count).

        The noise, x_tau, the target a - eps and the MSE are computed in float32 (or wider) even
        when the weights are bf16: only the network's input is cast to the weights' dtype.
        """
        actions = actions.to(math_dtype(actions.dtype))
        if self.normalizer is not None:
            actions = self.normalizer(actions)
        padded, real = pad_to_dim(actions, self.config.action_dim)
        self._check_chunk(padded, "actions")
        b, c, a = padded.shape
        if tau is None:
            tau = self.config.time_sampler(b, generator=generator, device=padded.device)
        if noise is None:
            noise = torch.randn(
                padded.shape, generator=generator, dtype=padded.dtype, device=padded.device
            )
        elif noise.shape != padded.shape:
            raise ValueError(f"noise: expected {list(padded.shape)}, got {list(noise.shape)}")
        else:
            noise = noise.to(padded.dtype)
        noisy = Convention.PAPER.interpolate(noise, padded, tau)
        target = Convention.PAPER.target(noise, padded)
        context = self._context(state, context)
        pred = self.velocity(noisy, tau, context=context, network=network)

        mask = repeat(real, "a -> b c a", b=b, c=c)
        if action_mask is not None:  # [a] or [#b a] -> [#b 1 a], padded dims False
            action_mask = F.pad(action_mask, (0, a - action_mask.shape[-1]))
            mask = mask & rearrange(action_mask, "... a -> ... 1 a")
        if chunk_mask is not None:  # [c] or [#b c] -> [#b c 1]
            mask = mask & rearrange(chunk_mask, "... c -> ... c 1")
        weight = mask.to(target.dtype)
        # Entries, not rows: a 7-dim robot and a 14-dim one weigh each real action dim equally.
        count = weight.sum() if share is None else share(weight.sum())
        # All padded: the sum is 0 too, and the loss 0 (a share may be a fraction of an entry).
        return ((pred.to(target.dtype) - target) ** 2 * weight).sum() / count.clamp_min(1e-12)

    # -- inference --------------------------------------------------------------------------

    def sample(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        state: Float[Tensor, "b s"] | None = None,
        context: Float[Tensor, "b n d"] | None = None,
        noise: Float[Tensor, "b c a"] | None = None,
        solver: ODESolver | None = None,
        network: VelocityNetwork | None = None,
        guide: RTCGuide | None = None,
    ) -> ODESolution:
        """Integrate from noise (tau = 0) to a chunk (tau = 1) with ``solver`` (config default).

        The sample is [b c a] in raw units: cut to the normalizer's dim and un-normalised when
        the head has one, else the full padded action_dim. The noise and the integrated state are
        float32 (or wider) even for bf16 weights; the network sees them in its own dtype.
        guide: real-time chunking (``flow.rtc``): the previous chunk's remaining raw actions,
        normalised and padded here, softly inpainted into the new chunk's first steps (padded
        action dims left free); each velocity evaluation then adds one backward pass.
        """
        param = self.action_out.weight
        if noise is None:
            noise = torch.randn(
                (batch, self.config.chunk, self.config.action_dim),
                generator=generator,
                dtype=math_dtype(param.dtype),
                device=param.device,
            )
        elif noise.shape[0] != batch:
            raise ValueError(f"noise: expected batch {batch}, got {noise.shape[0]}")
        else:
            noise = noise.to(math_dtype(noise.dtype))
        for name, cond in (("state", state), ("context", context)):
            if cond is not None and cond.shape[0] != batch:
                raise ValueError(f"{name}: expected batch {batch}, got {cond.shape[0]}")
        context = self._context(state, context)
        net = self._network(network)

        def velocity_field(x: Tensor, tau: Tensor) -> Tensor:
            # tau stays float32 (or wider): the shortest time period, 4e-3, is below bf16's step.
            v = self.velocity(x, tau.expand(x.shape[0]), context=context, network=net)
            return v.to(x.dtype)

        if guide is not None:
            velocity_field = self._guided(velocity_field, guide, batch, noise)
        solution = (solver or self.config.solver)(velocity_field, noise)
        out = solution.sample
        if self.normalizer is not None:
            out = self.normalizer.inverse(unpad(out, self.normalizer.dim))
        return ODESolution(sample=out, nfe=solution.nfe)

    # -- helpers ----------------------------------------------------------------------------

    def _guided(self, velocity: Callable, guide: RTCGuide, batch: int, x0: Tensor) -> Callable:
        """The RTC-guided field, with the guide's prefix moved into the solver's units."""
        c = self.config.chunk
        prefix = guide.prefix
        if prefix.shape[0] != batch or prefix.shape[1] > c:
            raise ValueError(
                f"guide.prefix: expected [{batch}, <= {c}, a], got {list(prefix.shape)}"
            )
        prefix = prefix.to(device=x0.device, dtype=x0.dtype)
        if self.normalizer is not None:
            prefix = self.normalizer(prefix)
        prefix, real = pad_to_dim(prefix, self.config.action_dim)
        p = prefix.shape[1]
        prefix = F.pad(prefix, (0, 0, 0, c - p))
        w = guide.config.weights(c, prefix=p, device=x0.device, dtype=x0.dtype)
        weights = rearrange(w, "c -> c 1") * real.to(x0.dtype)  # padded dims: free
        return guided_velocity(velocity, prefix, weights, guide.config.max_guidance)

    def _network(self, network: VelocityNetwork | None) -> VelocityNetwork:
        net = network if network is not None else self.network
        if net is None:
            raise ValueError("network: this head has no default network; pass one to the call")
        return net

    def _context(self, state: Tensor | None, context: Tensor | None) -> Tensor | None:
        if state is None:
            return context
        if self.state_normalizer is not None:
            state = self.state_normalizer(state)
        if self.config.state_dim is not None:
            state = pad_to_dim(state, self.config.state_dim)[0]
        token = self.embed_state(state)
        return token if context is None else torch.cat([token, context], dim=1)

    def _check_chunk(self, x: Tensor, name: str) -> None:
        c, a = self.config.chunk, self.config.action_dim
        if x.shape[-2:] != (c, a):
            raise ValueError(f"{name}: expected [b, {c}, {a}], got {list(x.shape)}")


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the flow's arithmetic: float32 at least (bf16 cannot hold x_tau finely)."""
    return torch.promote_types(dtype, torch.float32)
