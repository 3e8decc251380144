"""One Meta-World v3 task as a seeded, fast-rendering, gymnasium-style environment.

Observations use the LeRobot keys, so a policy sees at evaluation exactly what the dataset holds:

* ``observation.state``: float32 ``(4,)`` hand xyz and gripper opening (proprio),
* ``observation.environment_state``: float32 ``(39,)`` Meta-World's full observation (hand,
  objects, previous frame, goal),
* ``observation.images.<camera>``: uint8 ``(H, W, 3)`` per camera, upright,
* ``task``: the instruction sentence.

Layouts: every ``reset(seed)`` draws a fresh object/goal layout from ``seed`` (Meta-World's random
vector unfrozen and seeded), so a layout is a pure function of the seed and the task.

Rendering (DESIGN.md s8): offscreen through MuJoCo's own renderer with multisampling off and the
shadow and reflection passes disabled: ~6 ms a frame at 64 px on one CPU core instead of 70-100 ms,
with no visible loss. ``MUJOCO_GL`` is set to ``egl`` when the user has not set it, on importing
``f1kit.sim`` (MuJoCo reads it when first imported). Rendering several environments in turn in one
process gives black frames unless the previous one is closed and garbage-collected: ``close()``
does both; use the environment as a context manager. Loading triton (shipped with PyTorch's CUDA
wheel, and loaded lazily by ``torch.compile`` and the optimizers) after llvmpipe has made a GL
context segfaults the process (issue 14), so ``load_simulator`` imports triton first when it is
installed and ``MUJOCO_GL`` is ``egl`` or ``osmesa``.
"""

import functools
import gc
import importlib
import importlib.util
import logging
import os
import zlib
from types import ModuleType

import numpy as np

from f1kit.sim.tasks import instruction

logger = logging.getLogger(__name__)

# MuJoCo picks its GL backend when first imported; whoever imports f1kit.sim before mujoco gets
# headless EGL unless they chose a backend themselves.
os.environ.setdefault("MUJOCO_GL", "egl")

PROPRIO_DIM = 4
ENV_STATE_DIM = 39
ACTION_DIM = 4
CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")


@functools.cache
def _load_triton_before_mesa() -> None:
    """Import triton, if installed, before the first EGL/OSMesa context exists (issue 14)."""
    # Mesa's llvmpipe loads its LLVM when the first software GL context is made; dlopening
    # triton's libtriton.so (its own LLVM) after that segfaults the process, and torch loads it
    # lazily (torch.compile, the optimizer's torch._dynamo import) long after the first frame.
    # Loaded first, both coexist. find_spec alone when triton is absent (the CPU torch wheel).
    if os.environ.get("MUJOCO_GL") not in ("egl", "osmesa"):
        return
    if importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton")
    except ImportError as err:  # a broken triton: torch will skip it too
        logger.warning("triton is installed but failed to import (%s)", err)


def load_simulator() -> tuple[ModuleType, ModuleType]:
    """Import ``metaworld`` and ``mujoco`` (``MUJOCO_GL=egl`` unless set) or explain why not.

    Imports triton first when it is installed and rendering is headless (see the module
    docstring's Rendering paragraph).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    _load_triton_before_mesa()
    try:
        metaworld = importlib.import_module("metaworld")
        mujoco = importlib.import_module("mujoco")
    except ImportError as err:
        raise ImportError(
            "Meta-World is not installed: install the simulator extra, pip install 'f1kit[sim]'"
        ) from err
    return metaworld, mujoco


def layout_seed(seed: int, task: str, episode: int) -> int:
    """The layout seed of episode ``episode`` of ``task`` in a run seeded with ``seed``.

    Independent of the task's position in a list and of the worker that runs it, so demo
    generation is deterministic however it is split across processes. Training and evaluation use
    different ``seed`` values, hence different layouts.
    """
    if seed < 0 or episode < 0:
        raise ValueError(f"seed and episode: expected >= 0, got seed={seed}, episode={episode}")
    entropy = [seed, zlib.crc32(task.encode()), episode]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class MetaWorldEnv:
    """A Meta-World v3 task with seeded layouts and fast offscreen cameras.

    Example::

        with MetaWorldEnv("reach-v3", cameras=("corner",), size=64) as env:
            obs, info = env.reset(seed=layout_seed(0, "reach-v3", 0))
            obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    """

    def __init__(
        self,
        task: str,
        cameras: tuple[str, ...] = ("corner",),
        size: int = 64,
        max_steps: int = 500,
    ) -> None:
        self.instruction = instruction(task)
        bad = [c for c in cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"cameras: unknown camera(s) {bad}; expected some of {CAMERAS}")
        if not 8 <= size <= 1024:
            raise ValueError(f"size: expected an image side in [8, 1024] pixels, got {size}")
        _, mujoco = load_simulator()
        env_dict = importlib.import_module("metaworld.env_dict")
        self.task, self.cameras, self.size = task, tuple(cameras), size
        self._mujoco = mujoco
        env = env_dict.ALL_V3_ENVIRONMENTS[task]()
        if not 1 <= max_steps <= env.max_path_length:
            env.close()
            raise ValueError(f"max_steps: expected 1..{env.max_path_length}, got {max_steps}")
        self.max_steps = max_steps
        # The goal is part of the observation in the multi-task benchmarks (MT1/MT10/MT50).
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)
        env._set_task_called = True
        self._env = env
        self._renderer = None
        self._steps = 0
        if cameras:
            model = env.model
            model.vis.quality.offsamples = 0  # read when the GL context is made: set it first
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
            model.vis.global_.offheight = max(model.vis.global_.offheight, size)
            try:
                self._renderer = mujoco.Renderer(model, size, size)
            except mujoco.FatalError as err:
                env.close()
                raise RuntimeError(
                    f"offscreen rendering failed (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): "
                    "mujoco was probably imported before f1kit.sim; set MUJOCO_GL=egl (or "
                    "osmesa) in the environment, or import f1kit.sim before mujoco/metaworld"
                ) from err
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    @property
    def fps(self) -> int:
        """Control frequency in Hz (one ``step`` is ``frame_skip`` physics steps)."""
        return round(1.0 / self._env.dt)

    @property
    def raw_observation(self) -> np.ndarray:
        """Meta-World's latest 39-float observation (what the scripted experts read)."""
        return self._last_obs

    def render(self) -> dict[str, np.ndarray]:
        """Current frame of every camera: ``observation.images.<camera>`` -> uint8 ``(H, W, 3)``."""
        if self._renderer is None:
            return {}
        frames = {}
        for cam in self.cameras:
            self._renderer.update_scene(self._env.data, camera=cam)
            # OpenGL rows come out bottom-up for Meta-World's cameras: flip to upright.
            frames[f"observation.images.{cam}"] = np.ascontiguousarray(
                self._renderer.render()[::-1]
            )
        return frames

    def _observation(self, raw: np.ndarray) -> dict[str, object]:
        self._last_obs = raw
        return {
            "observation.state": raw[:PROPRIO_DIM].astype(np.float32),
            "observation.environment_state": raw.astype(np.float32),
            **self.render(),
            "task": self.instruction,
        }

    def reset(self, seed: int) -> tuple[dict[str, object], dict[str, int]]:
        """Start an episode on the layout drawn from ``seed``; returns ``(observation, info)``
        as gymnasium does (a seed is required: it *is* the layout)."""
        env = self._env
        env.seed(int(seed))
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        raw, _ = env.reset()
        self._steps = 0
        return self._observation(raw), {"layout_seed": int(seed)}

    def step(self, action: np.ndarray) -> tuple[dict[str, object], float, bool, bool, dict]:
        """Apply one action in [-1, 1]^4 (xyz delta, gripper).

        Returns ``(observation, reward, terminated, truncated, info)``; ``terminated`` is task
        success, ``truncated`` is the step cap.
        """
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action: expected shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action: expected finite values, got {action}")
        if self._steps >= self.max_steps:
            raise RuntimeError(f"step: the episode hit its cap of {self.max_steps}; call reset")
        raw, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        success = bool(info["success"])
        return self._observation(raw), float(reward), success, self._steps >= self.max_steps, info

    def close(self) -> None:
        """Free the GL context and the simulator (needed before the next env renders)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None
        gc.collect()

    def __enter__(self) -> "MetaWorldEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
