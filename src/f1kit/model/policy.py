"""`F1Policy`: the LeRobot-style policy API around an `F1` model (DESIGN.md s9).

``select_action(observation)`` serves one action at a time from a queue: when the queue is empty
it predicts a chunk of ``chunk`` actions and keeps the first ``execute`` of them (execute n of c,
then re-plan). ``predict_action_chunk`` returns the whole chunk; ``reset()`` clears the queue and
the frame history at an episode start; ``predicted_frame()`` decodes the latest foresight.

Observations are raw env dicts (``observation.images.<camera>`` uint8 (H, W, 3) or batched
(b, H, W, 3), ``observation.state``, ``task``). The policy normalises the state and un-normalises
the actions with the training data's statistics, which it owns (saved with the model), and
keeps the past frames the Generation expert's history needs: at step t it feeds frames
t + offset for each offset (default -9, -6, -3, 0), clamped to the episode start as the training
window clamps them.
"""

from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, UInt8
from torch import Tensor

from f1kit.model.f1 import F1
from flow import Normalizer, unpad


class F1Policy:
    """Closed-loop F1: action queue, frame history, normalisation.

    Example::

        policy = F1Policy(model, cameras=("corner",), state_norm=s, action_norm=a)
        policy.reset()
        action = policy.select_action(env_observation)      # np.ndarray [action dims]
    """

    def __init__(
        self,
        model: F1,
        *,
        cameras: Sequence[str] = ("corner",),
        state_norm: Normalizer | None = None,
        action_norm: Normalizer | None = None,
        history_offsets: Sequence[int] = (-9, -6, -3, 0),
        seed: int = 0,
        decode_foresight: bool = False,
    ) -> None:
        if not cameras:
            raise ValueError("cameras: expected at least one camera name")
        gen = model.config.generation
        if gen is not None and len(history_offsets) != gen.history:
            raise ValueError(
                f"history_offsets: the model aggregates {gen.history} frames, "
                f"got {len(history_offsets)} offsets {tuple(history_offsets)}"
            )
        self.model = model.eval()
        self.cameras = tuple(cameras)
        # The stats follow the model (a CUDA model gets CUDA observations).
        self.state_norm = None if state_norm is None else state_norm.to(self.device)
        self.action_norm = None if action_norm is None else action_norm.to(self.device)
        self.offsets = tuple(history_offsets)
        self.seed = seed
        self.decode = decode_foresight
        self.execute = model.config.action.execute
        self._queue: deque[np.ndarray] = deque()
        # The tokenizer codes [b, N] of every step's frame since reset, encoded as the frame
        # arrives: a re-planning step then encodes one frame, not the four of its history.
        self._codes: list[Tensor] = []
        self._foresight: np.ndarray | None = None
        self._generator: torch.Generator | None = None
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        """Start an episode: empty action queue and frame history, reseeded draws."""
        self._queue.clear()
        self._codes = []
        self._foresight = None
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    # ---- observations -----------------------------------------------------------------------

    def _images(self, observation: dict) -> UInt8[Tensor, "b v 3 H W"]:
        frames = []
        for cam in self.cameras:
            key = f"observation.images.{cam}"
            if key not in observation:
                raise ValueError(f"observation: missing {key!r} (has {sorted(observation)})")
            x = torch.as_tensor(np.asarray(observation[key]))
            if x.dtype != torch.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
                raise ValueError(
                    f"{key}: expected uint8 (H, W, 3) or (b, H, W, 3), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            frames.append(x if x.ndim == 4 else x.unsqueeze(0))
        images = torch.stack(frames, dim=1)
        return rearrange(images, "b v H W c -> b v c H W").to(self.device)

    def _state(self, observation: dict, batch: int) -> Float[Tensor, "b s"]:
        if "observation.state" not in observation:
            raise ValueError("observation: missing 'observation.state'")
        state = torch.as_tensor(np.asarray(observation["observation.state"]), dtype=torch.float32)
        state = state.reshape(batch, -1).to(self.device)
        return self.state_norm(state) if self.state_norm is not None else state

    def _texts(self, observation: dict, batch: int) -> list[str]:
        task = observation.get("task")
        if task is None:
            raise ValueError("observation: missing 'task' (the instruction)")
        texts = [task] * batch if isinstance(task, str) else list(task)
        if len(texts) != batch:
            raise ValueError(f"task: expected {batch} instructions, got {len(texts)}")
        return texts

    def _record(self, images: Tensor) -> None:
        """Keep this step's frame (as its codes) for the history of later steps."""
        if self.model.generator is not None:
            self._codes.append(self.model.frame_codes(images))

    def _history(self, images: Tensor) -> Tensor | None:
        """Codes [b, t, N] of the frames at the history offsets from now (frame recorded)."""
        if self.model.generator is None:
            return None
        self._record(images)
        now = len(self._codes) - 1
        return torch.stack([self._codes[max(0, now + o)] for o in self.offsets], dim=1)

    # ---- acting -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict_action_chunk(self, observation: dict) -> Float[Tensor, "b c a"]:
        """A chunk of raw-unit actions [b, c, a] (a = the data's action dims when normalised)."""
        images = self._images(observation)
        batch = images.shape[0]
        prediction = self.model.predict(
            images,
            self._texts(observation, batch),
            self._state(observation, batch),
            self._history(images),
            generator=self._generator,
        )
        actions = prediction.actions.float()
        if self.action_norm is not None:
            actions = self.action_norm.inverse(unpad(actions, self.action_norm.dim))
        if self.decode and prediction.foresight is not None:
            self._foresight = self.model.decode_foresight(prediction.foresight).cpu().numpy()
        return actions

    def select_action(self, observation: dict) -> np.ndarray:
        """The next action of the current chunk; a new chunk every ``execute`` steps.

        Every call records the frame (the history needs every step's frame, also those served
        from the queue). Unbatched observations give [a], batched ones [b, a].
        """
        if self._queue:
            self._record(self._images(observation))
            return self._queue.popleft()
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
        """config.json + model.safetensors + normalization.safetensors, written atomically."""
        from f1kit.model.pretrained import save_pretrained  # the loader imports this module

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: object) -> "F1Policy":
        """The policy saved in ``directory`` (strict: mismatched tensors are listed)."""
        from f1kit.model.pretrained import load_pretrained

        return load_pretrained(directory, **kwargs)  # type: ignore[arg-type]
