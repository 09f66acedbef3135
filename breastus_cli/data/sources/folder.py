"""Reader for plain class folders: ``<root>/<class>/*.{png,jpg,jpeg,bmp,tif,tiff}``.

Masks are optional, looked up in two places (their union is the lesion mask):

* ``<root>/<class>_masks/``: a file with the image's stem (any image suffix), or the stem followed
  by ``_mask`` / ``_mask_<n>``;
* beside the image: ``<stem>_mask.<ext>`` (and ``<stem>_mask_<n>.<ext>``).

A file whose stem ends in ``_mask`` / ``_mask_<n>`` is never an image. A case without any mask is
still a valid classification case (``mask_paths == []``); prepare decides what to do with it.

This is the fallback format of auto-detection, so :func:`detect` is deliberately broad.

The small helpers at the top (:func:`safe_case_id`, :func:`unique_ids`, ...) are shared with the
BUSI and BUS-BRA readers, which import them from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from breastus_cli.data.imaging import IMAGE_SUFFIXES
from breastus_cli.data.sources.base import SkippedRow, SourceCase, SourceScan, normalize_label
from breastus_cli.errors import InputError

FORMAT = "folder"

#: Reason strings shared by the readers, so a skip report reads the same for every source.
REASON_IMAGE_NOT_FOUND = "image file not found"
REASON_MASK_NOT_FOUND = "tumor mask not found"

_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
# `<base>_mask` or `<base>_mask_<n>`; the suffix is matched case-insensitively because copies of
# public datasets are re-zipped on every OS, the base is kept exact (file systems here are
# case-sensitive and the base must equal an image stem).
_MASK_STEM = re.compile(r"^(?P<base>.+?)_(?i:mask)(?:_(?P<n>\d+))?$")
_MASKS_DIR_SUFFIX = "_masks"


# --------------------------------------------------------------------------- shared helpers


def safe_case_id(text: str) -> str:
    """Turn any text into a case id made only of ``[A-Za-z0-9._-]``, readable and stable.

    Runs of other characters become one ``_``; leading dots are removed so that an id can never
    be a hidden file or ``..``.

    >>> safe_case_id("benign (12)")
    'benign_12'
    >>> safe_case_id("../../etc/passwd")
    'etc_passwd'
    """
    cleaned = _UNSAFE_RUN.sub("_", str(text).strip())
    cleaned = cleaned.lstrip("._-").rstrip("._")
    return cleaned or "case"


def unique_ids(proposed: Iterable[str]) -> list[str]:
    """Make ids unique, keeping the first occurrence and suffixing later ones ``-2``, ``-3``...

    The result depends only on the order given, so callers pass ids in a deterministic order.

    >>> unique_ids(["a", "b", "a", "a-2"])
    ['a', 'b', 'a-3', 'a-2']
    """
    proposed = list(proposed)
    taken = set(proposed)
    seen: set[str] = set()
    result: list[str] = []
    for case_id in proposed:
        if case_id in seen:
            n = 2
            while f"{case_id}-{n}" in taken:
                n += 1
            new_id = f"{case_id}-{n}"
            taken.add(new_id)
            case_id = new_id
        seen.add(case_id)
        result.append(case_id)
    return result


def is_image_file(path: Path) -> bool:
    """True for a regular, non-hidden file with an image suffix (case-insensitive).

    Hidden files are left out because macOS copies carry ``._name.png`` AppleDouble files that
    have an image suffix but are not images.
    """
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
    )


def mask_stem(stem: str) -> tuple[str, int] | None:
    """Split a mask stem ``<base>_mask[_<n>]`` into ``(base, n)`` (n = 0 for plain ``_mask``).

    Returns None when the stem is not a mask name.

    >>> mask_stem("benign (4)_mask_1")
    ('benign (4)', 1)
    >>> mask_stem("benign (4)") is None
    True
    """
    match = _MASK_STEM.match(stem)
    if match is None:
        return None
    return match.group("base"), int(match.group("n") or 0)


def check_root(root: Path | str, what: str) -> Path:
    """Return ``root`` as an absolute path, or raise :class:`InputError` if it is not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise InputError(f"{what} folder not found: {path}")
    if not path.is_dir():
        raise InputError(f"{what} source is not a folder: {path}")
    return path.absolute()


def visible_subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of ``folder``, sorted by name (``__MACOSX`` left out too)."""
    return sorted(
        (
            child
            for child in folder.iterdir()
            if child.is_dir() and not child.name.startswith(".") and child.name != "__MACOSX"
        ),
        key=lambda p: p.name,
    )


def sorted_masks(found: Iterable[tuple[int, Path]]) -> list[Path]:
    """Order masks as ``_mask``, ``_mask_1``, ``_mask_2``... then by name; drop duplicates."""
    unique = {path: n for n, path in found}
    return [path for path, _ in sorted(unique.items(), key=lambda item: (item[1], item[0].name))]


def finish_cases(proposed: list[tuple[str, SourceCase]]) -> list[SourceCase]:
    """Give each ``(proposed id, case)`` a unique id, deterministically; return cases sorted by id.

    Ties between equal proposed ids are broken by image path, so re-reading the same folder
    always gives the same ids.
    """
    proposed = sorted(proposed, key=lambda item: (item[0], str(item[1].image_path)))
    for case_id, (_, case) in zip(unique_ids(p[0] for p in proposed), proposed):
        case.case_id = case_id
    return sorted((case for _, case in proposed), key=lambda c: c.case_id)


# --------------------------------------------------------------------------- the reader


def _has_images(folder: Path) -> bool:
    """Cheap: stops at the first image (non-mask) file."""
    return any(is_image_file(p) and mask_stem(p.stem) is None for p in folder.iterdir())


def _class_dirs(root: Path) -> list[Path]:
    """Sub-folders holding images, except ``<class>_masks`` folders."""
    return [
        d
        for d in visible_subdirs(root)
        if not d.name.lower().endswith(_MASKS_DIR_SUFFIX) and _has_images(d)
    ]


def detect(root: Path) -> bool:
    """True when ``root`` has at least one sub-folder with image files. Never raises."""
    try:
        root = Path(root).expanduser()
        return root.is_dir() and bool(_class_dirs(root))
    except (OSError, ValueError):
        return False


def read(root: Path, *, include_other_masks: bool = False) -> SourceScan:
    """Read plain class folders; every image is a case, with its masks when there are any.

    ``include_other_masks`` is accepted for the common reader signature; plain folders have no
    "other" masks. Raises :class:`InputError` when ``root`` is not a folder or holds no class
    folder with images.
    """
    del include_other_masks  # no "other" masks in this layout
    root = check_root(root, "image")
    subdirs = visible_subdirs(root)
    mask_dirs = {
        d.name[: -len(_MASKS_DIR_SUFFIX)].lower(): d
        for d in subdirs
        if d.name.lower().endswith(_MASKS_DIR_SUFFIX)
    }
    class_dirs = _class_dirs(root)
    if not class_dirs:
        raise InputError(
            f"no class folders with images ({', '.join(IMAGE_SUFFIXES)}) found in {root}",
            hint="expected <root>/<class>/<image>, e.g. <root>/benign/img001.png",
        )

    proposed: list[tuple[str, SourceCase]] = []
    skipped: list[SkippedRow] = []
    rows_read = 0
    for class_dir in class_dirs:
        label = normalize_label(class_dir.name)
        files = sorted(class_dir.iterdir(), key=lambda p: p.name)
        images = [p for p in files if is_image_file(p) and mask_stem(p.stem) is None]

        # stem -> [(n, mask path)] from both places; a stem may collect masks from each.
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in files:
            parsed = mask_stem(path.stem) if is_image_file(path) else None
            if parsed is not None:
                masks.setdefault(parsed[0], []).append((parsed[1], path))
        mask_dir = mask_dirs.get(class_dir.name.lower())
        if mask_dir is not None:
            for path in sorted(mask_dir.iterdir(), key=lambda p: p.name):
                if not is_image_file(path):
                    continue
                # In the masks folder the same stem as the image is the usual naming.
                base, n = mask_stem(path.stem) or (path.stem, 0)
                masks.setdefault(base, []).append((n, path))

        stems = {p.stem for p in images}
        for image in images:
            rows_read += 1
            case = SourceCase(
                case_id="",
                label=label,
                image_path=image,
                mask_paths=sorted_masks(masks.get(image.stem, [])),
            )
            proposed.append((safe_case_id(f"{class_dir.name}_{image.stem}"), case))

        # A mask without its image means an image went missing: report it rather than drop it
        # silently ("loses nothing").
        for base in sorted(set(masks) - stems):
            rows_read += 1
            first = sorted_masks(masks[base])[0]
            skipped.append(
                SkippedRow(
                    case_id=safe_case_id(f"{class_dir.name}_{base}"),
                    reason=REASON_IMAGE_NOT_FOUND,
                    value=first.name,
                )
            )

    cases = finish_cases(proposed)
    skipped.sort(key=lambda s: (s.case_id, s.reason, s.value))
    return SourceScan(format=FORMAT, root=root, cases=cases, skipped=skipped, rows_read=rows_read)

