"""Issue 11: breastus never deletes or writes what it did not make, and never follows paths out
of the folders it is given (prepare, predict --overwrite/--resume/--merge, split
--materialize). Each test reproduced its problem on the code before the fix."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import breast_row, write_breast

IMAGES = "BrEaST-Lesions_USG-images_and_masks"


def _cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``breastus ARGS`` in this process; (exit code, stderr)."""
    from breastus_cli.cli.app import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---- prepare ---------------------------------------------------------------------------------
@pytest.fixture
def breast_src(tmp_path) -> Path:
    return write_breast(tmp_path / "src", [breast_row(1), breast_row(2, "malignant"),
                                           breast_row(3)])


def test_prepare_out_the_image_folder_next_to_the_workbook_is_refused(breast_src, capsys):
    images = breast_src / IMAGES
    before = _files(images)
    workbook = next(breast_src.glob("*.xlsx"))
    code, err = _cli(capsys, "prepare", workbook, "--out", images, "--overwrite")
    assert code == 2
    assert "source folder" in _error_line(err)
    assert _files(images) == before  # every source image still there


def test_prepare_out_the_target_of_a_symlinked_image_folder_is_refused(tmp_path, capsys):
    real = write_breast(tmp_path / "real", [breast_row(1), breast_row(2, "malignant")])
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(next(real.glob("*.xlsx")), src)
    os.symlink(real / IMAGES, src / IMAGES)
    before = _files(real / IMAGES)
    for out in (real / IMAGES, real):  # equal to, then containing, the folder read
        code, err = _cli(capsys, "prepare", src, "--out", out, "--overwrite")
        assert code == 2, err
        assert "source folder" in _error_line(err)
        assert _files(real / IMAGES) == before


def test_prepare_overwrite_refuses_a_folder_breastus_did_not_write(breast_src, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    (notes / "sub").mkdir()
    (notes / "sub" / "more.txt").write_text("more")
    before = _files(notes)
    code, err = _cli(capsys, "prepare", breast_src, "--out", notes, "--overwrite")
    assert code == 2
    line = _error_line(err)
    assert str(notes) in line and "not written by breastus" in line and "prepare.json" in line
    assert _files(notes) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    # a dataset prepare wrote is replaced as before
    data = tmp_path / "data"
    assert _cli(capsys, "prepare", breast_src, "--out", data)[0] == 0
    code, err = _cli(capsys, "prepare", breast_src, "--out", data, "--overwrite")
    assert code == 0, err
    assert (data / "prepare.json").is_file()


def test_ownership_markers_are_recognised_by_content(tmp_path):
    from breastus_cli.errors import InputError
    from breastus_cli.ownership import check_out_not_in, ensure_replaceable, is_owned

    folder = tmp_path / "f"
    folder.mkdir()
    ensure_replaceable(folder, "dataset")  # empty: free
    ensure_replaceable(tmp_path / "missing", "predict")
    (folder / "prepare.json").write_text('{"note": "mine"}')  # the name alone is not enough
    with pytest.raises(InputError, match="not written by breastus"):
        ensure_replaceable(folder, "dataset")
    (folder / "prepare.json").write_text('{"breastus_version": "0", "manifest_sha256": "x"}')
    ensure_replaceable(folder, "dataset")
    with pytest.raises(InputError, match=r"no predict\.json"):
        ensure_replaceable(folder, "predict")
    (folder / "cv.json").write_text('{"task": "cls", "folds": 5, "train": {}}')
    (folder / "sweep.json").write_text('{"task": "seg", "trials": [], "train": {}}')
    (folder / "config.json").write_text('{"task": "cls", "settings": {}, "versions": {}}')
    assert all(is_owned(folder, k) for k in ("cv", "sweep", "run"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        ensure_replaceable(tmp_path / "file", "dataset")
    check_out_not_in(tmp_path / "a", [tmp_path / "b"])
    from breastus_cli.errors import UsageError

    for out in (tmp_path / "b", tmp_path / "b" / "c", tmp_path):
        with pytest.raises(UsageError, match="source folder"):
            check_out_not_in(out, [tmp_path / "b"])


# ---- tiny models, built in this process --------------------------------------------------------
def _save_run(run: Path, model, task: str, size: int) -> Path:
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({
        "task": task, "settings": {"img_size": size}, "versions": {}, "threshold": 0.5,
        "status": "finished"}))
    return run


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny classifiers (different weights) and a tiny segmenter, saved as run folders."""
    from breastus_cli import backend

    keras = backend.keras()
    root = tmp_path_factory.mktemp("tinyruns")
    runs = {}
    for name, bias in (("cls", 0.0), ("cls2", 1.0)):
        model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(2, activation="softmax")])
        model.layers[-1].set_weights([np.array([[0.01, -0.01]], np.float32),
                                      np.array([bias, 0.0], np.float32)])
        runs[name] = _save_run(root / name, model, "cls", 32)
    seg = keras.Sequential([keras.Input((32, 32, 1)),
                            keras.layers.Conv2D(1, 1, activation="sigmoid")])
    seg.layers[-1].set_weights([np.full((1, 1, 1, 1), 0.05, np.float32),
                                np.array([-4.0], np.float32)])
    runs["seg"] = _save_run(root / "seg", seg, "seg", 32)
    return runs


def _scans(folder: Path, n: int = 3, shape: tuple[int, int] = (40, 48)) -> Path:
    """``n`` seeded random grey scans (``shape``: height, width) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(
            folder / f"scan{i}.png")
    return folder


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv", keep_default_na=False)


# ---- predict: output folder ---------------------------------------------------------------------
def test_predict_never_writes_into_or_deletes_a_datasets_masks(tiny_runs, tmp_path, capsys):
    data = tmp_path / "data"
    _scans(data / "seg" / "images")
    _scans(data / "seg" / "masks")  # the ground truth
    before = _files(data)
    for flags in ([], ["--overwrite"]):
        code, err = _cli(capsys, "predict", data / "seg" / "images", "--seg-run",
                         tiny_runs["seg"], "--out", data / "seg", "--save-masks", *flags)
        assert code == 2, err
        line = _error_line(err)
        assert str(data / "seg") in line and "predict.json" in line
        assert _files(data) == before  # nothing written, nothing deleted
    # a stray predictions.csv does not make the folder breastus's either
    (data / "seg" / "predictions.csv").write_text("path\nx\n")
    code, err = _cli(capsys, "predict", data / "seg" / "images", "--seg-run", tiny_runs["seg"],
                     "--out", data / "seg", "--overwrite")
    assert code == 2 and "not written by breastus" in _error_line(err)
    assert (data / "seg" / "masks").is_dir() and len(list((data / "seg/masks").iterdir())) == 3


def test_predict_overwrite_replaces_only_its_own_output(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans")
    out = tmp_path / "out"
    args = ["predict", scans, "--seg-run", tiny_runs["seg"], "--out", out, "--save-masks"]
    assert _cli(capsys, *args)[0] == 0
    record = json.loads((out / "predict.json").read_text())
    assert record["format"] == "breastus-predict"
    assert len(record["models"]["seg"]["sha256"]) == 64
    (out / "mine.txt").write_text("kept")
    code, err = _cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert (out / "mine.txt").read_text() == "kept" and len(_rows(out)) == 3


def test_predict_output_without_predict_json_is_neither_replaced_nor_resumed(tiny_runs,
                                                                           tmp_path, capsys):
    # issue 28: a predictions.csv with breastus's header is easily made; only predict.json
    # makes a folder predict's (an output of a breastus before predict.json is kept too)
    from breastus_cli.engine.apply.predict_output import COLUMNS

    scans = _scans(tmp_path / "scans")
    out = tmp_path / "old"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").write_bytes(b"old mask")
    (out / "predictions.csv").write_text(",".join(COLUMNS) + "\n")
    args = ["predict", scans, "--cls-run", tiny_runs["cls"], "--out", out]
    for flag in ("--resume", "--overwrite"):
        code, err = _cli(capsys, *args, flag)
        assert code == 2 and "predict.json" in _error_line(err)
        assert (out / "masks" / "a.png").read_bytes() == b"old mask"


def test_predict_out_an_existing_file_is_one_line_exit_2(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans")
    target = tmp_path / "result.csv"
    target.write_text("precious")
    code, err = _cli(capsys, "predict", scans, "--cls-run", tiny_runs["cls"], "--out", target)
    assert code == 2
    assert str(target) in _error_line(err) and "not a folder" in err
    assert target.read_text() == "precious"


def test_predict_does_not_read_its_own_output_inside_an_input_folder(tiny_runs, tmp_path,
                                                                    capsys):
    scans = _scans(tmp_path / "scans")
    out = scans / "predicted"
    args = ["predict", scans, "--seg-run", tiny_runs["seg"], "--out", out, "--save-masks",
            "--save-overlays"]
    assert _cli(capsys, *args)[0] == 0
    assert len(_rows(out)) == 3 and len(list((out / "masks").iterdir())) == 3
    for flag in ("--resume", "--overwrite"):
        code, err = _cli(capsys, *args, flag)
        assert code == 0, err
        rows = _rows(out)
        assert sorted(Path(p).name for p in rows["path"]) == ["scan0.png", "scan1.png",
                                                              "scan2.png"]
        errors = pd.read_csv(out / "errors.csv")
        assert errors.empty, errors  # predictions.csv, predict.json were not taken as scans


# ---- predict --resume ---------------------------------------------------------------------------
def test_resume_with_other_models_or_threshold_is_refused(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans")
    out = tmp_path / "out"
    base = ["predict", scans, "--out", out]
    assert _cli(capsys, *base, "--cls-run", tiny_runs["cls"], "--threshold", "0.3")[0] == 0
    before = (out / "predictions.csv").read_bytes()
    code, err = _cli(capsys, *base, "--cls-run", tiny_runs["cls"], "--threshold", "0.6",
                     "--resume")
    assert code == 2 and "threshold" in _error_line(err)
    code, err = _cli(capsys, *base, "--cls-run", tiny_runs["cls2"], "--threshold", "0.3",
                     "--resume")
    assert code == 2 and "--cls-run" in _error_line(err)
    code, err = _cli(capsys, *base, "--cls-run", tiny_runs["cls"], "--seg-run",
                     tiny_runs["seg"], "--threshold", "0.3", "--resume")
    assert code == 2 and "--seg-run" in _error_line(err)
    assert (out / "predictions.csv").read_bytes() == before
    # a copy of the same model elsewhere is the same model
    moved = tmp_path / "moved"
    shutil.copytree(tiny_runs["cls"], moved)
    code, err = _cli(capsys, *base, "--cls-run", moved, "--threshold", "0.3", "--resume")
    assert code == 0, err


def test_resume_redoes_an_image_whose_row_was_cut_off(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans")
    out = tmp_path / "out"
    args = ["predict", scans, "--cls-run", tiny_runs["cls"], "--out", out]
    assert _cli(capsys, *args)[0] == 0
    whole = _rows(out)
    text = (out / "predictions.csv").read_bytes()
    for cut in (text[:-15], text[:-1]):  # killed mid-row; killed before the newline
        (out / "predictions.csv").write_bytes(cut)
        code, err = _cli(capsys, *args, "--resume")
        assert code == 0, err
        with open(out / "predictions.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        assert all(len(r) == len(rows[0]) for r in rows), rows
        after = _rows(out)
        assert len(after) == 3 and not after.duplicated(["path", "frame"]).any()
        merged = whole.merge(after, on="path")
        assert np.allclose(merged["p_malignant_x"].astype(float),
                           merged["p_malignant_y"].astype(float), atol=1e-6)


# ---- predict --merge ----------------------------------------------------------------------------
def _parts(tiny_runs, scans: Path, root: Path, capsys, n: int = 2, ids=None,
           extra=()) -> list[Path]:
    parts = []
    for part in ids or range(1, n + 1):
        out = root / f"part-{part}"
        code, err = _cli(capsys, "predict", scans, "--seg-run", tiny_runs["seg"], "--out", out,
                         "--save-masks", "--num-parts", n, "--part-id", part, *extra)
        assert code == 0, err
        parts.append(out)
    return parts


def test_merge_takes_no_file_from_outside_a_part(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans", 4)
    parts = _parts(tiny_runs, scans, tmp_path / "parts", capsys)
    outside = tmp_path / "parts" / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    frame = _rows(parts[0])
    frame.loc[0, "mask"] = "../outside/secret.png"
    frame.loc[1, "mask"] = "/etc/hostname"
    frame.to_csv(parts[0] / "predictions.csv", index=False)
    out = tmp_path / "merged" / "all"
    code, err = _cli(capsys, "predict", "--merge", *parts, "--out", out)
    assert code == 0, err
    assert not (tmp_path / "merged" / "outside").exists()  # nothing written outside --out
    assert _files(out).keys() >= {"predictions.csv", "errors.csv", "predict.json"}
    assert all(k.startswith("masks/") or "/" not in k for k in _files(out))
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == 2 and errors["reason"].str.contains("outside").all()
    merged = _rows(out)
    assert len(merged) == 4 and (merged["mask"] == "").sum() == 2
    assert all((out / m).is_file() for m in merged["mask"] if m)


def test_merge_names_a_missing_part_and_writes_nothing(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans", 4)
    parts = _parts(tiny_runs, scans, tmp_path / "parts", capsys, n=3, ids=[1, 3])
    out = tmp_path / "all"
    code, err = _cli(capsys, "predict", "--merge", *parts, "--out", out)
    assert code == 2 and "part 2 of 3" in _error_line(err)
    assert not out.exists()
    # a folder that is no part at all, after a good one: nothing half-written either
    code, err = _cli(capsys, "predict", "--merge", parts[0], tmp_path / "nope", "--out", out)
    assert code == 2 and str(tmp_path / "nope") in _error_line(err)
    assert not out.exists()
    # the same part twice
    code, err = _cli(capsys, "predict", "--merge", parts[0], parts[0], parts[1], "--out", out)
    assert code == 2 and "part 1" in _error_line(err)
    assert not out.exists()


def test_merge_refuses_parts_that_do_not_belong_together(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans", 4)
    first = _parts(tiny_runs, scans, tmp_path / "a", capsys, ids=[1])
    other = _parts(tiny_runs, scans, tmp_path / "b", capsys, ids=[2],
                   extra=("--seg-threshold", "0.3"))
    out = tmp_path / "all"
    code, err = _cli(capsys, "predict", "--merge", *first, *other, "--out", out)
    assert code == 2 and "--seg-threshold" in _error_line(err)
    assert not out.exists()
    # duplicated rows
    good = _parts(tiny_runs, scans, tmp_path / "c", capsys, ids=[2])
    frame = _rows(first[0])
    pd.concat([frame, frame.iloc[:1]]).to_csv(first[0] / "predictions.csv", index=False)
    code, err = _cli(capsys, "predict", "--merge", *first, *good, "--out", out)
    assert code == 2 and "twice" in _error_line(err)
    assert not out.exists()


def test_merge_overwrite_only_replaces_a_predict_folder(tiny_runs, tmp_path, capsys):
    scans = _scans(tmp_path / "scans", 4)
    parts = _parts(tiny_runs, scans, tmp_path / "parts", capsys)
    notes = tmp_path / "notes"
    (notes / "masks").mkdir(parents=True)
    (notes / "masks" / "mine.png").write_bytes(b"mine")
    (notes / "predictions.csv").write_text("mine\n")
    before = _files(notes)
    code, err = _cli(capsys, "predict", "--merge", *parts, "--out", notes, "--overwrite")
    assert code == 2 and "not written by breastus" in _error_line(err)
    assert _files(notes) == before
    out = tmp_path / "all"
    assert _cli(capsys, "predict", "--merge", *parts, "--out", out)[0] == 0
    code, err = _cli(capsys, "predict", "--merge", *parts, "--out", out, "--overwrite")
    assert code == 0, err
    assert len(_rows(out)) == 4


# ---- split --materialize ------------------------------------------------------------------------
def test_materialize_replaces_only_its_own_split_folder(breast_src, tmp_path, capsys):
    data = tmp_path / "data"
    assert _cli(capsys, "prepare", breast_src, "--out", data)[0] == 0
    mine = data / "split"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, err = _cli(capsys, "split", data, "--ratio", "0.34", "0.33", "0.33", "--materialize")
    assert code == 2 and str(mine) in _error_line(err)
    assert (mine / "notes.txt").read_text() == "mine"
    assert not (data / "splits.csv").exists()  # refused before anything was written
    shutil.rmtree(mine)
    for _ in range(2):  # written, then replaced
        code, err = _cli(capsys, "split", data, "--ratio", "0.34", "0.33", "0.33",
                         "--materialize")
        assert code == 0, err
    assert (data / "split" / "cls").is_dir() and (data / "split" / "split.json").is_file()


# ---- cv and sweep output folders ---------------------------------------------------------------
@pytest.mark.parametrize("command", [["cv", "cls", "--folds", "3"], ["sweep", "cls"]])
def test_cv_and_sweep_never_write_into_a_folder_that_is_not_theirs(command, learn_data,
                                                                    tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    before = _files(notes)
    code, err = _cli(capsys, *command, str(learn_data), "--out", str(notes), "--model",
                     "smallcnn", "--weights", "none")
    assert code == 2
    assert "is not a breastus" in _error_line(err) and str(notes) in err
    assert _files(notes) == before
