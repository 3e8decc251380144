"""LeRobot's side of ``check_lerobot_interop.py``: runs inside the LeRobot virtual environment.

It never imports f1kit. Data comes in and goes out as ``.npz`` (``allow_pickle=False``) and
``.json`` files only:

``write``  builds a dataset with ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` from
           the episodes in ``--truth`` (keys ``e{episode}/{feature}``) and the layout in ``--spec``.
``read``   opens a dataset folder with ``LeRobotDataset(repo_id, root=...)`` (offline) and dumps
           every row as LeRobot returns it, its metadata (info features, tasks, stats, episodes)
           and, with ``--windows``, the ``delta_timestamps`` windows of every row.
"""

import argparse
import json
import logging
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO_ID = "local/f1kit-interop"


def _jsonable(x):
    """Stats and metadata values as plain JSON (arrays become nested lists)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def write(args: argparse.Namespace) -> None:
    from lerobot.datasets import LeRobotDataset

    spec = json.loads(Path(args.spec).read_text())
    truth = np.load(args.truth, allow_pickle=False)
    features = {k: {**f, "shape": tuple(f["shape"])} for k, f in spec["features"].items()}
    t0 = time.perf_counter()
    ds = LeRobotDataset.create(
        REPO_ID,
        fps=spec["fps"],
        features=features,
        root=args.root,
        robot_type=spec.get("robot_type"),
        use_videos=any(f["dtype"] == "video" for f in features.values()),
        encoder_threads=1,
    )
    for e, ep in enumerate(spec["episodes"]):
        for i in range(ep["length"]):
            frame = {key: truth[f"e{e}/{key}"][i] for key in features}
            frame["task"] = ep["task"]
            ds.add_frame(frame)
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    codecs = {
        k: (f.get("info") or {}).get("video.codec")
        for k, f in ds.meta.features.items()
        if f["dtype"] == "video"
    }
    report = {"seconds": time.perf_counter() - t0, "video_codecs": codecs}
    Path(args.report).write_text(json.dumps(report, indent=2))


def _to_numpy(value, key: str, dtype: str, pixel_error: dict[str, float]) -> np.ndarray:
    """One value of a row as numpy; images as uint8 ``(H, W, 3)``.

    LeRobot returns ``image`` features as float32 ``(3, H, W)`` in [0, 1] (PNG / 255) and, with
    ``return_uint8=True``, ``video`` features as uint8 ``(3, H, W)``. The float ones go back to
    uint8 by rounding; the largest distance to an integer level is reported so that a float that
    is not ``level / 255`` cannot hide.
    """
    arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if dtype in ("image", "video"):
        if arr.ndim == 3 and arr.shape[0] == 3:
            arr = np.moveaxis(arr, 0, -1)
        if arr.dtype != np.uint8:
            scaled = arr.astype(np.float64) * 255.0
            err = float(np.abs(scaled - np.round(scaled)).max())
            pixel_error[key] = max(pixel_error.get(key, 0.0), err)
            arr = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return arr


def _rows(ds, features: dict) -> tuple[dict[str, np.ndarray], list[str], dict, dict]:
    columns: dict[str, list] = {k: [] for k, f in features.items() if f["dtype"] != "string"}
    torch_dtypes: dict[str, str] = {}
    pixel_error: dict[str, float] = {}
    tasks = []
    for i in range(len(ds)):
        item = ds[i]
        for key in columns:
            torch_dtypes.setdefault(key, str(getattr(item[key], "dtype", type(item[key]).__name__)))
            columns[key].append(_to_numpy(item[key], key, features[key]["dtype"], pixel_error))
        tasks.append(item["task"])
    return {k: np.stack(v) for k, v in columns.items()}, tasks, torch_dtypes, pixel_error


def _windows(args: argparse.Namespace, fps: int, features: dict) -> dict[str, np.ndarray]:
    from lerobot.datasets import LeRobotDataset

    offsets = json.loads(Path(args.windows).read_text())
    delta = {k: [o / fps for o in v] for k, v in offsets.items()}
    ds = LeRobotDataset(REPO_ID, root=args.root, delta_timestamps=delta, return_uint8=True)
    out: dict[str, list] = {}
    pixel_error: dict[str, float] = {}
    for i in range(len(ds)):
        item = ds[i]
        for key in offsets:
            value = item[key]
            if features[key]["dtype"] in ("image", "video"):
                value = np.stack(
                    [_to_numpy(v, key, features[key]["dtype"], pixel_error) for v in value]
                )
            else:
                value = value.detach().cpu().numpy()
            out.setdefault(f"win/{key}", []).append(value)
            out.setdefault(f"win/{key}_is_pad", []).append(item[f"{key}_is_pad"].numpy())
    return {k: np.stack(v) for k, v in out.items()}


def read(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq
    from lerobot.datasets import LeRobotDataset

    t0 = time.perf_counter()
    ds = LeRobotDataset(REPO_ID, root=args.root, return_uint8=True)
    meta = ds.meta
    features = {k: dict(f) for k, f in meta.features.items()}
    arrays, row_tasks, torch_dtypes, pixel_error = _rows(ds, features)
    if args.windows:
        arrays.update(_windows(args, meta.fps, features))
    tasks = sorted(meta.tasks.index, key=lambda t: int(meta.tasks.loc[t, "task_index"]))
    episodes = [
        {k: _jsonable(v) for k, v in row.items()}
        for row in meta.episodes.to_pandas().to_dict("records")
    ]
    # LeRobot's loader drops the per-episode ``stats/...`` columns (load_episodes); read them as
    # stored so the two writers' per-episode statistics can be compared.
    files = sorted((Path(args.root) / "meta/episodes").glob("*/*.parquet"))
    stored = [row for f in files for row in pq.read_table(f).to_pylist()]
    episode_stats = [{k: v for k, v in row.items() if k.startswith("stats/")} for row in stored]
    view = {
        "lerobot_version": metadata.version("lerobot"),
        "video_backend": ds._video_backend,
        "av_version": metadata.version("av"),
        "seconds": time.perf_counter() - t0,
        "fps": meta.fps,
        "total_episodes": meta.total_episodes,
        "total_frames": meta.total_frames,
        "features": _jsonable(features),
        "camera_keys": list(meta.camera_keys),
        "video_keys": list(meta.video_keys),
        "tasks": [str(t) for t in tasks],
        "row_tasks": row_tasks,
        "stats": _jsonable(meta.stats or {}),
        "episodes": episodes,
        "episode_stats": _jsonable(episode_stats),
        "torch_dtypes": torch_dtypes,
        "pixel_float_error": pixel_error,
    }
    np.savez(args.out, **arrays)
    Path(args.meta).write_text(json.dumps(view, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the --truth episodes as a LeRobot dataset")
    w.add_argument("--truth", required=True, help=".npz of e{episode}/{feature} arrays")
    w.add_argument("--spec", required=True, help=".json: fps, features, episodes [{task, length}]")
    w.add_argument("--root", required=True, help="dataset folder to create (must not exist)")
    w.add_argument("--report", required=True, help=".json written with codecs and timing")
    r = sub.add_parser("read", help="dump a dataset folder as LeRobot reads it")
    r.add_argument("--root", required=True)
    r.add_argument("--out", required=True, help=".npz of per-row arrays (and win/... windows)")
    r.add_argument("--meta", required=True, help=".json of metadata, tasks and stats")
    r.add_argument("--windows", help=".json {feature: [frame offsets]} for delta_timestamps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    {"write": write, "read": read}[args.command](args)


if __name__ == "__main__":
    main()
