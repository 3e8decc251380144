#!/usr/bin/env python3
"""Round-trip check of f1kit's LeRobotDataset v3.0 folders against LeRobot itself (lerobot 0.6.1).

Run it with f1kit's Python (``.venv/bin/python scripts/check_lerobot_interop.py``). LeRobot needs
Python >= 3.12, so it lives in a virtual environment of its own (default
``~/.cache/f1kit/lerobot-venv``, ``--venv`` to move it), built on the first run and reused after;
``lerobot_interop_helper.py`` runs inside it. The two processes exchange ``.npz`` and ``.json``
files only.

1. LeRobot writes: ``LeRobotDataset.create`` with a PNG camera, two video cameras (one of odd
   size), a 6-d ``observation.state``, a 7-d ``action``, a bool ``next.done``, a float
   ``next.reward``, two tasks and three short episodes; f1kit's ``read_dataset`` reads it.
2. f1kit writes: ``write_dataset`` the same episodes, once with PNG and once with video cameras;
   LeRobot reads them (``LeRobotDataset(repo_id, root=...)``, offline).

Each folder is read by both sides and compared: frames, every numeric feature, the index columns,
tasks (list and per row), episode ranges, stats.json, and ``delta_timestamps`` windows against
f1kit's ``WindowedDataset``; both are also checked against the episodes that were written. For 2,
what f1kit wrote (info.json features, stats.json, per-episode stats) is compared with what LeRobot
wrote for the same episodes in 1. Tolerances: see ``lerobot_interop_compare.py``.

Exit status: 0 all matched (or skipped: no Python >= 3.12, or no package registry for the first
install; the reason is printed), 1 mismatches (listed), 2 the check itself could not run.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lerobot_interop_compare import (
    Report,
    compare_features,
    compare_frames,
    compare_stats_read,
    compare_stats_written,
    compare_to_truth,
    compare_values,
    episode_stats,
)
from lerobot_interop_episodes import (
    CAMERAS,
    CHUNK,
    EPISODES,
    FORESIGHT,
    FPS,
    HISTORY,
    INDEX,
    NUMERIC,
    TASKS,
    lerobot_spec,
    make_truth,
    truth_rows,
    window_offsets,
)
from lerobot_interop_venv import (
    DEFAULT_VENV,
    LEROBOT_VERSION,
    SetupError,
    Skip,
    ensure_venv,
    find_python,
    run_helper,
    venv_ready,
)


def _opts(**paths: Path) -> list[str]:
    return [x for key, path in paths.items() for x in (f"--{key}", str(path))]


def _av_version() -> str:
    try:
        import av

        return av.__version__
    except ImportError:
        return "not installed"


def same_decoder(view: dict) -> bool:
    """Whether LeRobot decoded video with the PyAV f1kit uses (backend and version)."""
    return view.get("video_backend") == "pyav" and view.get("av_version") == _av_version()


class Check:
    """One run: the work folder, the LeRobot venv, the episodes and the report."""

    def __init__(self, workdir: Path, venv: Path, seed: int) -> None:
        self.work, self.venv = workdir, venv
        self.truth = make_truth(seed)
        np.savez(workdir / "truth.npz", **self.truth)
        (workdir / "windows.json").write_text(json.dumps(window_offsets()))
        self.rep = Report()
        self.lerobot_views: dict[str, dict] = {}

    def helper(self, args: list[str], name: str) -> tuple[int, str]:
        t0 = time.perf_counter()
        status, tail = run_helper(self.venv, self.work, args, name)
        outcome = "ok" if status == 0 else f"exit {status}"
        print(f"  LeRobot {name}: {outcome} ({time.perf_counter() - t0:.1f} s)")
        return status, tail

    def lerobot_write(self, name: str, kinds: dict[str, str], numeric: dict) -> Path | None:
        root, spec = self.work / name, self.work / f"{name}.spec.json"
        spec.write_text(json.dumps(lerobot_spec(kinds, numeric)))
        report = self.work / f"{name}.write.json"
        truth = self.work / "truth.npz"
        status, tail = self.helper(
            ["write", *_opts(truth=truth, spec=spec, root=root, report=report)],
            f"write {name}",
        )
        if status != 0:
            self.rep.notes.append(f"LeRobot could not write {name}:\n{tail}")
            return None
        codecs = json.loads((self.work / f"{name}.write.json").read_text())["video_codecs"]
        if codecs:
            self.rep.notes.append(f"{name}: LeRobot encoded video with {codecs}")
        return root

    def lerobot_read(self, where: str, root: Path) -> tuple[dict, dict] | None:
        out, meta = self.work / f"{root.name}.lerobot.npz", self.work / f"{root.name}.lerobot.json"
        windows = self.work / "windows.json"
        status, tail = self.helper(
            ["read", *_opts(root=root, out=out, meta=meta, windows=windows)],
            f"read {root.name}",
        )
        if status != 0:
            self.rep.add(
                where, "LeRobotDataset(root=...)", "wrote this folder", f"cannot read it:\n{tail}"
            )
            return None
        with np.load(out, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        view = json.loads(meta.read_text())
        self.lerobot_views[root.name] = view
        if not any(n.startswith("decoders:") for n in self.rep.notes):
            self.rep.notes.insert(
                0,
                f"decoders: f1kit PyAV {_av_version()}; LeRobot video backend "
                f"{view['video_backend']}, PyAV {view['av_version']}",
            )
        return arrays, view

    def f1kit_read(self, where: str, root: Path):
        from f1kit.data import read_dataset

        try:
            return read_dataset(root)
        except Exception as err:  # the crash itself is the finding
            last = traceback.extract_tb(err.__traceback__)[-1]
            self.rep.add(
                where,
                "read_dataset",
                f"raised {type(err).__name__}: {err} (at {Path(last.filename).name}:{last.lineno})",
                "reads this folder",
            )
            return None

    def compare_readers(self, where: str, root: Path, ds, arrays: dict, view: dict) -> None:
        """Everything f1kit's reader and LeRobot's report for one folder, and both vs the truth."""
        rep, n = self.rep, len(ds)
        rows = np.arange(n)
        features = view["features"]
        first = ds.episode(0).arrays
        for key, feat in features.items():
            kind = feat["dtype"]
            if kind == "string":
                continue
            if key not in arrays:
                rep.add(
                    where, key, "-", f"in info.json but not in LeRobot's items ({sorted(arrays)})"
                )
                continue
            lr = arrays[key]
            if kind in ("image", "video"):
                if key not in ds.image_keys:
                    rep.add(where, key, "not among the cameras read", f"{kind} {lr.shape}")
                    continue
                f1 = ds.frames(key, rows)
                compare_frames(rep, where, key, kind, f1, lr, same_decoder(view))
                if key in CAMERAS:
                    compare_to_truth(
                        rep, where, "f1kit", key, kind, f1, truth_rows(self.truth, key)
                    )
                    compare_to_truth(
                        rep, where, "LeRobot", key, kind, lr, truth_rows(self.truth, key)
                    )
                continue
            lr = lr.reshape(n, -1)
            if key in INDEX:
                compare_values(rep, where, key, getattr(ds, key)[:, None], lr)
            elif key == "index":
                compare_values(
                    rep, where, key, rows[:, None], lr
                )  # f1kit's rows are in index order
            elif key == "timestamp":
                continue  # f1kit keeps no timestamps (frame_index / fps)
            elif key not in ds.numeric:
                rep.add(where, key, "no such numeric feature read", f"{kind} {lr.shape}")
            else:
                compare_values(rep, where, key, ds.numeric[key], lr)
                compare_values(
                    rep,
                    where,
                    f"{key} (f1kit vs written)",
                    ds.numeric[key],
                    truth_rows(self.truth, key).astype(np.float32),
                )
                f1_dtype = str(first[key].dtype) if key in first else "-"
                lr_dtype = view["torch_dtypes"][key].removeprefix("torch.")
                if f1_dtype != lr_dtype:
                    rep.add(
                        where,
                        f"{key} dtype",
                        f"RobotDataset.episode(): {f1_dtype}",
                        f"item: {lr_dtype}",
                    )
        for key in sorted(set(ds.numeric) - set(features)):
            rep.add(where, key, "read as a numeric feature", "no such feature")
        for key, err in view["pixel_float_error"].items():
            if err > 1e-3:
                rep.add(where, key, "-", f"image floats are not level/255 (off by up to {err:.4f})")
        if list(ds.tasks) != view["tasks"]:
            rep.add(where, "tasks", repr(list(ds.tasks)), repr(view["tasks"]))
        row_tasks = [ds.tasks[int(i)] for i in ds.task_index]
        if row_tasks != view["row_tasks"]:
            bad = next(
                i
                for i, (a, b) in enumerate(zip(row_tasks, view["row_tasks"], strict=False))
                if a != b
            )
            rep.add(
                where,
                "task per row",
                f"row {bad}: {row_tasks[bad]!r}",
                repr(view["row_tasks"][bad]),
            )
        written = [TASKS[task] for task, t in EPISODES for _ in range(t)]
        if row_tasks != written:
            rep.add(where, "task per row (f1kit vs written)", "differs from the written tasks", "-")
        lr_bounds = [[e["dataset_from_index"], e["dataset_to_index"]] for e in view["episodes"]]
        if ds.episode_bounds.tolist() != lr_bounds:
            rep.add(where, "episode ranges", str(ds.episode_bounds.tolist()), str(lr_bounds))
        compare_stats_read(rep, where, ds.stats, view["stats"])
        self.compare_windows(where, ds, arrays, view)

    def compare_windows(self, where: str, ds, arrays: dict, view: dict) -> None:
        """LeRobot's delta_timestamps windows against f1kit's WindowedDataset (no normalisation)."""
        import torch

        from f1kit.data import WindowConfig, WindowedDataset

        rep, w, features = self.rep, f"{where} window", view["features"]

        def samples(image_keys: tuple[str, ...]) -> list[dict]:
            cfg = WindowConfig(
                history=HISTORY,
                foresight=FORESIGHT,
                chunk=CHUNK,
                image_keys=image_keys,
                normalization="identity",
            )
            return list(WindowedDataset([ds], cfg))

        try:
            plain = samples(())
            actions = np.stack([s["action"].numpy() for s in plain])
            compare_values(rep, w, "action", actions, arrays["win/action"])
            action_pad = np.stack([s["action_is_pad"].numpy() for s in plain])
            compare_values(rep, w, "action_is_pad", action_pad, arrays["win/action_is_pad"])
            for key in ds.image_keys:  # one camera at a time: their sizes differ
                cam = samples((key,))
                frames = np.stack(
                    [
                        torch.cat([s["history"][:, 0], s["foresight"][None, 0]])
                        .permute(0, 2, 3, 1)
                        .numpy()
                        for s in cam
                    ]
                )
                pads = np.stack(
                    [np.r_[s["history_is_pad"].numpy(), s["foresight_is_pad"].item()] for s in cam]
                )
                compare_frames(
                    rep, w, key, features[key]["dtype"], frames, arrays[f"win/{key}"],
                    same_decoder(view),
                )  # fmt: skip
                compare_values(rep, w, f"{key}_is_pad", pads, arrays[f"win/{key}_is_pad"])
        except Exception as err:
            rep.add(w, "WindowedDataset", f"raised {type(err).__name__}: {err}", "-")

    def direction_1(self) -> Path | None:
        print("1. LeRobot writes, f1kit reads")
        kinds = {k: kind for k, (kind, _, _) in CAMERAS.items()}
        root = self.lerobot_write("lerobot-wrote", kinds, NUMERIC)
        if root is None:  # e.g. no video encoder: images only
            kinds = dict.fromkeys(CAMERAS, "image")
            root = self.lerobot_write("lerobot-wrote-images", kinds, NUMERIC)
            if root is None:
                raise SetupError("LeRobot could not write a dataset here:\n" + self.rep.notes[-1])
            self.rep.notes.append("LeRobot's video encoding failed here; direction 1 used PNG only")
        self.read_both("1 lerobot-wrote", root)
        return root

    def read_both(self, where: str, root: Path) -> bool:
        lerobot = self.lerobot_read(where, root)
        ds = self.f1kit_read(where, root)
        if ds is not None and lerobot is not None:
            self.compare_readers(where, root, ds, *lerobot)
        return ds is not None

    def direction_1_without_bool(self) -> None:
        """After f1kit's reader crashed: the folder without bool features, to check the rest."""
        numeric = {k: v for k, v in NUMERIC.items() if v[0] != "bool"}
        kinds = {k: kind for k, (kind, _, _) in CAMERAS.items()}
        root = self.lerobot_write("lerobot-wrote-nobool", kinds, numeric)
        if root is not None:
            self.read_both("1b lerobot-wrote, bool features left out", root)

    def direction_2(self, images: str, reference: str | None) -> None:
        from f1kit.data import Episode, write_dataset

        name = f"f1kit-wrote-{images}"
        where = f"2 {name}"
        print(f"2. f1kit writes ({images} cameras), LeRobot reads")
        keys = [*CAMERAS, *NUMERIC]
        episodes = [
            Episode(TASKS[task], {k: self.truth[f"e{e}/{k}"] for k in keys})
            for e, (task, _) in enumerate(EPISODES)
        ]
        names = {k: v[1] for k, v in NUMERIC.items() if v[1]}
        try:
            root = write_dataset(self.work / name, episodes, FPS, images=images, names=names)
        except Exception as err:
            self.rep.add(where, "write_dataset", f"raised {type(err).__name__}: {err}", "-")
            return
        self.read_both(where, root)
        view, ref = self.lerobot_views.get(name), self.lerobot_views.get(reference or "")
        if view is None or ref is None:
            self.rep.notes.append(
                f"{where}: writer comparison skipped (no LeRobot-written reference)"
            )
            return
        written = f"{where} vs LeRobot's own"
        ours, theirs = view["features"], ref["features"]
        for key in CAMERAS:  # storage kind differs on purpose; compare the rest
            for feats in (ours, theirs):
                if key in feats:
                    feats[key] = {**feats[key], "dtype": "visual"}
        compare_features(self.rep, written, ours, theirs)
        compare_stats_written(self.rep, written, view["stats"], ref["stats"])
        mine, other = episode_stats(view["episode_stats"]), episode_stats(ref["episode_stats"])
        for e, (a, b) in enumerate(zip(mine, other, strict=True)):
            # Which features and stats are missing is the same for every episode: list it once.
            compare_stats_written(
                self.rep, written, a, b, what=f"per-episode stats (episode {e})", schema=e == 0
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"LeRobot's virtual environment, made if missing (default {DEFAULT_VENV})",
    )
    parser.add_argument(
        "--python", help="the Python >= 3.12 to build the venv with (default: search)"
    )
    parser.add_argument("--reinstall", action="store_true", help="rebuild the venv")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the datasets and dumps here (default: a temp folder, removed)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    args = parser.parse_args()
    t_start = time.perf_counter()
    print(f"f1kit <-> LeRobot {LEROBOT_VERSION} dataset interop check")
    venv = args.venv.expanduser()
    try:
        if venv_ready(venv) and not args.reinstall:
            print(f"LeRobot venv: {venv} (reused)")
        else:
            python, version = find_python(args.python)
            print(f"Python for LeRobot's venv: {python} ({'.'.join(map(str, version))})")
            seconds = ensure_venv(venv, python, args.reinstall, print)
            print(f"LeRobot venv: {venv} (installed in {seconds:.0f} s)")
    except Skip as why:
        print(f"SKIP: {why}")
        return 0
    except SetupError as err:
        print(f"ERROR: {err}")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="f1kit-lerobot-interop-"))
    if args.workdir:
        # Only a folder this script made before (it holds truth.npz) or an empty one is cleared.
        if workdir.exists() and any(workdir.iterdir()):
            if not (workdir / "truth.npz").exists():
                print(f"ERROR: --workdir {workdir} is not empty and not an earlier work folder")
                return 2
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        check = Check(workdir, venv, args.seed)
        reference = check.direction_1()
        if any(m.feature == "read_dataset" for m in check.rep.mismatches):
            check.direction_1_without_bool()
        for images in ("png", "video"):
            check.direction_2(images, reference.name if reference else None)
    except SetupError as err:
        print(f"ERROR: {err}")
        return 2
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    rep = check.rep
    print("\nNotes:")
    for note in rep.notes:
        print(f"  {note}")
    print(f"\nRun time {time.perf_counter() - t_start:.0f} s.")
    if rep.mismatches:
        grouped = rep.grouped()
        print(f"\nFAIL: {len(grouped)} mismatches between f1kit and LeRobot {LEROBOT_VERSION}:")
        for m in grouped:
            print(f"  {m}")
        return 1
    print(f"\nOK: f1kit and LeRobot {LEROBOT_VERSION} agree on every compared feature.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
