"""`F1Policy`: the LeRobot-style policy API around an `F1` model (DESIGN.md s9).

``select_action(observation)`` serves one action at a time from a queue: when the queue is empty
it predicts a chunk of ``chunk`` actions and keeps the first ``execute`` of them (execute n of c,
then re-plan). ``predict_action_chunk`` returns the whole chunk; ``reset()`` clears the queue and
the frame history at an episode start; ``predicted_frame()`` decodes the latest foresight.

The history is counted in env steps. ``observe(observation)`` records one env step (its frame);
``select_action`` calls it on every call. A loop that drives ``predict_action_chunk`` itself calls
``observe`` on every env step and ``predict_action_chunk`` when it wants a chunk (with the same
observation object it last observed); ``predict_action_chunk`` of an observation that was not
observed records it once as a new step. At step t the Generation expert reads the frames of steps
t + offset for each offset (default -9, -6, -3, 0), clamped to the episode start as the training
window (`f1kit.data.WindowedDataset`) clamps them. Only those frames are ever tokenized: the policy
keeps the raw frames of the last max|offset| steps and the codes of the steps already encoded.
Under ``select_action`` the plan steps are known (one every ``execute`` steps), so a frame a coming
plan reads is encoded as it arrives and a plan step encodes only its own frame; a loop of its own
has its frames encoded when a plan first reads them.

Observations are raw env dicts: ``observation.images.<camera>`` uint8 (H, W, 3) or batched
(b, H, W, 3) (float images in [0, 1] are accepted and quantised to uint8), ``observation.state``,
``task`` (a str or one per batch row) and, for a policy trained on several embodiments,
``embodiment`` (its id; see `f1kit.data.processor`). The policy's preprocessor normalises the
state and its postprocessor un-normalises the actions with the training data's statistics, the
very processors the training windows used (saved with the policy). Bad input is refused with an
error naming its key.
"""

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, UInt8
from torch import Tensor

from f1kit.data.processor import ACTION, EMBODIMENT, STATE, Processor, UnnormalizeStep
from f1kit.model.engine import CompileMode, Engine
from f1kit.model.f1 import F1, Prediction
from f1kit.model.text import TokenizedText, check_texts
from flow import RTCGuide


@dataclass
class ChunkInputs:
    """One env step's model inputs: frames [b, v, 3, H, W], instructions, normalised state
    [b, s], history codes [b, t, N] (None without foresight) and the embodiment selector."""

    images: Tensor
    texts: list[str]
    state: Tensor
    history: Tensor | None
    embodiment: dict


class F1Policy:
    """Closed-loop F1: action queue, frame history by env step, pre/post-processing.

    Example::

        policy = F1Policy.from_pretrained("runs/f1/policy")
        policy.reset()
        action = policy.select_action(env_observation)      # np.ndarray [action dims]
    """

    def __init__(
        self,
        model: F1,
        *,
        cameras: Sequence[str] = ("corner",),
        preprocessor: Processor | None = None,
        postprocessor: Processor | None = None,
        history_offsets: Sequence[int] = (-9, -6, -3, 0),
        seed: int = 0,
        decode_foresight: bool = False,
        embodiment: str | None = None,
        compile: CompileMode = "eager",
    ) -> None:
        """embodiment: the id whose statistics an observation without an ``embodiment`` key
        uses (None: the processor's only one; with several, each observation must say).
        compile: how the trunk runs (`engine.Engine`): ``"eager"``, or a ``torch.compile`` mode
        (``"reduce-overhead"`` replays CUDA graphs); its KV caches are kept across chunks."""
        if not cameras:
            raise ValueError("cameras: expected at least one camera name")
        if model.config.action.state_dim is None:
            raise ValueError(
                "model: no state token (pi0.5: the state goes into the prompt), and F1Policy does "
                "not write that prompt yet; call model.predict with texts from "
                "f1kit.model.importers.pi05_prompt.pi05_prompts (docs/weights.md)"
            )
        gen = model.config.generation
        if gen is not None and len(history_offsets) != gen.history:
            raise ValueError(
                f"history_offsets: the model aggregates {gen.history} frames, "
                f"got {len(history_offsets)} offsets {tuple(history_offsets)}"
            )
        if any(o > 0 for o in history_offsets):
            raise ValueError(f"history_offsets: expected offsets <= 0, got {history_offsets}")
        self.model = model.eval()
        self.engine = Engine(model.trunk, compile)
        self.cameras = tuple(cameras)
        # The statistics follow the model (a CUDA model gets CUDA observations).
        self.preprocessor = None if preprocessor is None else preprocessor.to(self.device)
        self.postprocessor = None if postprocessor is None else postprocessor.to(self.device)
        self.offsets = tuple(history_offsets)
        self.seed = seed
        self.decode = decode_foresight
        self.embodiment = embodiment
        self.execute = model.config.action.execute
        self._reach = -min(self.offsets, default=0)  # steps back the history reads
        self._queue: deque[np.ndarray] = deque()
        self._now: tuple | None = None  # the current step's frames, state, texts, embodiment
        self._frames: dict[int, Tensor] = {}  # env step -> frames [b, v, 3, H, W], recent only
        self._codes: dict[int, Tensor] = {}  # env step -> tokenizer codes [b, N], when encoded
        self._step = -1  # the current env step (-1: nothing observed since reset)
        self._next_plan: int | None = None  # select_action's next plan step, when it drives
        self._batch: int | None = None
        self._observed: dict | None = None
        self._text: tuple[tuple[str, ...], TokenizedText] | None = None
        self._foresight: np.ndarray | None = None
        self._generator: torch.Generator | None = None
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def step(self) -> int:
        """The current env step of the episode (-1 before its first `observe`)."""
        return self._step

    @property
    def last_observation(self) -> dict | None:
        """The observation `observe` last recorded (None since `reset`): passing it to
        `predict_action_chunk` plans at the current step without recording it again."""
        return self._observed

    def reset(self) -> None:
        """Start an episode: empty action queue and frame history, reseeded draws."""
        self._queue.clear()
        self._frames, self._codes, self._now = {}, {}, None
        self._step, self._batch, self._observed = -1, None, None
        self._next_plan = None
        self._foresight = None
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    # ---- observations -----------------------------------------------------------------------

    def observe(self, observation: dict) -> None:
        """Record one env step: the whole observation is checked (nothing is recorded when it is
        refused), its frame joins the history, kept raw until a plan reads it."""
        images = self._images(observation)
        batch = images.shape[0]
        if self._batch is not None and batch != self._batch:
            raise ValueError(
                f"batch: this episode's observations have {self._batch} rows, got {batch}; "
                "call reset() before changing the batch size"
            )
        state = self._state(observation, batch)
        texts = self._texts(observation, batch)
        self._batch = batch
        self._step += 1
        self._observed = observation
        self._now = (images, state, texts, self._embodiment(observation))
        if self.model.generator is not None:
            self._frames[self._step] = images
            oldest = self._step - self._reach
            for store in (self._frames, self._codes):
                for step in [s for s in store if s < oldest]:
                    del store[step]
            if self._read_by_a_coming_plan(self._step):
                self._encode([self._step])

    def _read_by_a_coming_plan(self, step: int) -> bool:
        """Whether a plan of select_action's schedule (steps next_plan + j * execute) reads the
        frame of ``step``: the plan at step - offset does, for each history offset."""
        if self._next_plan is None:
            return False
        plans = (step - o for o in self.offsets)
        return any(
            p >= self._next_plan and (p - self._next_plan) % self.execute == 0 for p in plans
        )

    def _encode(self, steps: list[int]) -> None:
        """Tokenizer codes of the frames of ``steps``, in one tokenizer call."""
        frames = torch.cat([self._frames[s] for s in steps])
        codes = self.model.frame_codes(frames).split(frames.shape[0] // len(steps))
        self._codes.update(zip(steps, codes, strict=True))

    def _images(self, observation: dict) -> UInt8[Tensor, "b v 3 H W"]:
        frames = []
        for cam in self.cameras:
            key = f"observation.images.{cam}"
            if key not in observation:
                raise ValueError(f"observation: missing {key!r} (has {sorted(observation)})")
            x = torch.as_tensor(np.asarray(observation[key]))
            if x.ndim not in (3, 4) or x.shape[-1] != 3:
                raise ValueError(f"{key}: expected (H, W, 3) or (b, H, W, 3), got {tuple(x.shape)}")
            if x.ndim == 4 and x.shape[0] == 0:
                raise ValueError(f"{key}: a batch of 0 observations, expected at least 1")
            if x.dtype.is_floating_point:
                if not bool(torch.isfinite(x).all()):
                    raise ValueError(f"{key}: holds NaN or inf")
                if float(x.min()) < 0.0 or float(x.max()) > 1.0:
                    raise ValueError(f"{key}: float images must lie in [0, 1]")
                x = (x.float() * 255.0).round().to(torch.uint8)
            elif x.dtype != torch.uint8:
                raise ValueError(f"{key}: expected uint8 or float in [0, 1], got {x.dtype}")
            frames.append(x if x.ndim == 4 else x.unsqueeze(0))
        if len({f.shape[0] for f in frames}) > 1:
            raise ValueError(
                f"observation: cameras {self.cameras} have batch sizes {[len(f) for f in frames]}"
            )
        images = torch.stack(frames, dim=1)
        return rearrange(images, "b v H W c -> b v c H W").to(self.device)

    def _state(self, observation: dict, batch: int) -> Float[Tensor, "b s"]:
        if STATE not in observation:
            raise ValueError(f"observation: missing {STATE!r}")
        state = torch.as_tensor(np.asarray(observation[STATE]), dtype=torch.float32)
        if state.numel() == 0 or state.numel() % batch:
            raise ValueError(
                f"{STATE}: expected {batch} row(s) of state, got shape {tuple(state.shape)}"
            )
        if not bool(torch.isfinite(state).all()):
            raise ValueError(f"{STATE}: holds NaN or inf")
        state = state.reshape(batch, -1).to(self.device)
        if self.preprocessor is None:
            return state
        return self.preprocessor({STATE: state, **self._embodiment(observation)})[STATE]

    def _embodiment(self, observation: dict) -> dict:
        emb = observation.get(EMBODIMENT, self.embodiment)
        return {} if emb is None else {EMBODIMENT: emb}

    def _texts(self, observation: dict, batch: int) -> list[str]:
        task = observation.get("task")
        if task is None:
            raise ValueError("observation: missing 'task' (the instruction)")
        if isinstance(task, str):
            texts = [task] * batch
        elif isinstance(task, (list, tuple)):
            texts = list(task)
        else:
            raise TypeError(f"task: expected a str or a list of str, got {type(task).__name__}")
        if len(texts) != batch:
            raise ValueError(f"task: expected {batch} instructions, got {len(texts)}")
        return check_texts(texts, key="task")

    def _encoded(self, texts: list[str]) -> TokenizedText:
        """The instructions' encoding, tokenized again only when they change."""
        key = tuple(texts)
        if self._text is None or self._text[0] != key:
            self._text = (key, self.model.understanding.encode_text(texts, self.device))
        return self._text[1]

    def _history(self) -> Tensor | None:
        """Codes [b, t, N] of the frames at the history offsets from the current step, clamped
        to the episode start; frames not encoded yet are encoded now, in one tokenizer call."""
        if self.model.generator is None:
            return None
        steps = [max(0, self._step + o) for o in self.offsets]
        todo = sorted(set(steps) - set(self._codes))
        if todo:
            self._encode(todo)
        return torch.stack([self._codes[s] for s in steps], dim=1)

    # ---- acting -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict_action_chunk(
        self, observation: dict, rtc: RTCGuide | None = None
    ) -> Float[Tensor, "b c a"]:
        """A chunk of raw-unit actions [b, c, a] at the current env step (a = the data's action
        dims when there is a postprocessor). ``observation`` is recorded first unless it is the
        one `observe` last saw. ``rtc``: real-time chunking, the previous chunk's remaining
        raw-unit actions [b, p, a] from this step on as a guided prefix (`flow.rtc`)."""
        inputs = self.chunk_inputs(observation)
        guide = None if rtc is None else self._model_units(rtc, inputs.embodiment)
        # The history codes come from the model's own tokenizer: no range check (host read).
        prediction = self.model.predict(
            inputs.images,
            self._encoded(inputs.texts),
            inputs.state,
            inputs.history,
            generator=self._generator,
            engine=self.engine,
            check_codes=False,
            guide=guide,
        )
        return self.finish_chunk(prediction, inputs.embodiment)

    def chunk_inputs(self, observation: dict) -> "ChunkInputs":
        """The model's inputs at the current env step (``observation`` recorded first unless
        `observe` last saw it): what `predict_action_chunk` feeds `F1.predict`, for callers that
        batch several policies' steps into one call (`f1kit.serve`)."""
        if observation is not self._observed:
            self.observe(observation)
        assert self._now is not None  # observe() set it
        images, state, texts, embodiment = self._now
        return ChunkInputs(images, list(texts), state, self._history(), embodiment)

    def finish_chunk(self, prediction: Prediction, embodiment: dict) -> Float[Tensor, "b c a"]:
        """Raw-unit actions of a prediction made from `chunk_inputs` (and its foresight frame
        decoded when ``decode`` is on)."""
        actions = prediction.actions.float()
        if self.postprocessor is not None:
            actions = self.postprocessor({ACTION: actions, **embodiment})[ACTION]
        if self.decode and prediction.foresight is not None:
            self._foresight = self.model.decode_foresight(prediction.foresight).cpu().numpy()
        return actions

    def _model_units(self, rtc: RTCGuide, embodiment: dict) -> RTCGuide:
        """``rtc`` with its raw-unit prefix normalised as the training data's actions were."""
        prefix = rtc.prefix.to(self.device, torch.float32)
        if self.postprocessor is not None:
            step = self.postprocessor.step(UnnormalizeStep)
            norm = step.normalizer(step.embodiment(embodiment), ACTION)
            if norm is not None:
                if prefix.shape[-1] != norm.dim:
                    raise ValueError(
                        f"rtc.prefix: expected {norm.dim} action dims, got {prefix.shape[-1]}"
                    )
                prefix = norm(prefix)
        return RTCGuide(prefix, rtc.config)

    def select_action(self, observation: dict) -> np.ndarray:
        """The next action of the current chunk; a new chunk every ``execute`` steps.

        Every call is one env step (`observe`). Unbatched observations give [a], batched [b, a].
        """
        if self._step < 0:  # select_action drives this episode: it plans at its first step
            self._next_plan = 0
        self.observe(observation)
        if self._queue:
            return self._queue.popleft()
        if self._next_plan is not None:
            self._next_plan = self._step + self.execute
        chunk = self.predict_action_chunk(observation).cpu().numpy()
        single = np.asarray(observation[f"observation.images.{self.cameras[0]}"]).ndim == 3
        steps = chunk[0] if single else rearrange(chunk, "b c a -> c b a")
        self._queue.extend(steps[: self.execute])
        return self._queue.popleft()

    def predicted_frame(self) -> np.ndarray | None:
        """The latest foresight frame (uint8 (H, W, 3)) when decoding is on, else None."""
        return None if self._foresight is None else self._foresight[0]

    # ---- weights ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """config.json + model.safetensors + the processors' files, written atomically."""
        from f1kit.model.pretrained import save_pretrained  # the loader imports this module

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: object) -> "F1Policy":
        """The policy saved in ``directory`` (strict: mismatched tensors are listed)."""
        from f1kit.model.pretrained import load_pretrained

        return load_pretrained(directory, **kwargs)  # type: ignore[arg-type]
