"""Reader for BUSI (Al-Dhabyani et al., Data in Brief 2020).

Layout (the user passes ``Dataset_BUSI_with_GT/`` or the folder that contains it)::

    Dataset_BUSI_with_GT/
      benign/     benign (1).png  benign (1)_mask.png  benign (4)_mask_1.png ...
      malignant/  malignant (1).png  malignant (1)_mask.png ...
      normal/     normal (1).png  normal (1)_mask.png ...

* Images are the files whose stem does not contain ``_mask``; an image's lesion mask is the union
  of ``<stem>_mask.png`` and any ``<stem>_mask_<n>.png``.
* Some copies use ``<class>/images/`` and ``<class>/mask/`` (or ``masks/``) instead; there the
  mask file may carry the image's own stem or ``<stem>_mask[_<n>]``.
* The ``normal`` class has no lesion: its images are reported as skipped, never returned.
* The release has no patient ids and no pixel size.
"""

from __future__ import annotations

import re
from pathlib import Path

from breastus_cli.data.sources.base import SkippedRow, SourceCase, SourceScan, normalize_label
from breastus_cli.data.sources.folder import (
    REASON_IMAGE_NOT_FOUND,
    REASON_MASK_NOT_FOUND,
    check_root,
    finish_cases,
    is_image_file,
    mask_stem,
    safe_case_id,
    sorted_masks,
    visible_subdirs,
)
from breastus_cli.errors import InputError

FORMAT = "busi"

#: The class folders of the release.
CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")

REASON_NORMAL = "no lesion (normal class)"

_DATASET_DIR = "dataset_busi_with_gt"
_IMAGES_DIR = "images"
_MASK_DIRS = ("mask", "masks")
# "benign (12)" -> class "benign", number 12.
_BUSI_STEM = re.compile(r"^\s*(?P<cls>[A-Za-z]+)\s*\(\s*(?P<n>\d+)\s*\)\s*$")
# How many folder levels below the given root to look for Dataset_BUSI_with_GT/ (Kaggle copies
# unzip to Dataset_BUSI_with_GT/Dataset_BUSI_with_GT/).
_MAX_DESCENT = 2


def _class_dirs(folder: Path) -> dict[str, Path]:
    """``{class: folder}`` for the BUSI class folders present (names matched case-insensitively)."""
    found: dict[str, Path] = {}
    for child in visible_subdirs(folder):
        name = child.name.lower()
        if name in CLASSES and name not in found:
            found[name] = child
    return found


def _locate(root: Path) -> Path | None:
    """The folder holding the class folders: ``root`` or a ``Dataset_BUSI_with_GT`` below it."""
    folder = root
    for _ in range(_MAX_DESCENT + 1):
        if _class_dirs(folder):
            return folder
        child = next(
            (d for d in visible_subdirs(folder) if d.name.lower() == _DATASET_DIR), None
        )
        if child is None:
            return None
        folder = child
    return None


def _layout(class_dir: Path) -> tuple[Path, list[Path]]:
    """``(image folder, mask folders)`` of one class: flat, or the images/ + mask(s)/ variant."""
    subdirs = visible_subdirs(class_dir)
    images = next((d for d in subdirs if d.name.lower() == _IMAGES_DIR), None)
    if images is None:
        return class_dir, []
    return images, [d for d in subdirs if d.name.lower() in _MASK_DIRS]


def _case_id(label: str, stem: str) -> str:
    """``busi_benign_0012`` for ``benign (12)``; zero-padded so ids sort in file-number order.

    Files renamed away from the release's naming keep a sanitized stem instead.
    """
    match = _BUSI_STEM.match(stem)
    if match is not None and match.group("cls").lower() == label:
        return f"busi_{label}_{int(match.group('n')):04d}"
    return safe_case_id(f"busi_{label}_{stem}")


def _looks_like_busi(class_dir: Path, label: str, *, named: bool) -> bool:
    """True when one class folder has BUSI's signature.

    The images/ + mask(s)/ variant is enough. In the flat layout a ``_mask`` file must also carry
    BUSI's own naming (``benign (3)_mask.png``), unless the dataset folder has BUSI's name: a
    plain class-folder layout with ``x_mask.png`` beside its images must stay with the folder
    reader, which keeps images that have no mask.
    """
    image_dir, mask_dirs = _layout(class_dir)
    if image_dir != class_dir and mask_dirs:
        return True
    for path in class_dir.iterdir():
        parsed = mask_stem(path.stem) if is_image_file(path) else None
        if parsed is None:
            continue
        if named:
            return True
        match = _BUSI_STEM.match(parsed[0])
        if match is not None and match.group("cls").lower() == label:
            return True
    return False


def detect(root: Path) -> bool:
    """True when at least two BUSI class folders with BUSI-style masks are found. Never raises."""
    try:
        root = Path(root).expanduser()
        if not root.is_dir():
            return False
        base = _locate(root)
        if base is None:
            return False
        named = base.name.lower() == _DATASET_DIR
        hits = sum(
            _looks_like_busi(folder, label, named=named)
            for label, folder in _class_dirs(base).items()
        )
        return hits >= 2
    except (OSError, ValueError):
        return False


def read(root: Path, *, include_other_masks: bool = False) -> SourceScan:
    """Read a BUSI folder: benign and malignant images with their (united) masks.

    Normal images, images without a mask and masks without an image are listed in
    ``scan.skipped``. ``include_other_masks`` is accepted for the common reader signature; BUSI
    has no "other" masks. Raises :class:`InputError` when ``root`` is not a folder or holds no
    class folder.
    """
    del include_other_masks  # BUSI has only lesion masks
    root = check_root(root, "BUSI")
    base = _locate(root)
    if base is None:
        raise InputError(
            f"no BUSI class folders (benign/, malignant/, normal/) found in {root}",
            hint="pass the Dataset_BUSI_with_GT folder",
        )

    proposed: list[tuple[str, SourceCase]] = []
    skipped: list[SkippedRow] = []
    rows_read = 0
    for label, class_dir in sorted(_class_dirs(base).items()):
        image_dir, mask_dirs = _layout(class_dir)
        files = sorted((p for p in image_dir.iterdir() if is_image_file(p)), key=lambda p: p.name)
        images = [p for p in files if "_mask" not in p.stem.lower()]

        if label == "normal":
            # BUSI's normal masks are all zero: there is no lesion to segment or classify.
            for image in images:
                rows_read += 1
                skipped.append(SkippedRow(_case_id(label, image.stem), REASON_NORMAL, image.name))
            continue

        # stem -> [(n, mask)]: `_mask` files beside the images, plus the mask folder(s) of the
        # images/ variant, where a mask may also have exactly the image's stem.
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in files:
            parsed = mask_stem(path.stem)
            if parsed is not None:
                masks.setdefault(parsed[0], []).append((parsed[1], path))
        for mask_dir in mask_dirs:
            for path in sorted(mask_dir.iterdir(), key=lambda p: p.name):
                if is_image_file(path):
                    stem, n = mask_stem(path.stem) or (path.stem, 0)
                    masks.setdefault(stem, []).append((n, path))

        for image in images:
            rows_read += 1
            case_id = _case_id(label, image.stem)
            mask_paths = sorted_masks(masks.get(image.stem, []))
            if not mask_paths:
                skipped.append(
                    SkippedRow(case_id, REASON_MASK_NOT_FOUND, f"{image.stem}_mask{image.suffix}")
                )
                continue
            case = SourceCase(
                case_id=case_id,
                label=normalize_label(label),
                image_path=image,
                mask_paths=mask_paths,
            )
            proposed.append((case_id, case))

        # A mask without its image means the image went missing: say so instead of dropping it.
        for stem in sorted(set(masks) - {p.stem for p in images}):
            rows_read += 1
            first = sorted_masks(masks[stem])[0]
            skipped.append(SkippedRow(_case_id(label, stem), REASON_IMAGE_NOT_FOUND, first.name))

    cases = finish_cases(proposed)
    skipped.sort(key=lambda s: (s.case_id, s.reason, s.value))
    return SourceScan(format=FORMAT, root=base, cases=cases, skipped=skipped, rows_read=rows_read)
