"""Comparisons of ``check_lerobot_interop.py``: one dataset folder as f1kit's reader and LeRobot's
see it (reader agreement), and two folders written from the same episodes by f1kit and by LeRobot
(writer agreement). Every difference becomes a `Mismatch` naming the feature and both sides.

Exact unless said otherwise: numeric values bit for bit, PNG frames pixel for pixel, stats.json
values as read. Video frames compare within `VIDEO_SAME_FILE` (two decoders of one file) or
`VIDEO_VS_TRUTH` (decoded against the frames before encoding; lossy codec).
"""

from dataclasses import dataclass, field

import numpy as np

# Two decoders (f1kit: PyAV; LeRobot: torchcodec or PyAV) of the same file: both convert the same
# yuv420p planes to RGB, so they agree up to rounding in the colour conversion.
VIDEO_SAME_FILE = {"max_abs": 3, "mean_abs": 0.5}
# Decoded against the frames before encoding. Lossy codecs (LeRobot: AV1 crf 30, ~6 levels mean
# error here; f1kit: H.264 crf 18, ~5.5) on smooth 32x48 frames; consecutive frames of the pattern
# differ by > 50 levels on average, and each decoded frame must also be nearest its own frame.
VIDEO_VS_TRUTH = {"mean_abs": 10.0}
# Writer agreement of statistics computed by two implementations from the same values: min, max
# and count exactly at float32 precision (the data are float32 or uint8 / 255; f1kit keeps float64,
# LeRobot float32); mean and std to this tolerance (LeRobot accumulates in float32 and takes
# std = sqrt(E[x^2] - E[x]^2), ~1e-5 relative; f1kit float64); quantiles not (different
# estimators: np.quantile in f1kit, a 5000-bin histogram per episode averaged over episodes in
# LeRobot).
STATS_RTOL, STATS_ATOL = 1e-4, 1e-6
EXACT_STATS = ("min", "max", "count")
CLOSE_STATS = ("mean", "std")


@dataclass
class Mismatch:
    where: str
    feature: str
    f1kit: str
    lerobot: str

    def __str__(self) -> str:
        pad = "\n      "
        return (
            f"[{self.where}] {self.feature}{pad}f1kit:   {self.f1kit}{pad}LeRobot: {self.lerobot}"
        )


@dataclass
class Report:
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, where: str, feature: str, f1kit: str, lerobot: str) -> None:
        self.mismatches.append(Mismatch(where, feature, f1kit, lerobot))

    def grouped(self) -> list[Mismatch]:
        """Mismatches with the same feature and texts found in several places, listed once."""
        groups: dict[tuple[str, str, str], list[str]] = {}
        for m in self.mismatches:
            wheres = groups.setdefault((m.feature, m.f1kit, m.lerobot), [])
            if m.where not in wheres:
                wheres.append(m.where)
        return [Mismatch(" | ".join(w), *key) for key, w in groups.items()]


def _short(x, limit: int = 160) -> str:
    text = np.array2string(np.asarray(x), threshold=12, precision=6, max_line_width=10_000)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_diff(a: np.ndarray, b: np.ndarray) -> tuple[str, str]:
    """(f1kit side, LeRobot side) texts for the first differing value of two equal-shape arrays."""
    bad = np.argwhere(~((a == b) | (np.isnan(a) & np.isnan(b))) if a.dtype.kind == "f" else a != b)
    at = tuple(int(i) for i in bad[0])
    return (
        f"{len(bad)} of {a.size} values differ; at {at}: {a[at].item()!r}",
        f"at {at}: {b[at].item()!r}",
    )


def compare_values(rep: Report, where: str, key: str, f1: np.ndarray, lr: np.ndarray) -> None:
    """Exact comparison of two per-row arrays (same values, same shape, any dtype)."""
    f1, lr = np.asarray(f1), np.asarray(lr)
    if f1.shape != lr.shape:
        rep.add(where, key, f"shape {f1.shape}", f"shape {lr.shape}")
        return
    a, b = f1.astype(np.float64), lr.astype(np.float64)
    if not np.array_equal(a, b, equal_nan=True):
        rep.add(where, key, *_first_diff(a, b))


def video_error(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


def compare_frames(
    rep: Report,
    where: str,
    key: str,
    kind: str,
    f1: np.ndarray,
    lr: np.ndarray,
    same_decoder: bool = True,
) -> None:
    """f1kit's and LeRobot's frames of one camera: exact for ``image``, else within tolerance.

    ``same_decoder`` False: the two sides decode video with different libraries (e.g. PyAV 18 in
    f1kit's venv, PyAV 15 pinned by LeRobot; their bundled AV1 decoders differ on odd-sized 4:4:4
    frames by up to ~36 levels, ~4 on average). Only the mean is then held, to `VIDEO_VS_TRUTH`'s
    bound: a frame from the wrong time (a shifted window) still fails it, as consecutive frames
    differ by > 50 levels; each side is also held to the written frames by `compare_to_truth`."""
    if f1.shape != lr.shape:
        rep.add(where, key, f"frames {f1.shape}", f"frames {lr.shape}")
        return
    if kind == "image":
        if not np.array_equal(f1, lr):
            mine, theirs = _first_diff(f1, lr)
            rep.add(where, key, "PNG frames: " + mine, theirs)
        return
    mx, mean = video_error(f1, lr)
    rep.notes.append(
        f"{where} {key}: f1kit vs LeRobot decode of the same video: max |d| {mx}, mean {mean:.3f}"
    )
    if not same_decoder:
        rep.notes[-1] += f" (other decoder libraries: mean held to {VIDEO_VS_TRUTH['mean_abs']})"
        if mean > VIDEO_VS_TRUTH["mean_abs"]:
            rep.add(
                where,
                key,
                f"video frames differ from LeRobot's decode of the same file: mean {mean:.3f}",
                f"(tolerance across decoder libraries: mean {VIDEO_VS_TRUTH['mean_abs']})",
            )
    elif mx > VIDEO_SAME_FILE["max_abs"] or mean > VIDEO_SAME_FILE["mean_abs"]:
        rep.add(
            where,
            key,
            f"video frames differ from LeRobot's decode of the same file: max |d| {mx},"
            f" mean {mean:.3f}",
            f"(tolerance: max {VIDEO_SAME_FILE['max_abs']}, mean {VIDEO_SAME_FILE['mean_abs']};"
            " the decoders are named in the notes)",
        )


def compare_to_truth(
    rep: Report, where: str, side: str, key: str, kind: str, got: np.ndarray, truth: np.ndarray
) -> None:
    """One reader's frames against the frames that were written; video also checks alignment."""
    if got.shape != truth.shape:
        rep.add(
            where,
            key,
            *(
                (f"frames {got.shape}, written {truth.shape}", "-")
                if side == "f1kit"
                else ("-", f"frames {got.shape}, written {truth.shape}")
            ),
        )
        return
    if kind == "image":
        if not np.array_equal(got, truth):
            msg = "PNG frames differ from the written ones: " + " vs written ".join(
                _first_diff(got, truth)
            )
            rep.add(where, key, *((msg, "-") if side == "f1kit" else ("-", msg)))
        return
    _, mean = video_error(got, truth)
    # Each decoded frame must be nearest to its own written frame, not a neighbour's.
    errs = np.abs(got[:, None].astype(np.int16) - truth[None].astype(np.int16)).mean(axis=(2, 3, 4))
    misaligned = np.flatnonzero(errs.argmin(axis=1) != np.arange(len(got)))
    rep.notes.append(f"{where} {key}: {side} decode vs written frames: mean |d| {mean:.2f}")
    if mean > VIDEO_VS_TRUTH["mean_abs"] or len(misaligned):
        msg = (
            f"video frames vs written: mean |d| {mean:.2f}"
            f" (tolerance {VIDEO_VS_TRUTH['mean_abs']}),"
            f" {len(misaligned)} rows nearer another written frame {misaligned[:8].tolist()}"
        )
        rep.add(where, key, *((msg, "-") if side == "f1kit" else ("-", msg)))


def compare_stats_read(rep: Report, where: str, f1: dict, lr: dict) -> None:
    """stats.json as f1kit's reader and LeRobot's report it for one folder: exact."""
    for key in sorted(set(f1) | set(lr)):
        if key not in lr:
            rep.add(where, f"stats {key}", f"has {sorted(f1[key])}", "no statistics")
            continue
        if key not in f1:
            rep.add(where, f"stats {key}", "no statistics", f"has {sorted(lr[key])}")
            continue
        names_f1, names_lr = set(f1[key]), set(lr[key])
        if names_f1 != names_lr:
            rep.add(where, f"stats {key}", f"stat names {sorted(names_f1)}", f"{sorted(names_lr)}")
        for stat in sorted(names_f1 & names_lr):
            a = np.atleast_1d(np.asarray(f1[key][stat], dtype=np.float64))
            b = np.atleast_1d(np.asarray(lr[key][stat], dtype=np.float64))
            if a.shape != b.shape or not np.array_equal(a, b):
                rep.add(
                    where, f"stats {key}/{stat}", f"{a.shape} {_short(a)}", f"{b.shape} {_short(b)}"
                )


def compare_stats_written(
    rep: Report, where: str, f1: dict, lr: dict, what: str = "stats.json", schema: bool = True
) -> None:
    """Statistics f1kit and LeRobot computed from the same episodes (see `STATS_RTOL`); with
    ``schema`` also which features and stat names one side lacks (one line per kind of gap)."""
    if schema:
        for side, mine, other in (("f1kit", f1, lr), ("LeRobot", lr, f1)):
            missing = sorted(set(other) - set(mine))
            if missing:
                text = (f"no statistics for {missing}", "has them")
                rep.add(where, f"{what}: features", *(text if side == "f1kit" else text[::-1]))
        gaps: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        for key in sorted(set(f1) & set(lr)):
            gap = (
                tuple(sorted(set(lr[key]) - set(f1[key]))),
                tuple(sorted(set(f1[key]) - set(lr[key]))),
            )
            if gap != ((), ()):
                gaps.setdefault(gap, []).append(key)
        for (only_lr, only_f1), keys in gaps.items():
            rep.add(
                where,
                f"{what}: stat names of {keys}",
                (f"lacks {list(only_lr)}" if only_lr else "")
                + (f"; has extra {list(only_f1)}" if only_f1 else ""),
                f"has {sorted(lr[keys[0]])}",
            )
    for key in sorted(set(f1) & set(lr)):
        for stat in EXACT_STATS + CLOSE_STATS:
            if stat not in f1[key] or stat not in lr[key]:
                continue
            a = np.asarray(f1[key][stat], dtype=np.float64)
            b = np.asarray(lr[key][stat], dtype=np.float64)
            if a.shape != b.shape:
                rep.add(where, f"{what} {key}/{stat}", f"shape {a.shape}", f"shape {b.shape}")
            if a.size != b.size:
                continue
            a, b = a.ravel(), b.ravel()
            ok = (
                np.array_equal(a.astype(np.float32), b.astype(np.float32))
                if stat in EXACT_STATS
                else np.allclose(a, b, rtol=STATS_RTOL, atol=STATS_ATOL)
            )
            if not ok:
                rep.add(where, f"{what} {key}/{stat}", _short(a), _short(b))


def episode_stats(rows: list[dict]) -> list[dict[str, dict[str, object]]]:
    """Per-episode ``stats/<feature>/<stat>`` columns as ``{feature: {stat: value}}``."""
    out = []
    for row in rows:
        nested: dict[str, dict[str, object]] = {}
        for col, value in row.items():
            feature, stat = col[len("stats/") :].rsplit("/", 1)
            nested.setdefault(feature, {})[stat] = value
        out.append(nested)
    return out


def compare_features(rep: Report, where: str, f1: dict, lr: dict) -> None:
    """info.json features f1kit and LeRobot wrote for the same episodes: dtype, shape, names."""
    for key in sorted(set(f1) | set(lr)):
        if key not in f1 or key not in lr:
            rep.add(
                where,
                f"info.json {key}",
                "present" if key in f1 else "absent",
                "present" if key in lr else "absent",
            )
            continue
        for attr in ("dtype", "shape", "names"):
            a, b = f1[key].get(attr), lr[key].get(attr)
            if attr == "shape":
                a, b = list(a), list(b)
            if a != b:
                rep.add(where, f"info.json {key} {attr}", repr(a), repr(b))
