"""Tests for the BUSI, BUS-BRA and plain-folder source readers.

Every layout is built here, in ``tmp_path``, with small PIL images in the modes the datasets use
(source-layouts.md): BUSI images RGB with masks mode '1' or RGBA 0/255, BUS-BRA images 'L' with
masks '1', plain folders in several formats. Readers never decode pixels, so the content of the
images does not matter, only that they are real files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from breastus_cli.data.sources import busbra, busi, folder
from breastus_cli.data.sources.base import SkippedRow, SourceScan
from breastus_cli.errors import InputError

SIZE = (40, 30)
OUTSIDE = "file name points outside the dataset folder"


# --------------------------------------------------------------------------- builders


def _image(path: Path, mode: str = "RGB") -> Path:
    """Write a small image of ``mode`` at ``path`` (format from the suffix): black with a white
    square, so that a mask made this way holds a lesion (0/255; RGBA fully opaque like BUSI's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    background = (0, 0, 0, 255) if mode == "RGBA" else 0
    image = Image.new(mode, SIZE, background)
    image.paste(Image.new(mode, (10, 10), "white"), (10, 10))
    image.save(path)
    return path


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _skips(scan: SourceScan) -> list[tuple[str, str, str]]:
    return [(s.case_id, s.reason, s.value) for s in scan.skipped]


def _by_id(scan: SourceScan) -> dict:
    return {c.case_id: c for c in scan.cases}


def _labels(scan: SourceScan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in scan.cases:
        counts[case.label] = counts.get(case.label, 0) + 1
    return counts


def _make_busi(root: Path) -> Path:
    """A small BUSI copy: union masks, a missing mask, an orphan mask, normal images, clutter."""
    benign = root / "benign"
    _image(benign / "benign (1).png")
    _image(benign / "benign (1)_mask.png", "1")
    _image(benign / "benign (2).png")
    _image(benign / "benign (2)_mask.png", "RGBA")
    _image(benign / "benign (3).png")  # its mask is missing
    _image(benign / "benign (4).png")
    _image(benign / "benign (4)_mask.png", "1")
    _image(benign / "benign (4)_mask_1.png", "1")
    _image(benign / "benign (4)_mask_2.png", "1")
    _image(benign / "benign (7)_mask.png", "1")  # its image is missing
    _image(benign / "benign (10).png")  # "(1)" must not pick up "(10)"'s masks, nor the reverse
    _image(benign / "benign (10)_mask.png", "1")
    malignant = root / "malignant"
    _image(malignant / "malignant (1).png")
    _image(malignant / "malignant (1)_mask.png", "1")
    _image(malignant / "malignant (2).png")
    _image(malignant / "malignant (2)_mask.png", "L")
    normal = root / "normal"
    _image(normal / "normal (1).png")
    _image(normal / "normal (1)_mask.png", "1")
    _image(normal / "normal (2).png")
    _image(normal / "normal (2)_mask.png", "1")
    # Clutter from zips made on other systems: none of it is a case.
    (benign / ".DS_Store").write_bytes(b"\0")
    (benign / "._benign (1).png").write_bytes(b"\0")
    (benign / "Thumbs.db").write_bytes(b"\0")
    (root / "README.txt").write_text("BUSI")
    (root / "__MACOSX" / "benign").mkdir(parents=True)
    return root


def _make_busi_subfolders(root: Path) -> Path:
    """The BUSI variant with <class>/images/ and <class>/mask(s)/ subfolders."""
    _image(root / "benign" / "images" / "benign (1).png")
    _image(root / "benign" / "mask" / "benign (1)_mask.png", "1")
    _image(root / "benign" / "mask" / "benign (1)_mask_1.png", "1")
    _image(root / "benign" / "images" / "benign (2).png")  # no mask
    _image(root / "malignant" / "images" / "malignant (1).png")
    _image(root / "malignant" / "masks" / "malignant (1).png", "1")  # mask without `_mask`
    _image(root / "normal" / "images" / "normal (1).png")
    _image(root / "normal" / "mask" / "normal (1).png", "1")
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


BUSBRA_HEADER = [
    "ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height", "Side", "BBOX",
]


def _busbra_row(image_id: str, case: int, pathology: str, side: str = "left") -> list[object]:
    # Width/Height deliberately wrong (the PNG is 40x30): the reader must not use them.
    return [image_id, case, "Fibroadenoma", pathology, "4", "GE", 999, 999, side, "[1, 2, 3, 4]"]


def _make_busbra(root: Path, *, folds: bool = True) -> Path:
    """A small BUS-BRA copy: patient 1 has two images, patient 2 one, patient 3 one."""
    ids = ["bus_0001-l", "bus_0001-r", "bus_0002-s", "bus_0003-l"]
    for image_id in ids:
        _image(root / "Images" / f"{image_id}.png", "L")
        _image(root / "Masks" / f"mask_{image_id[4:]}.png", "1")
    _write_csv(
        root / "bus_data.csv",
        BUSBRA_HEADER,
        [
            _busbra_row("bus_0001-l", 1, "benign"),
            _busbra_row("bus_0001-r", 1, "benign", "right"),
            _busbra_row("bus_0002-s", 2, "malignant"),
            _busbra_row("bus_0003-l", 3, "Malignant"),
        ],
    )
    if folds:
        _write_csv(
            root / "5-fold-cv.csv",
            ["ID", "Pathology", "kFold"] + [f"valid_{k}" for k in range(1, 6)],
            [
                ["bus_0001-l", "benign", 1, 0, 1, 0, 0, 0],
                ["bus_0001-r", "benign", 1, 0, 1, 0, 0, 0],
                ["bus_0002-s", "malignant", 3, 0, 0, 0, 1, 0],
                ["bus_0003-l", "malignant", 5, 1, 0, 0, 0, 0],
            ],
        )
        _write_csv(
            root / "10-fold-cv.csv",
            ["ID", "Pathology", "kFold"] + [f"valid_{k}" for k in range(1, 11)],
            [
                ["bus_0001-l", "benign", 2] + [0] * 10,
                ["bus_0001-r", "benign", 2] + [0] * 10,
                ["bus_0002-s", "malignant", 7] + [0] * 10,
                ["bus_0003-l", "malignant", 10] + [0] * 10,
            ],
        )
    return root


def _make_folder(root: Path) -> Path:
    """Plain class folders: <class>_masks/, `_mask` beside the image, and no mask at all."""
    _image(root / "benign" / "a.png")
    _image(root / "benign_masks" / "a.png", "1")  # same stem
    _image(root / "benign" / "b.jpg")
    _image(root / "benign_masks" / "b_mask.png", "L")  # stem + _mask, other suffix
    _image(root / "benign" / "c.PNG")  # upper-case suffix, no mask
    _image(root / "benign" / "lesion (1).bmp")  # spaces and parentheses
    _image(root / "benign_masks" / "zz.png", "1")  # its image is missing
    _image(root / "malignant" / "x.tif", "L")
    _image(root / "malignant" / "x_mask.png", "1")  # beside the image
    _image(root / "malignant" / "x_mask_1.png", "RGBA")
    _image(root / "malignant" / "y.jpeg")
    (root / "malignant" / "notes.txt").write_text("not an image")
    (root / "docs").mkdir()
    (root / "docs" / "readme.md").write_text("no images here")  # not a class folder
    return root


# --------------------------------------------------------------------------- BUSI


def test_busi_cases_masks_and_skips(tmp_path: Path) -> None:
    root = _make_busi(tmp_path / "Dataset_BUSI_with_GT")
    scan = busi.read(root)

    assert scan.format == "busi"
    assert scan.root == root.absolute()
    assert [c.case_id for c in scan.cases] == [
        "busi_benign_0001",
        "busi_benign_0002",
        "busi_benign_0004",
        "busi_benign_0010",
        "busi_malignant_0001",
        "busi_malignant_0002",
    ]
    assert _labels(scan) == {"benign": 4, "malignant": 2}
    cases = _by_id(scan)
    assert cases["busi_benign_0001"].image_path == root / "benign" / "benign (1).png"
    assert _names(cases["busi_benign_0001"].mask_paths) == ["benign (1)_mask.png"]
    assert _names(cases["busi_benign_0010"].mask_paths) == ["benign (10)_mask.png"]
    # The lesion mask is the union of _mask, _mask_1, _mask_2, in that order.
    assert _names(cases["busi_benign_0004"].mask_paths) == [
        "benign (4)_mask.png",
        "benign (4)_mask_1.png",
        "benign (4)_mask_2.png",
    ]
    for case in scan.cases:
        assert case.image_path.is_absolute() and case.image_path.is_file()
        assert all(p.is_absolute() and p.is_file() for p in case.mask_paths)
        assert case.patient_id is None
        assert case.pixel_size_mm is None
        assert case.other_mask_paths == []

    assert _skips(scan) == [
        ("busi_benign_0003", "tumor mask not found", "benign (3)_mask.png"),
        ("busi_benign_0007", "image file not found", "benign (7)_mask.png"),
        ("busi_normal_0001", "no lesion (normal class)", "normal (1).png"),
        ("busi_normal_0002", "no lesion (normal class)", "normal (2).png"),
    ]
    # 5 benign images + 1 orphan mask + 2 malignant + 2 normal
    assert scan.rows_read == 10


def test_busi_accepts_the_parent_folder(tmp_path: Path) -> None:
    inner = _make_busi(tmp_path / "archive" / "Dataset_BUSI_with_GT")
    from_inner = busi.read(inner)
    from_parent = busi.read(tmp_path / "archive")
    assert from_parent.root == inner.absolute()
    assert [c.case_id for c in from_parent.cases] == [c.case_id for c in from_inner.cases]
    assert [c.mask_paths for c in from_parent.cases] == [c.mask_paths for c in from_inner.cases]
    assert busi.detect(tmp_path / "archive")


def test_busi_images_and_mask_subfolders(tmp_path: Path) -> None:
    root = _make_busi_subfolders(tmp_path / "busi")
    scan = busi.read(root)
    cases = _by_id(scan)
    assert sorted(cases) == ["busi_benign_0001", "busi_malignant_0001"]
    assert cases["busi_benign_0001"].image_path == root / "benign" / "images" / "benign (1).png"
    assert cases["busi_benign_0001"].mask_paths == [
        root / "benign" / "mask" / "benign (1)_mask.png",
        root / "benign" / "mask" / "benign (1)_mask_1.png",
    ]
    assert cases["busi_malignant_0001"].mask_paths == [
        root / "malignant" / "masks" / "malignant (1).png"
    ]
    assert _skips(scan) == [
        ("busi_benign_0002", "tumor mask not found", "benign (2)_mask.png"),
        ("busi_normal_0001", "no lesion (normal class)", "normal (1).png"),
    ]
    assert scan.rows_read == 4
    assert busi.detect(root)


def test_busi_renamed_files_keep_unique_safe_ids(tmp_path: Path) -> None:
    root = tmp_path / "busi"
    _image(root / "benign" / "img 5.png")
    _image(root / "benign" / "img 5_mask.png", "1")
    _image(root / "benign" / "img_5.png")
    _image(root / "benign" / "img_5_mask.png", "1")
    scan = busi.read(root)
    assert [c.case_id for c in scan.cases] == ["busi_benign_img_5", "busi_benign_img_5-2"]
    assert [c.image_path.name for c in scan.cases] == ["img 5.png", "img_5.png"]


@pytest.mark.parametrize("make", ["missing", "file", "empty", "unrelated"])
def test_busi_structural_errors(tmp_path: Path, make: str) -> None:
    root = tmp_path / "src"
    if make == "file":
        root.write_text("x")
    elif make == "empty":
        root.mkdir()
    elif make == "unrelated":
        _image(root / "cats" / "cat.png")
    with pytest.raises(InputError) as info:
        busi.read(root)
    assert str(root) in info.value.message


# --------------------------------------------------------------------------- BUS-BRA


def test_busbra_cases_patients_extra_and_folds(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    scan = busbra.read(root)

    assert scan.format == "busbra"
    assert scan.skipped == []
    assert scan.rows_read == 4
    assert [c.case_id for c in scan.cases] == [
        "bus_0001-l", "bus_0001-r", "bus_0002-s", "bus_0003-l",
    ]
    assert _labels(scan) == {"benign": 2, "malignant": 2}
    cases = _by_id(scan)
    assert [c.patient_id for c in scan.cases] == ["1", "1", "2", "3"]
    first = cases["bus_0001-l"]
    assert first.image_path == (root / "Images" / "bus_0001-l.png").resolve()
    assert first.mask_paths == [(root / "Masks" / "mask_0001-l.png").resolve()]
    assert first.pixel_size_mm is None
    assert first.extra == {
        "histology": "Fibroadenoma",
        "birads": "4",
        "device": "GE",
        "side": "left",
        "published_fold_5": 1,
        "published_fold_10": 2,
    }
    assert cases["bus_0001-r"].extra["side"] == "right"
    assert [c.extra["published_fold_5"] for c in scan.cases] == [1, 1, 3, 5]
    assert [c.extra["published_fold_10"] for c in scan.cases] == [2, 2, 7, 10]
    # Width/Height/BBOX stay out of the way: the PNG is the truth about geometry.
    assert all(not {"width", "height", "bbox"} & set(c.extra) for c in scan.cases)
    assert busbra.detect(root)


def test_busbra_without_fold_files_has_no_fold_keys(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA", folds=False)
    scan = busbra.read(root)
    assert len(scan.cases) == 4
    for case in scan.cases:
        assert "published_fold_5" not in case.extra
        assert "published_fold_10" not in case.extra


def test_busbra_fold_file_with_other_ids_leaves_folds_missing(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    _write_csv(
        root / "5-fold-cv.csv",
        ["ID", "Pathology", "kFold"],
        [["bus_0001-l", "benign", 4], ["bus_9999-x", "benign", 2], ["bus_0002-s", "m", "n/a"]],
    )
    cases = _by_id(busbra.read(root))
    assert cases["bus_0001-l"].extra["published_fold_5"] == 4
    for case_id in ("bus_0001-r", "bus_0002-s", "bus_0003-l"):
        assert "published_fold_5" not in cases[case_id].extra
        assert "published_fold_10" in cases[case_id].extra  # the other file is untouched


def test_busbra_fold_file_without_kfold_column_is_structural(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    _write_csv(root / "10-fold-cv.csv", ["ID", "Pathology"], [["bus_0001-l", "benign"]])
    with pytest.raises(InputError) as info:
        busbra.read(root)
    assert "10-fold-cv.csv" in info.value.message
    assert "kFold" in info.value.message


@pytest.mark.parametrize("column", ["ID", "Case", "Pathology"])
def test_busbra_missing_required_column_names_it(tmp_path: Path, column: str) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    index = BUSBRA_HEADER.index(column)
    header = [c for c in BUSBRA_HEADER if c != column]
    rows = [_busbra_row("bus_0001-l", 1, "benign")]
    _write_csv(root / "bus_data.csv", header, [r[:index] + r[index + 1 :] for r in rows])
    with pytest.raises(InputError) as info:
        busbra.read(root)
    assert column in info.value.message
    assert "bus_data.csv" in info.value.message


def test_busbra_optional_columns_may_be_absent(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA", folds=False)
    _write_csv(root / "bus_data.csv", ["ID", "Case", "Pathology"], [["bus_0001-l", 7, "B"]])
    scan = busbra.read(root)
    assert [(c.case_id, c.label, c.patient_id, c.extra) for c in scan.cases] == [
        ("bus_0001-l", "benign", "7", {})
    ]


def test_busbra_row_problems_are_skipped(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    (root / "Images" / "bus_0002-s.png").unlink()
    (root / "Masks" / "mask_0003-l.png").unlink()
    _image(root / "Images" / "bus_0004-l.png", "L")
    _image(root / "Masks" / "mask_0004-l.png", "1")
    (tmp_path / "etc").mkdir()
    _image(tmp_path / "etc" / "passwd.png", "L")  # exists, but outside the dataset folder
    _write_csv(
        root / "bus_data.csv",
        BUSBRA_HEADER,
        [
            _busbra_row("bus_0001-l", 1, "benign"),
            _busbra_row("bus_0002-s", 2, "malignant"),  # image deleted
            _busbra_row("bus_0003-l", 3, "malignant"),  # mask deleted
            _busbra_row("bus_0004-l", 4, "normal"),  # not a BUS-BRA class
            _busbra_row("../../etc/passwd", 5, "benign"),
            _busbra_row("", 6, "benign"),
            _busbra_row("bus_0001-l", 1, "benign"),  # listed twice
        ],
    )
    scan = busbra.read(root)
    assert [c.case_id for c in scan.cases] == ["bus_0001-l"]
    assert scan.rows_read == 7
    assert _skips(scan) == [
        ("bus_0001-l", "duplicate ID", "bus_0001-l"),
        ("bus_0002-s", "image file not found", "bus_0002-s.png"),
        ("bus_0003-l", "tumor mask not found", "mask_0003-l.png"),
        ("bus_0004-l", "unknown class", "normal"),
        ("etc_passwd", OUTSIDE, "../../etc/passwd.png"),
        ("row_6", "missing ID", ""),
    ]
    assert all(isinstance(s, SkippedRow) for s in scan.skipped)


def test_busbra_escape_into_masks_folder_is_refused(tmp_path: Path) -> None:
    # Inside the dataset, but not inside Images/: the ID must name an image, nothing else.
    root = _make_busbra(tmp_path / "BUSBRA")
    _write_csv(root / "bus_data.csv", BUSBRA_HEADER, [_busbra_row("../Masks/mask_0001-l", 1, "b")])
    scan = busbra.read(root)
    assert scan.cases == []
    assert _skips(scan) == [("Masks_mask_0001-l", OUTSIDE, "../Masks/mask_0001-l.png")]


def test_busbra_accepts_the_parent_folder(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "download" / "BUSBRA")
    scan = busbra.read(tmp_path / "download")
    assert scan.root == root.absolute()
    assert len(scan.cases) == 4
    assert busbra.detect(tmp_path / "download")


def test_busbra_two_copies_below_the_root_are_ambiguous(tmp_path: Path) -> None:
    _make_busbra(tmp_path / "download" / "a", folds=False)
    _make_busbra(tmp_path / "download" / "b", folds=False)
    assert not busbra.detect(tmp_path / "download")
    with pytest.raises(InputError, match=r"several BUS-BRA copies .*\(a, b\)"):
        busbra.read(tmp_path / "download")


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("bus_data.csv", "bus_data.csv"),
        ("Images", "Images/"),
        ("Masks", "Masks/"),
    ],
)
def test_busbra_structural_errors(tmp_path: Path, remove: str, expected: str) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    target = root / remove
    if target.is_dir():
        for child in target.iterdir():
            child.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(InputError) as info:
        busbra.read(root)
    assert expected in info.value.message
    assert str(root) in info.value.message


def test_busbra_empty_table_and_missing_root(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA")
    (root / "bus_data.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        busbra.read(root)
    with pytest.raises(InputError, match="not found"):
        busbra.read(tmp_path / "nowhere")


def test_busbra_reads_excel_bom_and_keeps_case_text(tmp_path: Path) -> None:
    root = _make_busbra(tmp_path / "BUSBRA", folds=False)
    (root / "bus_data.csv").write_text(
        "ID,Case,Pathology\nbus_0001-l,0001,Benign\n", encoding="utf-8-sig"
    )
    scan = busbra.read(root)
    assert [(c.case_id, c.patient_id, c.label) for c in scan.cases] == [
        ("bus_0001-l", "0001", "benign")
    ]


# --------------------------------------------------------------------------- plain folders


def test_folder_cases_and_masks(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "plain")
    scan = folder.read(root)

    assert scan.format == "folder"
    assert scan.root == root.absolute()
    assert [c.case_id for c in scan.cases] == [
        "benign_a",
        "benign_b",
        "benign_c",
        "benign_lesion_1",
        "malignant_x",
        "malignant_y",
    ]
    assert _labels(scan) == {"benign": 4, "malignant": 2}
    cases = _by_id(scan)
    assert cases["benign_a"].mask_paths == [root / "benign_masks" / "a.png"]
    assert cases["benign_b"].image_path == root / "benign" / "b.jpg"
    assert cases["benign_b"].mask_paths == [root / "benign_masks" / "b_mask.png"]
    assert cases["benign_c"].image_path == root / "benign" / "c.PNG"
    assert cases["benign_c"].mask_paths == []  # a classification-only case
    assert cases["benign_lesion_1"].image_path == root / "benign" / "lesion (1).bmp"
    assert cases["malignant_x"].mask_paths == [
        root / "malignant" / "x_mask.png",
        root / "malignant" / "x_mask_1.png",
    ]
    assert cases["malignant_y"].mask_paths == []
    assert all(c.patient_id is None and c.pixel_size_mm is None for c in scan.cases)
    assert _skips(scan) == [("benign_zz", "image file not found", "zz.png")]
    assert scan.rows_read == 7


def test_folder_keeps_other_labels_and_normalizes_spelling(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    _image(root / "Benign" / "1.png")
    _image(root / "M" / "2.png")
    _image(root / "normal" / "3.png")
    scan = folder.read(root)
    assert [(c.case_id, c.label) for c in scan.cases] == [
        ("Benign_1", "benign"),
        ("M_2", "malignant"),
        ("normal_3", "normal"),  # prepare, not the reader, decides which labels to keep
    ]


def test_folder_same_stem_twice_gets_unique_ids(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    _image(root / "benign" / "a.jpg")
    _image(root / "benign" / "a.png")
    _image(root / "benign" / "a_mask.png", "1")
    scan = folder.read(root)
    assert [(c.case_id, c.image_path.name) for c in scan.cases] == [
        ("benign_a", "a.jpg"),
        ("benign_a-2", "a.png"),
    ]
    # Both images of stem `a` share the mask named after that stem.
    assert all(_names(c.mask_paths) == ["a_mask.png"] for c in scan.cases)


@pytest.mark.parametrize("make", ["missing", "file", "empty", "only_masks", "no_images"])
def test_folder_structural_errors(tmp_path: Path, make: str) -> None:
    root = tmp_path / "src"
    if make == "file":
        root.write_text("x")
    elif make == "empty":
        root.mkdir()
    elif make == "only_masks":
        _image(root / "benign_masks" / "a.png", "1")
        _image(root / "benign" / "a_mask.png", "1")
    elif make == "no_images":
        (root / "benign").mkdir(parents=True)
        (root / "benign" / "a.txt").write_text("x")
        _image(root / "loose.png")  # an image at the top is not in a class folder
    with pytest.raises(InputError) as info:
        folder.read(root)
    assert str(root) in info.value.message


# --------------------------------------------------------------------------- detection


@pytest.fixture
def layouts(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    plain_beside = tmp_path / "plain_beside"  # class folders with `_mask` beside, BUSI-like names
    _image(plain_beside / "benign" / "a.png")
    _image(plain_beside / "benign" / "a_mask.png", "1")
    _image(plain_beside / "malignant" / "b.png")
    _image(plain_beside / "malignant" / "b_mask.png", "1")
    return {
        "busi": _make_busi(tmp_path / "Dataset_BUSI_with_GT"),
        "busi_subfolders": _make_busi_subfolders(tmp_path / "busi_sub"),
        "busbra": _make_busbra(tmp_path / "BUSBRA"),
        "folder": _make_folder(tmp_path / "plain"),
        "plain_beside": plain_beside,
        "empty": empty,
        "missing": tmp_path / "does-not-exist",
        "file": _image(tmp_path / "lonely.png"),
    }


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        # layout: (busi, busbra, folder); None = not asserted (folder is the broad fallback and
        # auto-detection tries the specific formats first).
        ("busi", (True, False, None)),
        ("busi_subfolders", (True, False, None)),
        ("busbra", (False, True, None)),
        ("folder", (False, False, True)),
        ("plain_beside", (False, False, True)),
        ("empty", (False, False, False)),
        ("missing", (False, False, False)),
        ("file", (False, False, False)),
    ],
)
def test_detect(layouts: dict[str, Path], layout: str, expected: tuple) -> None:
    root = layouts[layout]
    for module, want in zip((busi, busbra, folder), expected):
        if want is not None:
            assert module.detect(root) is want, f"{module.FORMAT}.detect({layout})"


def test_detect_never_raises_on_unreadable_folder(tmp_path: Path) -> None:
    root = _make_busi(tmp_path / "busi")
    (root / "benign").chmod(0)
    try:
        for module in (busi, busbra, folder):
            assert module.detect(root) in (True, False)
    finally:
        (root / "benign").chmod(0o755)


def test_readers_expose_the_contract() -> None:
    for module, name in ((busi, "busi"), (busbra, "busbra"), (folder, "folder")):
        assert module.FORMAT == name
        assert callable(module.detect) and callable(module.read)


def test_reading_twice_gives_the_same_scan(tmp_path: Path) -> None:
    for module, root in (
        (busi, _make_busi(tmp_path / "b1")),
        (busbra, _make_busbra(tmp_path / "b2")),
        (folder, _make_folder(tmp_path / "b3")),
    ):
        assert module.read(root) == module.read(root)
