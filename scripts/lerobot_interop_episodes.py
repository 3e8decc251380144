"""The episodes ``check_lerobot_interop.py`` has both writers store: cameras, numeric features,
tasks, and the ``delta_timestamps`` windows compared with f1kit's ``WindowedDataset``."""

import numpy as np

FPS = 10
TASKS = ("pick up the red cube", "open the top drawer")
EPISODES = ((0, 6), (1, 4), (0, 8))  # (task, length)
# Storage LeRobot uses in direction 1; f1kit stores all cameras one way per folder.
CAMERAS = {
    "observation.images.top": ("image", 32, 48),
    "observation.images.wrist": ("video", 32, 48),
    "observation.images.side": ("video", 31, 47),
}
NUMERIC = {
    "observation.state": ("float32", [f"joint_{i}" for i in range(6)]),
    "action": ("float32", [f"joint_{i}" for i in range(6)] + ["gripper"]),
    "next.done": ("bool", None),
    "next.reward": ("float32", None),
}
IMAGE_NAMES = ["height", "width", "channels"]
INDEX = ("frame_index", "episode_index", "task_index")
# delta_timestamps windows (in frames) against f1kit's WindowedDataset with the same offsets.
HISTORY, FORESIGHT, CHUNK = (-3, -1, 0), 2, 4


def make_truth(seed: int) -> dict[str, np.ndarray]:
    """The episodes both writers store, keyed ``e{episode}/{feature}``.

    Frames are smooth colour waves moving from frame to frame (a phase per camera and episode):
    a lossy codec keeps them close (PNG must keep them exactly) while consecutive frames stay far
    apart, so a frame taken from the wrong time shows. Noise frames would not survive a codec.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for e, (_, t) in enumerate(EPISODES):
        for c, (key, (_, h, w)) in enumerate(CAMERAS.items()):
            f = np.arange(t)[:, None, None]
            yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
            phase = rng.uniform() + c / 5 + e / 3
            r = np.sin(2 * np.pi * (xx + f / 7 + phase))
            g = np.cos(2 * np.pi * (yy - f / 5 + phase))
            b = np.sin(2 * np.pi * (xx + yy + f / 9 - phase))
            rgb = np.stack([r, g, b], axis=-1) * 100 + 128
            out[f"e{e}/{key}"] = rgb.round().astype(np.uint8)
        out[f"e{e}/observation.state"] = rng.normal(size=(t, 6)).astype(np.float32)
        out[f"e{e}/action"] = rng.normal(size=(t, 7)).astype(np.float32)
        out[f"e{e}/next.done"] = (np.arange(t) == t - 1)[:, None]
        out[f"e{e}/next.reward"] = rng.uniform(size=(t, 1)).astype(np.float32)
    return out


def truth_rows(truth: dict[str, np.ndarray], key: str) -> np.ndarray:
    return np.concatenate([truth[f"e{e}/{key}"] for e in range(len(EPISODES))])


def lerobot_spec(kinds: dict[str, str], numeric: dict) -> dict:
    features = {
        key: {"dtype": kinds[key], "shape": [h, w, 3], "names": IMAGE_NAMES}
        for key, (_, h, w) in CAMERAS.items()
    }
    for key, (dtype, names) in numeric.items():
        features[key] = {"dtype": dtype, "shape": [len(names) if names else 1], "names": names}
    episodes = [{"task": TASKS[task], "length": t} for task, t in EPISODES]
    return {"fps": FPS, "features": features, "episodes": episodes}


def window_offsets() -> dict[str, list[int]]:
    offsets = {key: [*HISTORY, FORESIGHT] for key in CAMERAS}
    offsets["action"] = list(range(CHUNK))
    return offsets
