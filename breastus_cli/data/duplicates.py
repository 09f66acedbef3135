"""Near-duplicate images: the same scan re-saved, re-compressed, re-scaled or shifted a little.

Public breast-ultrasound sets hold such twins without saying so; a random split then puts one
twin in training and the other in test, and the test numbers are optimistic. Each image is
reduced once (while ``prepare`` decodes it) to a 64x64 thumbnail: area-averaged, so a
re-compression or a re-scaling lands on the same grid, and lightly blurred (sigma 1 thumbnail
pixel). Two images' similarity is the Pearson correlation of their thumbnails, the larger
over shifts of up to 2 thumbnail pixels (about 3% of the image) of the second, so a scan
shifted or cropped by a few pixels still matches itself. Measured on BrEaST and on synthetic
cases: distinct images stay below 0.89, twins shifted by 1% of the image, cropped, re-scaled
to 75% or re-saved as JPEG (quality 60) lie above 0.95.

All pairs are compared on 16x16 reductions first (one matrix product per shift of up to 1
pixel, in blocks of rows to bound memory); only pairs within :data:`COARSE_MARGIN` of the
threshold there are compared at 64x64, each image's shifted windows cut once and met by all
its candidates in one matrix product. BUS-BRA's 1,875 images: 15,458 candidates of 1.76 M
pairs, 2.3 s of CPU on the 2-core machine here::

    thumbs = np.stack([thumbnail(img) for img in images])     # (n, 64, 64) float32
    pairs = similar_pairs(thumbs, 0.95)                        # [(i, j, 0.987), ...] i < j
    group = dup_groups(case_ids, pairs)                        # its group's name per case

A group is a connected component of the twin graph, named by its first case id (a case
without a twin is its own group), so ``split`` can keep each group in one split and fold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

#: thumbnail side in pixels
THUMB = 64
#: the shift search: up to SHIFT thumbnail pixels each way (COARSE_SHIFT at the coarse side)
SHIFT = 2
COARSE = 16
COARSE_SHIFT = 1
#: a pair is compared at full thumbnail size when its coarse similarity reaches
#: ``threshold - COARSE_MARGIN`` (the twins above measured 0.84 or more at 16x16)
COARSE_MARGIN = 0.15
#: pairs whose similarity reaches this are near-duplicates (``--dup-threshold``)
DEFAULT_THRESHOLD = 0.95
#: rows of the coarse similarity matrix computed at once (BLOCK x n float32 values)
BLOCK = 1024
#: what prepare.json and metrics.json name the method by
METHOD = (f"{THUMB}x{THUMB} thumbnail correlation (blurred, best of shifts up to {SHIFT} "
          "pixels)")


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The image's THUMB x THUMB area-averaged, lightly blurred float32 thumbnail."""
    import cv2

    small = cv2.resize(np.ascontiguousarray(image), (THUMB, THUMB),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(small, (0, 0), 1.0)


def _unit(rows: np.ndarray) -> np.ndarray:
    """Each row centred and of unit length (a flat row stays zero: it matches nothing)."""
    rows = rows - rows.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 1e-6)


def _window(grids: np.ndarray, dy: int, dx: int, shift: int) -> np.ndarray:
    """The (side - 2 shift)^2 window of each grid moved by (dy, dx), as unit rows."""
    side = grids.shape[-1]
    part = grids[:, shift + dy:side - shift + dy, shift + dx:side - shift + dx]
    return _unit(part.reshape(len(grids), -1))


def _offsets(shift: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]


def _coarse_candidates(thumbs: np.ndarray, floor: float,
                       block: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) whose 16x16 reductions correlate at ``floor`` or more at some shift."""
    n = len(thumbs)
    k = THUMB // COARSE
    coarse = thumbs.reshape(n, COARSE, k, COARSE, k).mean(axis=(2, 4))
    centre = _window(coarse, 0, 0, COARSE_SHIFT)
    moved = [_window(coarse, dy, dx, COARSE_SHIFT) for dy, dx in _offsets(COARSE_SHIFT)]
    first, second = [], []
    for start in range(0, n, block):
        rows = centre[start:start + block]
        best = rows @ moved[0].T
        for m in moved[1:]:
            np.maximum(best, rows @ m.T, out=best)
        # each pair once (j > i), no self-pairs
        best[np.arange(n)[None, :] <= np.arange(start, start + len(rows))[:, None]] = -np.inf
        i, j = np.nonzero(best >= floor)
        first.append(i + start)
        second.append(j)
    if not first:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(first), np.concatenate(second)


def pair_similarity(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The similarity of each pair ``(i[k], j[k])`` of thumbnails: the best correlation of
    i's centre window with j's window over shifts of up to SHIFT pixels. Each j's shifted
    windows are cut once and meet all its partners' centres in one matrix product."""
    side = THUMB - 2 * SHIFT
    out = np.empty(len(i), np.float32)
    if not len(i):
        return out
    centres = _window(thumbs, 0, 0, SHIFT)
    order = np.argsort(j, kind="stable")
    firsts = np.flatnonzero(np.r_[True, np.diff(j[order]) != 0])
    for rows in np.split(order, firsts[1:]):
        other = np.lib.stride_tricks.sliding_window_view(thumbs[j[rows[0]]], (side, side))
        windows = _unit(other.reshape(-1, side * side))  # (2 SHIFT + 1)^2 shifted windows
        out[rows] = (centres[i[rows]] @ windows.T).max(axis=1)
    return out


def similar_pairs(thumbs: np.ndarray | Sequence[np.ndarray], threshold: float,
                  block: int = BLOCK) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, similarity)``, ``i < j``, of thumbnails whose similarity reaches
    ``threshold``, in (i, j) order."""
    thumbs = np.asarray(thumbs, dtype=np.float32).reshape(-1, THUMB, THUMB)
    if len(thumbs) < 2:
        return []
    i, j = _coarse_candidates(thumbs, threshold - COARSE_MARGIN, block)
    sims = pair_similarity(thumbs, i, j)
    keep = sims >= threshold
    return sorted((int(a), int(b), float(s)) for a, b, s in zip(i[keep], j[keep], sims[keep]))


def components(keys: Sequence[str], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each key -> the smallest key of its connected component under ``links`` (union-find)."""
    parent = {key: key for key in keys}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {key: root(key) for key in keys}


def dup_groups(case_ids: Sequence[str], pairs: Iterable[tuple[int, int, float]]) -> list[str]:
    """The ``dup_group`` of each case: the first case id of its twin component."""
    ids = [str(c) for c in case_ids]
    group = components(ids, ((ids[i], ids[j]) for i, j, _ in pairs))
    return [group[c] for c in ids]


def find(case_ids: Sequence[str], thumbs: np.ndarray,
         threshold: float = DEFAULT_THRESHOLD) -> tuple[list[str], list[dict[str, object]]]:
    """(``dup_group`` per case, the pairs as prepare.json lists them: ``a``, ``b``,
    ``similarity``)."""
    pairs = similar_pairs(thumbs, threshold)
    ids = [str(c) for c in case_ids]
    listed = [{"a": ids[i], "b": ids[j], "similarity": round(s, 4)} for i, j, s in pairs]
    return dup_groups(ids, pairs), listed


def thumbnails_of(paths: Sequence[str | Path]) -> np.ndarray:
    """Thumbnails of prepared images (luminance PNGs) read from disk: for manifests written
    before ``prepare`` recorded near-duplicates."""
    from breastus_cli.data.imaging import read_luminance

    return np.stack([thumbnail(read_luminance(Path(p))) for p in paths]) if len(paths) \
        else np.zeros((0, THUMB, THUMB), np.float32)


def groups_of(frame, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """The ``dup_group`` of each row of a manifest frame with absolute ``image_path``: its
    own column when ``prepare`` wrote one, else found now from the images."""
    if "dup_group" in frame.columns:
        return [str(g) if str(g) else str(c) for g, c in zip(frame["dup_group"],
                                                             frame["case_id"])]
    return find(list(frame["case_id"]), thumbnails_of(list(frame["image_path"])), threshold)[0]


def twins_in(scored, seen, threshold: float = DEFAULT_THRESHOLD) -> dict[str, object]:
    """How many ``scored`` cases (a run's test cases) share a near-duplicate group with a case
    of ``seen`` (its training cases); both are manifest frames with ``image_path``. Groups are
    the manifest's ``dup_group`` when it has one, else found now from the images."""
    import pandas as pd

    both = pd.concat([scored.assign(_scored=True), seen.assign(_scored=False)],
                     ignore_index=True, sort=False)
    both = both.drop_duplicates("case_id", keep="first").reset_index(drop=True)
    source = "manifest" if "dup_group" in both.columns else "computed from the images"
    if "dup_group" in both.columns:
        both["dup_group"] = both["dup_group"].fillna("").astype(str)
    groups = np.array(groups_of(both, threshold))
    in_seen = set(groups[~both["_scored"].to_numpy()])
    flags = [g in in_seen for g in groups[both["_scored"].to_numpy()]]
    examples = [str(c) for c, f in zip(both.loc[both["_scored"], "case_id"], flags) if f]
    return {"method": METHOD, "threshold": threshold, "source": source,
            "n": int(len(flags)), "with_twin_in_training": int(sum(flags)),
            "cases": examples[:20]}
