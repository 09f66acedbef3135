"""``breastus prepare``: read a source layout, validate and decode every case, write a dataset.

Output (built in a temporary folder beside DATA, then renamed into place)::

    DATA/manifest.csv            one row per kept case, paths relative to DATA
    DATA/cls/<label>/<case>.png  luminance images by class (hard links to seg/images when possible)
    DATA/seg/images/<case>.png   the same images, for cases that have a lesion mask
    DATA/seg/masks/<case>.png    the union of the case's masks, 0/255
    DATA/prepare.json            settings, counts read/kept/skipped, every skipped row and why,
                                 the near-duplicate pairs found and their similarity

Near-duplicates (the same scan re-saved, shifted or re-scaled: :mod:`.duplicates`) are found
from thumbnails taken while each image is decoded; ``dup_group`` in manifest.csv names each
case's twin group (its own case id when it has none), which ``split`` keeps in one split.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from breastus_cli import __version__
from breastus_cli.atomic import uninterrupted, write_json
from breastus_cli.data import duplicates
from breastus_cli.data.imaging import DEFAULT_MAX_PIXELS, read_luminance, read_mask, save_png
from breastus_cli.data.manifest import CORE_COLUMNS, MANIFEST, PREPARE_JSON, file_sha256
from breastus_cli.data.sources import FORMATS, detect_format, reader
from breastus_cli.data.sources.base import LABELS, SkippedRow, SourceCase
from breastus_cli.errors import InputError, RowError, UsageError
from breastus_cli.ownership import check_out_not_in, ensure_replaceable

#: Reasons that are a policy (what the dataset is for), not a defect: ``--strict`` ignores them.
POLICY_REASONS = frozenset({"no tumor mask", "no lesion (normal class)", "class not used"})


@dataclass
class PrepareSettings:
    """Settings of ``breastus prepare`` (stored in prepare.json)."""

    source: Path
    out: Path
    format: str = "auto"
    strict: bool = False
    include_other_masks: bool = False
    overwrite: bool = False
    labels: tuple[str, ...] = LABELS
    workers: int = 0  # 0: one per CPU core
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are skipped, read from their header
    #: thumbnail correlation at or above which two images are near-duplicates (duplicates.py)
    dup_threshold: float = duplicates.DEFAULT_THRESHOLD

    def validate(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            raise UsageError(f"--format must be one of auto, {', '.join(FORMATS)} (got '{self.format}')")
        if not (math.isfinite(self.dup_threshold) and 0 < self.dup_threshold <= 1):
            raise UsageError(f"--dup-threshold must lie in (0, 1] (got {self.dup_threshold})")
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be at least 1 (got {self.max_pixels})")
        # A workbook's folder is the source folder (its image folder sits beside it).
        source = Path(self.source)
        check_out_not_in(self.out, [source.parent if source.is_file() else source])


@dataclass
class PrepareResult:
    """What ``prepare`` did; the CLI renders it."""

    out: Path
    format: str
    rows_read: int
    kept: int
    counts: dict[str, int]
    with_mask: int
    skipped: list[SkippedRow]
    image_size: dict[str, int]
    pixel_size_mm: dict[str, float | None]
    seconds: float
    manifest_sha256: str
    strict_problems: list[SkippedRow] = field(default_factory=list)
    #: near-duplicate pairs found (a, b, similarity) and the seconds their search took
    dup_pairs: list[dict[str, object]] = field(default_factory=list)
    dup_seconds: float = 0.0

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())


@dataclass
class _Decoded:
    case: SourceCase
    image: object  # np.ndarray (H, W) uint8
    mask: object | None  # np.ndarray (H, W) bool
    other: object | None = None  # np.ndarray (H, W) bool: 'other' masks kept apart


def _decode(case: SourceCase, include_other: bool,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> _Decoded:
    image = read_luminance(case.image_path, max_pixels)
    mask = None
    other = None
    paths = list(case.mask_paths) + (list(case.other_mask_paths) if include_other else [])
    if paths:
        mask = read_mask(paths, shape=image.shape, max_pixels=max_pixels)
        if case.mask_paths and not mask.any():
            raise RowError("tumor mask is empty", hint=case.mask_paths[0].name)
    if case.other_mask_paths and not include_other:
        # Kept beside the lesion mask so training can still add them (train-seg
        # --include-other-masks); a bad 'other' file costs the case nothing.
        try:
            other = read_mask(case.other_mask_paths, shape=image.shape, max_pixels=max_pixels)
        except RowError:
            other = None
    return _Decoded(case, image, mask, other)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # one copy of the pixels on disk; cls/ and seg/ share it
    except OSError:
        shutil.copyfile(src, dst)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_symlink():
        raise InputError(f"--out {out} is a symbolic link: give the folder it points to")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise InputError(f"--out {out} exists and is not empty; use --overwrite to replace it")
        ensure_replaceable(out, "dataset")  # --overwrite replaces only a dataset prepare wrote


def _folders_read(source: Path, scan_root: Path, cases: list[SourceCase]) -> list[Path]:
    """Every folder prepare reads from, as real paths (symbolic links followed)."""
    folders = {source.resolve().parent if source.is_file() else source.resolve(),
               Path(scan_root).resolve()}
    for case in cases:
        for path in (case.image_path, *case.mask_paths, *case.other_mask_paths):
            folders.add(Path(path).resolve().parent)
    return sorted(folders)


def prepare(
    settings: PrepareSettings,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Read, validate and decode a source layout into a normalized dataset.

    >>> prepare(PrepareSettings(Path("BrEaST-Lesions_USG"), Path("data/breast")))  # doctest: +SKIP
    """
    import pandas as pd

    start = time.perf_counter()
    settings.validate()
    source, out = Path(settings.source), Path(settings.out)
    if not source.exists():
        raise InputError(f"source not found: {source}")
    fmt = detect_format(source) if settings.format == "auto" else settings.format
    scan = reader(fmt).read(source, include_other_masks=settings.include_other_masks)
    # Before anything is written or replaced: --out is none of the folders read, holds none
    # of them and lies in none of them, and it is free or a dataset prepare wrote.
    check_out_not_in(out, _folders_read(source, scan.root, scan.cases))
    _check_out(out, settings.overwrite)

    skipped: list[SkippedRow] = list(scan.skipped)
    candidates: list[SourceCase] = []
    for case in scan.cases:
        if case.label in settings.labels:
            candidates.append(case)
        elif case.label == "normal":
            skipped.append(SkippedRow(case.case_id, "class not used", case.label))
        else:
            skipped.append(SkippedRow(case.case_id, "unknown class", case.label))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        rows, problems, thumbs = _write_cases(candidates, tmp, settings, on_progress)
        skipped.extend(problems)
        strict_problems = [s for s in skipped if s.reason not in POLICY_REASONS]
        if settings.strict and strict_problems:
            first = strict_problems[0]
            raise InputError(
                f"--strict: {len(strict_problems)} row(s) cannot be used; first: case "
                f"{first.case_id}: {first.reason}" + (f" ({first.value})" if first.value else "")
            )
        if not rows:
            raise InputError(f"no usable case in {source} ({len(skipped)} skipped)")
        extra_columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in CORE_COLUMNS]
        frame = pd.DataFrame(rows, columns=list(CORE_COLUMNS) + extra_columns)
        frame = frame.sort_values("case_id").reset_index(drop=True)
        found = time.perf_counter()
        frame["dup_group"], dup_pairs = duplicates.find(
            list(frame["case_id"]), [thumbs[str(c)] for c in frame["case_id"]],
            settings.dup_threshold)
        dup_seconds = round(time.perf_counter() - found, 3)
        # Integer columns with gaps (cases without a mask, cases outside a published fold)
        # would otherwise be written as floats (100.0).
        for column in ["lesion_area_px"] + [c for c in extra_columns if c.startswith("published_fold_")]:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
        frame.to_csv(tmp / MANIFEST, index=False)
        sha = file_sha256(tmp / MANIFEST)
        counts = {label: int((frame["label"] == label).sum()) for label in settings.labels}
        sizes = {
            "min_width": int(frame["width"].min()), "max_width": int(frame["width"].max()),
            "min_height": int(frame["height"].min()), "max_height": int(frame["height"].max()),
        }
        px = frame["pixel_size_mm"].dropna()
        pixel = {"min": float(px.min()) if len(px) else None,
                 "max": float(px.max()) if len(px) else None}
        result = PrepareResult(
            out=out, format=fmt, rows_read=scan.rows_read, kept=len(frame), counts=counts,
            with_mask=int((frame["mask"] != "").sum()), skipped=skipped, image_size=sizes,
            pixel_size_mm=pixel, seconds=0.0, manifest_sha256=sha, strict_problems=strict_problems,
            dup_pairs=dup_pairs, dup_seconds=dup_seconds,
        )
        result.seconds = round(time.perf_counter() - start, 3)
        write_json(tmp / PREPARE_JSON, _report(result, settings, source))
        with uninterrupted():  # a signal never leaves the old dataset gone and no new one
            if out.exists():
                shutil.rmtree(out)  # only reached with --overwrite or an empty folder
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_cases(
    cases: list[SourceCase],
    tmp: Path,
    settings: PrepareSettings,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[list[dict[str, object]], list[SkippedRow], dict[str, object]]:
    """Decode and write every case: (manifest rows, skipped rows, case_id -> thumbnail)."""
    workers = settings.workers or max(1, os.cpu_count() or 1)
    rows: list[dict[str, object]] = []
    problems: list[SkippedRow] = []
    thumbs: dict[str, object] = {}

    def work(case: SourceCase) -> tuple[dict[str, object], object] | SkippedRow:
        try:
            decoded = _decode(case, settings.include_other_masks, settings.max_pixels)
        except RowError as err:
            return SkippedRow(case.case_id, err.message, err.hint or "")
        # taken from the decoded pixels: the near-duplicate search decodes nothing again
        thumb = duplicates.thumbnail(decoded.image)  # type: ignore[arg-type]
        return _write_one(decoded, tmp), thumb

    total = len(cases)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done, outcome in enumerate(pool.map(work, cases), start=1):
            if isinstance(outcome, SkippedRow):
                problems.append(outcome)
            else:
                rows.append(outcome[0])
                thumbs[str(outcome[0]["case_id"])] = outcome[1]
            if on_progress is not None:
                on_progress(done, total)
    except BaseException:
        # interrupted or failed: drop the cases not begun, let the running ones finish, so
        # nothing writes into the temporary folder after the caller removes it
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return rows, problems, thumbs


def _write_one(decoded: _Decoded, tmp: Path) -> dict[str, object]:
    case = decoded.case
    name = f"{case.case_id}.png"
    image = decoded.image
    height, width = image.shape  # type: ignore[attr-defined]
    cls_path = Path("cls") / case.label / name
    other_rel: Path | None = None
    if decoded.mask is not None:
        image_rel = Path("seg") / "images" / name
        mask_rel = Path("seg") / "masks" / name
        (tmp / image_rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        save_png(image, tmp / image_rel)  # type: ignore[arg-type]
        save_png(decoded.mask, tmp / mask_rel)  # type: ignore[arg-type]
        _link_or_copy(tmp / image_rel, tmp / cls_path)
        area = int(decoded.mask.sum())  # type: ignore[attr-defined]
        if decoded.other is not None:
            other_rel = Path("seg") / "other" / name
            (tmp / other_rel).parent.mkdir(parents=True, exist_ok=True)
            save_png(decoded.other, tmp / other_rel)  # type: ignore[arg-type]
    else:
        image_rel, mask_rel, area, other_rel = cls_path, None, None, None
        (tmp / cls_path).parent.mkdir(parents=True, exist_ok=True)
        save_png(image, tmp / cls_path)  # type: ignore[arg-type]
    row: dict[str, object] = {
        "case_id": case.case_id,
        "patient_id": case.patient_id or case.case_id,
        "image": image_rel.as_posix(),
        "mask": mask_rel.as_posix() if mask_rel else "",
        "label": case.label,
        "pixel_size_mm": case.pixel_size_mm,
        "source": case.image_path.name,
        "width": width,
        "height": height,
        "lesion_area_px": area,
        "other_mask": other_rel.as_posix() if other_rel else "",
    }
    row.update(case.extra)
    return row


def _report(result: PrepareResult, settings: PrepareSettings, source: Path) -> dict[str, object]:
    config = asdict(settings)
    config["source"] = str(Path(settings.source).resolve())
    config["out"] = str(Path(settings.out).resolve())
    return {
        "breastus_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": config,
        "format": result.format,
        "counts": {"read": result.rows_read, "kept": result.kept, "skipped": len(result.skipped)},
        "labels": result.counts,
        "with_mask": result.with_mask,
        "skipped_by_reason": result.skipped_by_reason,
        "skipped": [s.as_dict() for s in result.skipped],
        "image_size": result.image_size,
        "pixel_size_mm": result.pixel_size_mm,
        "manifest_sha256": result.manifest_sha256,
        "seconds": result.seconds,
        "near_duplicates": {
            "method": duplicates.METHOD, "threshold": settings.dup_threshold,
            "pairs_found": len(result.dup_pairs), "seconds": result.dup_seconds,
            "pairs": result.dup_pairs},
    }
