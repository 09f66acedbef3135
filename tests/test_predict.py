"""`breastus predict` on a messy folder: modes, sizes, DICOM, bad files, resume, shards."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_dicom
from PIL import Image


def _dicom(path: Path, frames: np.ndarray, photometric: str = "MONOCHROME2",
           region_cm: float | None = None, spacing_mm: float | None = None) -> Path:
    """An 8-bit ultrasound DICOM, grey or RGB, one or several frames."""
    return write_dicom(path, frames, photometric, region_cm=region_cm, spacing_mm=spacing_mm)


@pytest.fixture(scope="module")
def scan_folder(learn_data, tmp_path_factory) -> Path:
    """Good images in many modes and sizes (from the synthetic test split), DICOMs, bad files."""
    folder = tmp_path_factory.mktemp("scans") / "scans"
    (folder / "nested" / "deeper").mkdir(parents=True)
    manifest = pd.read_csv(learn_data / "manifest.csv")
    images = [np.asarray(Image.open(learn_data / p)) for p in manifest["image"][:9]]
    Image.fromarray(images[0]).save(folder / "grey.png")
    Image.fromarray(np.stack([images[1]] * 3, -1)).save(folder / "rgb.jpg", quality=95)
    rgba = np.concatenate([np.stack([images[2]] * 3, -1),
                           np.full(images[2].shape + (1,), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(folder / "nested" / "rgba.png")
    Image.fromarray(images[3]).convert("P").save(folder / "nested" / "palette.bmp")
    Image.fromarray(images[4].astype(np.uint16) * 257).save(folder / "nested" / "deep16.tif")
    Image.fromarray(images[5]).resize((300, 220)).save(folder / "nested" / "deeper" / "big.png")
    _dicom(folder / "mono.dcm", images[6][None], region_cm=0.01)
    _dicom(folder / "nested" / "colour", np.stack([images[7]] * 3, -1)[None], "RGB",
           spacing_mm=0.2)  # no suffix: found by its DICM marker
    _dicom(folder / "cine.dcm", np.stack([images[8], images[8][::-1], images[8]]))
    (folder / "corrupt.png").write_bytes((folder / "grey.png").read_bytes()[:200])
    (folder / "notes.txt").write_text("not a scan")
    (folder / "nested" / "empty.png").write_bytes(b"")
    return folder


GOOD_ROWS = 6 + 1 + 1 + 3  # six image files, two single-frame DICOMs, a 3-frame DICOM


@pytest.fixture(scope="module")
def full_run(scan_folder, cls_run, seg_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "out"
    proc = run_cli("predict", str(scan_folder), "--cls-run", str(cls_run), "--seg-run",
                   str(seg_run), "--out", str(out), "--save-masks", "--save-overlays",
                   "--explain", "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert "3 file(s) could not be read" in proc.stderr
    # the decoder's own logging stays out of the terminal: one line per problem, from breastus
    assert "WARN" not in proc.stderr and "grfmt" not in proc.stderr, proc.stderr
    return out


def test_messy_folder_rows_errors_and_files(full_run, scan_folder):
    pred = pd.read_csv(full_run / "predictions.csv", keep_default_na=False)
    errors = pd.read_csv(full_run / "errors.csv")
    assert len(pred) == GOOD_ROWS
    assert sorted(Path(p).name for p in errors["path"]) == ["corrupt.png", "empty.png",
                                                             "notes.txt"]
    assert set(errors["reason"]) == {"corrupt image (image file is truncated)", "empty file",
                                     "not an image (unrecognised format)"}
    cine = pred[pred["path"].str.endswith("cine.dcm")]
    assert cine["frame"].astype(int).tolist() == [0, 1, 2]
    assert pred["p_malignant"].astype(float).between(0, 1).all()
    assert set(pred["label"]) <= {"benign", "malignant"}
    for row in pred.itertuples():
        mask = Image.open(full_run / row.mask)
        assert mask.size == (row.width, row.height)  # the original image's size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert int((np.asarray(mask) > 0).sum()) == int(row.lesion_area_px)
        assert (full_run / row.overlay).is_file() and (full_run / row.explain).is_file()
    big = pred[pred["path"].str.endswith("big.png")].iloc[0]
    assert (big["width"], big["height"]) == (300, 220)


def test_dicom_pixel_size_gives_areas_in_mm2(full_run):
    pred = pd.read_csv(full_run / "predictions.csv", keep_default_na=False)
    mono = pred[pred["path"].str.endswith("mono.dcm")].iloc[0]
    assert float(mono["pixel_size_mm"]) == pytest.approx(0.1)  # 0.01 cm in the US region
    assert float(mono["lesion_area_mm2"]) == pytest.approx(int(mono["lesion_area_px"]) * 0.01,
                                                           abs=1e-3)
    colour = pred[pred["path"].str.endswith("colour")].iloc[0]
    assert float(colour["pixel_size_mm"]) == pytest.approx(0.2)  # Pixel Spacing
    grey = pred[pred["path"].str.endswith("grey.png")].iloc[0]
    assert grey["pixel_size_mm"] == "" and grey["lesion_area_mm2"] == ""


def test_predict_agrees_with_evaluate_on_the_same_images(cls_evaluated, learn_data, tmp_path):
    """The streaming predictor and the training pipeline resize and score identically."""
    evaluated = pd.read_csv(cls_evaluated / "eval-test/predictions.csv")
    files = [str(learn_data / p) for p in evaluated["image"]]
    out = tmp_path / "out"
    proc = run_cli("predict", *files, "--cls-run", str(cls_evaluated), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out / "predictions.csv")
    pred["image"] = [str(Path(p).relative_to(learn_data)) for p in pred["path"]]
    merged = evaluated.merge(pred, on="image", suffixes=("_eval", "_pred"))
    assert len(merged) == len(evaluated)
    assert np.abs(merged["p_malignant_eval"] - merged["p_malignant_pred"]).max() < 1e-4


def test_resume_skips_done_images_and_restores_missing_rows(full_run, scan_folder, cls_run,
                                                           seg_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if not r["path"].endswith(("grey.png", "cine.dcm"))]
    kept.append(next(r for r in rows if r["path"].endswith("cine.dcm") and r["frame"] == "0"))
    with open(out / "predictions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    proc = run_cli("predict", str(scan_folder), "--cls-run", str(cls_run), "--seg-run",
                   str(seg_run), "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    after = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(after) == GOOD_ROWS
    assert not after.duplicated(["path", "frame"]).any()
    assert len(pd.read_csv(out / "errors.csv")) == 3  # failed files are not tried again
    refused = run_cli("predict", str(scan_folder), "--cls-run", str(cls_run), "--out", str(out))
    assert refused.returncode == 2 and "--resume" in refused.stderr


def test_two_shards_merged_equal_the_unsharded_run(full_run, scan_folder, cls_run, seg_run,
                                                   tmp_path):
    for part in (1, 2):
        proc = run_cli("predict", str(scan_folder), "--cls-run", str(cls_run), "--seg-run",
                       str(seg_run), "--out", str(tmp_path / f"part-{part}"), "--save-masks",
                       "--num-parts", "2", "--part-id", str(part))
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("predict", "--merge", str(tmp_path / "part-1"), str(tmp_path / "part-2"),
                   "--out", str(tmp_path / "all"))
    assert proc.returncode == 0, proc.stderr
    columns = ["path", "frame", "width", "height", "label", "lesion_area_px", "mask"]
    merged = pd.read_csv(tmp_path / "all/predictions.csv", keep_default_na=False)
    whole = pd.read_csv(full_run / "predictions.csv", keep_default_na=False)
    assert merged[columns].astype(str).equals(whole[columns].astype(str))
    assert np.allclose(merged["p_malignant"].astype(float), whole["p_malignant"].astype(float),
                       atol=1e-5)
    assert all((tmp_path / "all" / m).is_file() for m in merged["mask"])
    parts = [pd.read_csv(tmp_path / f"part-{p}/predictions.csv") for p in (1, 2)]
    assert not set(parts[0]["path"]) & set(parts[1]["path"])  # each file in exactly one part
    errors = pd.read_csv(tmp_path / "all/errors.csv")
    assert len(errors) == 3


def test_nothing_readable_exits_1_and_bad_usage_exits_2(cls_run, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_text("nope")
    proc = run_cli("predict", str(bad), "--cls-run", str(cls_run), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "nothing could be read" in proc.stderr
    proc = run_cli("predict", str(bad), "--out", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "--cls-run" in proc.stderr
    proc = run_cli("predict", str(tmp_path / "missing"), "--cls-run", str(cls_run), "--out",
                   str(tmp_path / "o3"))
    assert proc.returncode == 2 and "input not found" in proc.stderr
    proc = run_cli("predict", str(bad), "--seg-run", str(cls_run), "--out", str(tmp_path / "o4"))
    assert proc.returncode == 2 and "is a 'cls' run" in proc.stderr
    proc = run_cli("predict", str(bad), "--cls-run", str(cls_run), "--out", str(tmp_path / "o5"),
                   "--num-parts", "2", "--part-id", "3")
    assert proc.returncode == 2 and "--part-id" in proc.stderr


def test_label_uses_the_run_threshold_or_the_option(scan_folder, cls_run, tmp_path):
    proc = run_cli("predict", str(scan_folder / "grey.png"), "--cls-run", str(cls_run),
                   "--out", str(tmp_path / "a"), "--threshold", "0.0")
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(tmp_path / "a/predictions.csv").iloc[0]
    assert row["label"] == "malignant" and row["threshold"] == 0.0
    proc = run_cli("predict", str(scan_folder / "grey.png"), "--cls-run", str(cls_run),
                   "--out", str(tmp_path / "b"), "--threshold", "1.0")
    row = pd.read_csv(tmp_path / "b/predictions.csv").iloc[0]
    assert row["label"] == ("malignant" if row["p_malignant"] >= 1.0 else "benign")


def test_threshold_chosen_by_evaluate_is_used_by_predict(scan_folder, cls_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    (run / "threshold.json").write_text('{"threshold": 0.0, "source": "test"}')
    proc = run_cli("predict", str(scan_folder / "grey.png"), "--cls-run", str(run),
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(tmp_path / "out/predictions.csv").iloc[0]
    assert row["threshold"] == 0.0 and row["label"] == "malignant"


def test_rows_of_a_batch_are_made_while_the_next_batch_runs_the_model(scan_folder, seg_run,
                                                                      tmp_path, monkeypatch):
    """A batch's post-processing (masks at full size, descriptors, files) overlaps the next
    batch's forward pass; rows still come out complete and in input order."""
    import threading

    import breastus_cli.engine.apply.predict as P
    import breastus_cli.engine.apply.predict_rows as R

    second_forward = threading.Event()
    forwards: list[str] = []
    waited: list[bool] = []
    original_forward, original_rows = R.forward, R.predict_batch

    def forward(frames, *args):
        forwards.append(threading.current_thread().name)
        if len(forwards) == 2:
            second_forward.set()
        return original_forward(frames, *args)

    def rows(frames, *args):
        if not waited:  # the first batch's rows wait until the second batch is in the model
            waited.append(second_forward.wait(timeout=120))
        return original_rows(frames, *args)

    monkeypatch.setattr(R, "forward", forward)
    monkeypatch.setattr(R, "predict_batch", rows)
    result = P.predict(P.PredictSettings([scan_folder], tmp_path / "out", seg_run=seg_run,
                                         batch_size=2))
    assert waited == [True]  # not a deadlock: the second forward ran before the first rows
    assert all(name.startswith("breastus-forward") for name in forwards)
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert len(frame) == result.rows == GOOD_ROWS
    assert (frame["lesion_area_px"] != "").all()
    paths = [Path(p) for p in frame["path"]]
    assert paths == sorted(paths)  # input order (expand_inputs sorts), frames in sequence
    assert list(frame[frame["path"].str.endswith("cine.dcm")]["frame"]) == ["0", "1", "2"]


def test_two_batches_are_in_a_keras_model_at_once_and_rows_keep_their_order(
        scan_folder, seg_run, tmp_path, monkeypatch):
    """With the Keras engine the second batch's forward pass starts before the first one's
    ends (its parallel sections leave cores idle that a second batch fills); without
    a second forward worker the first call would wait here until its timeout."""
    import threading

    import breastus_cli.engine.apply.predict as P
    import breastus_cli.engine.apply.predict_rows as R

    second_started = threading.Event()
    calls: list[int] = []
    overlapped: list[bool] = []
    lock = threading.Lock()
    original = R.forward

    def forward(frames, *args):
        with lock:
            calls.append(len(calls))
            index = calls[-1]
        if index == 1:
            second_started.set()
        outputs = original(frames, *args)
        if index == 0:  # the first batch ends only once the second is in the model
            overlapped.append(second_started.wait(timeout=120))
        return outputs

    monkeypatch.setattr(R, "forward", forward)
    result = P.predict(P.PredictSettings([scan_folder], tmp_path / "out", seg_run=seg_run,
                                         batch_size=2))
    assert overlapped == [True]
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert len(frame) == result.rows == GOOD_ROWS
    paths = [Path(p) for p in frame["path"]]
    assert paths == sorted(paths)
    # the same rows as one batch at a time gives
    monkeypatch.setattr(P, "FORWARD_WORKERS", 1)
    monkeypatch.setattr(R, "forward", original)
    P.predict(P.PredictSettings([scan_folder], tmp_path / "one", seg_run=seg_run, batch_size=2))
    one = pd.read_csv(tmp_path / "one" / "predictions.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(frame.drop(columns="seconds"), one.drop(columns="seconds"))


def test_a_failing_batch_still_writes_the_rows_of_the_batch_before(scan_folder, seg_run,
                                                                  tmp_path, monkeypatch):
    """Finished work is never lost: the model failing on the second batch leaves the first
    batch's rows (made in the rows thread meanwhile) in predictions.csv, for --resume."""
    import breastus_cli.engine.apply.predict as P
    import breastus_cli.engine.apply.predict_rows as R
    from breastus_cli.errors import WorkError

    calls: list[int] = []
    original = R.forward

    def forward(frames, *args):
        calls.append(len(frames))
        if len(calls) == 2:
            raise WorkError("the model failed")
        return original(frames, *args)

    monkeypatch.setattr(R, "forward", forward)
    with pytest.raises(WorkError):
        P.predict(P.PredictSettings([scan_folder], tmp_path / "out", seg_run=seg_run,
                                    batch_size=2))
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(frame) == calls[0] == 2


def test_predict_applies_the_segmenters_chosen_post_processing(scan_folder, seg_run, tmp_path):
    """RUN/postprocess.json (written by evaluate) is applied to predict's masks and areas and
    recorded in predict.json; --seg-postprocess none gives the plain masks, and resuming with
    another post-processing is refused."""
    import json

    import breastus_cli.engine.apply.predict as P
    import breastus_cli.engine.apply.predict_rows as R
    from breastus_cli.engine.apply.postprocess import largest_component
    from conftest import copy_run

    run = copy_run(seg_run, tmp_path / "unet")
    (run / "postprocess.json").write_text(json.dumps(
        {"method": "largest", "validation_dice": {"none": 0.5, "largest": 0.6},
         "n_validation": 3}))
    given = P.PredictSettings([scan_folder], tmp_path / "kept", seg_run=run, save_masks=True)
    P.predict(given)
    assert given.seg_postprocess is None  # the run's choice applied, the caller's object kept
    P.predict(P.PredictSettings([scan_folder], tmp_path / "plain", seg_run=run, save_masks=True,
                                seg_postprocess="none"))
    assert json.loads((tmp_path / "kept" / "predict.json").read_text())["seg_postprocess"] \
        == "largest"
    kept, plain = (pd.read_csv(tmp_path / name / "predictions.csv", keep_default_na=False)
                   for name in ("kept", "plain"))
    assert len(kept) == len(plain) == GOOD_ROWS
    for a, b in zip(kept.itertuples(), plain.itertuples()):
        mask = np.asarray(Image.open(tmp_path / "kept" / a.mask)) > 0
        raw = np.asarray(Image.open(tmp_path / "plain" / b.mask)) > 0
        assert np.array_equal(mask, largest_component(raw)), a.path
        assert int(a.lesion_area_px) == int(mask.sum())
    proc = run_cli("predict", str(scan_folder), "--seg-run", str(run), "--out",
                   str(tmp_path / "kept"), "--resume", "--seg-postprocess", "none")
    assert proc.returncode == 2, proc.stderr
    assert "--seg-postprocess largest -> none" in proc.stderr
