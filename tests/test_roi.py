"""Lesion-centred crop boxes on hand-made masks; a lesion-centred classifier end to end, alone
and fused with a whole-image one."""

from __future__ import annotations

import numpy as np
import pytest

from breastus_cli.data.roi import crop, roi_box


def _mask(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_box_is_square_around_the_lesion_without_margin():
    box, found = roi_box(_mask((100, 100), 40, 50, 30, 60), 0.0)
    assert found and box == (30, 30, 60, 60)  # 30 wide lesion -> 30x30 box, centred


def test_margin_grows_the_box_on_every_side():
    box, _ = roi_box(_mask((200, 200), 90, 110, 80, 120), 0.25)  # 40 x 20 lesion
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 == 60  # 40 * (1 + 2 * 0.25)
    assert (x0 + x1) / 2 == 100 and (y0 + y1) / 2 == 100


def test_box_is_shifted_inside_at_the_border():
    box, _ = roi_box(_mask((100, 100), 0, 10, 90, 100), 0.5)  # lesion in the top-right corner
    x0, y0, x1, y1 = box
    assert (x1 - x0, y1 - y0) == (20, 20)
    assert (x1, y0) == (100, 0)  # shifted, not cut
    assert 0 <= x0 and y1 <= 100


def test_box_is_clipped_when_the_image_is_too_small():
    box, _ = roi_box(_mask((50, 300), 10, 40, 20, 180), 0.2)  # 160 wide lesion, 50 high image
    x0, y0, x1, y1 = box
    assert (y0, y1) == (0, 50)  # clipped to the image height
    assert x1 - x0 == 224  # 160 * 1.4, still square in intent
    box, _ = roi_box(_mask((50, 200), 10, 40, 20, 180), 0.2)
    assert box == (0, 0, 200, 50)  # wider than the image too: the whole image


def test_empty_mask_gives_the_whole_image():
    box, found = roi_box(np.zeros((30, 40), bool), 0.2)
    assert not found and box == (0, 0, 40, 30)


def test_crop_and_bad_margin():
    image = np.arange(100).reshape(10, 10)
    assert crop(image, (2, 3, 5, 7)).shape == (4, 3)
    with pytest.raises(ValueError):
        roi_box(np.ones((4, 4), bool), -0.1)


def test_lesion_centred_training_evaluation_and_prediction(learn_data, seg_run, cls_evaluated,
                                                            tmp_path):
    import json

    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from breastus_cli.engine.apply import fusion
    from conftest import FAST_CLS, copy_run, run_cli

    run = tmp_path / "roi"
    proc = run_cli("train-cls", str(learn_data), *FAST_CLS, "--epochs", "4", "--lr", "1e-3",
                   "--roi", "mask", "--roi-margin", "0.3", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["roi"] == {"source": "mask", "margin": 0.3}
    assert len(list((run / "roi").iterdir())) == config["data"]["n_train"] + config["data"]["n_val"]

    proc = run_cli("evaluate", str(run))  # ground-truth crops
    assert proc.returncode == 0, proc.stderr
    gt_only = json.loads((run / "eval-test/metrics.json").read_text())
    assert gt_only["roi"]["crops_from"] == "ground-truth masks"

    proc = run_cli("evaluate", str(run), "--seg-run", str(seg_run))  # crops from the segmenter
    assert proc.returncode == 0, proc.stderr
    both = json.loads((run / "eval-test/metrics.json").read_text())
    assert both["roi"]["crops_from"].startswith("segmentation run")
    assert both["ground_truth_roi"]["auc"] == pytest.approx(gt_only["auc"])
    assert "ground-truth crops" in (run / "eval-test/report.md").read_text()
    assert "lesion_found" in pd.read_csv(run / "eval-test/predictions.csv").columns

    image = next((learn_data / "seg" / "images").iterdir())
    proc = run_cli("predict", str(image), "--cls-run", str(run), "--out", str(tmp_path / "p"))
    assert proc.returncode == 2 and "--seg-run" in proc.stderr
    proc = run_cli("predict", str(image), "--cls-run", str(run), "--seg-run", str(seg_run),
                   "--out", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(tmp_path / "p/predictions.csv").iloc[0]
    assert 0 <= row["p_malignant"] <= 1 and row["lesion_area_px"] >= 0

    # fused with a second view: the whole-image classifier's score joins the combination
    # (fitted on validation), in evaluate and in predict
    whole = copy_run(cls_evaluated, tmp_path / "whole")
    proc = run_cli("evaluate", str(run), "--seg-run", str(seg_run), "--fusion", "descriptors",
                   "--fuse-with", str(whole), "--bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    stored = fusion.read(run)
    assert stored.partner["path"] == "../whole" and stored.combiner.names[-1] == "partner"
    metrics = json.loads((run / "eval-test/metrics.json").read_text())
    frame = pd.read_csv(run / "eval-test/predictions.csv")
    plain = pd.read_csv(cls_evaluated / "eval-test/predictions.csv")
    # the second classifier's scores are its own evaluation's, case by case
    assert frame.set_index("case_id")["p_partner"].to_dict() == pytest.approx(
        plain.set_index("case_id")["p_malignant"].to_dict(), abs=1e-5)
    assert metrics["fusion"]["partner"]["auc"] == pytest.approx(
        roc_auc_score(frame["y_true"], frame["p_partner"]))
    assert "second classifier alone" in (run / "eval-test/report.md").read_text()
    out = tmp_path / "p2"
    proc = run_cli("predict", str(image), "--cls-run", str(run), "--seg-run", str(seg_run),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    values = {k: float(row[k]) if pd.notna(row[k]) else float("nan")
              for k in (*fusion.features()[:-1], "area_mm2") if k in row}
    _, p_fused = stored.scores(np.array([row["p_malignant"]]), fusion.feature_row(values),
                               np.array([row["p_partner"]]))
    assert row["p_fused"] == pytest.approx(p_fused[0], abs=1e-4)
    # the other way round: a whole-image run fused with the lesion-centred one, whose crops
    # come from the segmenter in evaluate and in predict alike
    proc = run_cli("evaluate", str(whole), "--seg-run", str(seg_run), "--fusion", "descriptors",
                   "--fuse-with", str(run), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert (whole / "eval-test/partner-roi-seg-val").is_dir()
    proc = run_cli("predict", str(image), "--cls-run", str(whole), "--seg-run", str(seg_run),
                   "--out", str(tmp_path / "p3"))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(tmp_path / "p3/predictions.csv").iloc[0]["p_partner"] == pytest.approx(
        row["p_malignant"], abs=1e-4)
    # retrained since (another model.keras): refused in one line, not scored with stale weights
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes() + b"\0")
    proc = run_cli("predict", str(image), "--cls-run", str(whole), "--seg-run", str(seg_run),
                   "--out", str(tmp_path / "p4"))
    assert proc.returncode == 2 and "has changed since" in proc.stderr
