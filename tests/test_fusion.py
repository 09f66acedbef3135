"""The fused classifier (CNN score + lesion descriptors): what it is fitted on, what it stores,
and that it scores as its numbers say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from breastus_cli.engine.apply import fusion
from breastus_cli.errors import InputError


def _cases(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a weakly informative CNN score and descriptor rows where solidity and
    taller-than-wide carry the label (as they do in malignant lesions)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    x = rng.normal(size=(n, len(fusion.features())))
    names = list(fusion.features())
    x[:, names.index("solidity")] -= 1.5 * y
    x[:, names.index("taller_than_wide")] += 1.0 * y
    p_cnn = 1 / (1 + np.exp(-(0.8 * (y - 0.5) + rng.normal(scale=1.0, size=n))))
    return y, p_cnn, x


def test_logistic_round_trips_through_plain_numbers_and_imputes_missing_values():
    y, _, x = _cases(200, 0)
    model = fusion.fit_logistic(x, y, fusion.features(), c=1.0)
    again = fusion.Logistic.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(x), model.predict(x))
    # contributions add up to the log-odds
    logit = np.log(model.predict(x) / (1 - model.predict(x)))
    np.testing.assert_allclose(model.contributions(x).sum(axis=1) + model.intercept, logit,
                               rtol=1e-6, atol=1e-9)
    # a missing value takes the training median: the same as giving the median
    row = x[:1].copy()
    row[0, 3] = np.nan
    filled = x[:1].copy()
    filled[0, 3] = model.median[3]
    np.testing.assert_allclose(model.predict(row), model.predict(filled))
    # the descriptors that carry the label get the weights, with the right signs
    weights = model.weights()
    assert weights["solidity"] < -0.5 and weights["taller_than_wide"] > 0.3
    ranked = sorted(weights, key=lambda k: -abs(weights[k]))
    assert set(ranked[:2]) == {"solidity", "taller_than_wide"}


def test_fused_beats_the_weak_cnn_alone_on_cases_it_never_saw():
    from sklearn.metrics import roc_auc_score

    y_tr, _, x_tr = _cases(300, 1)
    y_val, p_val, x_val = _cases(120, 2)
    y_te, p_te, x_te = _cases(400, 3)
    fused = fusion.fit(y_tr, x_tr, y_val, p_val, x_val, target_sensitivity=0.9,
                       val_masks_from="test masks")
    p_desc, p_fused = fused.scores(p_te, x_te)
    auc_cnn, auc_fused = roc_auc_score(y_te, p_te), roc_auc_score(y_te, p_fused)
    assert auc_fused > auc_cnn + 0.05 and auc_fused >= roc_auc_score(y_te, p_desc) - 0.02
    # both inputs of the combiner carry weight; the threshold was chosen on validation
    assert fused.combiner.coef[0] > 0 and fused.combiner.coef[1] > 0
    assert fused.threshold_source.startswith("chosen on validation")
    assert "training cases" in fused.fitted_on["descriptor_model"]
    assert "validation cases" in fused.fitted_on["combiner"]


def test_fusion_file_round_trip_and_a_damaged_file_is_one_line(tmp_path):
    y_tr, _, x_tr = _cases(100, 4)
    y_val, p_val, x_val = _cases(60, 5)
    fused = fusion.fit(y_tr, x_tr, y_val, p_val, x_val, None, "masks")
    assert fused.threshold == 0.5
    fusion.write(tmp_path, fused)
    again = fusion.read(tmp_path)
    np.testing.assert_allclose(again.scores(p_val, x_val)[1], fused.scores(p_val, x_val)[1])
    assert fusion.read(tmp_path / "nowhere") is None
    (tmp_path / fusion.FUSION).write_text('{"kind": "descriptors"}')
    with pytest.raises(InputError, match="bad run file: .*fusion.json: descriptor_model: "
                                         "Field required"):
        fusion.read(tmp_path)


def _second_view(y: np.ndarray, seed: int) -> np.ndarray:
    """Another classifier's score: informative, its errors independent of the first CNN's."""
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(1.5 * (y - 0.5) + rng.normal(scale=1.0, size=len(y)))))


def test_a_second_classifiers_score_adds_its_view_on_cases_it_never_saw(tmp_path):
    from sklearn.metrics import roc_auc_score

    y_tr, _, x_tr = _cases(300, 1)
    y_val, p_val, x_val = _cases(200, 2)
    y_te, p_te, x_te = _cases(600, 3)
    q_val, q_te = _second_view(y_val, 12), _second_view(y_te, 13)
    partner = {"path": "../whole-image", "sha256": "ab" * 32}
    alone = fusion.fit(y_tr, x_tr, y_val, p_val, x_val, 0.9, "masks")
    both = fusion.fit(y_tr, x_tr, y_val, p_val, x_val, 0.9, "masks", q_val, partner)
    auc_alone = roc_auc_score(y_te, alone.scores(p_te, x_te)[1])
    auc_both = roc_auc_score(y_te, both.scores(p_te, x_te, q_te)[1])
    assert auc_both > auc_alone + 0.015 and auc_both > roc_auc_score(y_te, q_te) + 0.05
    assert both.combiner.names == ["cnn", "descriptors", "partner"]
    assert both.combiner.coef[2] > 0.3  # the second view carries weight
    assert "../whole-image (second classifier)" in both.fitted_on["combiner"]
    # fusion.json keeps it, and a fusion with a partner cannot score without its score
    fusion.write(tmp_path, both)
    again = fusion.read(tmp_path)
    assert again.partner == partner
    np.testing.assert_allclose(again.scores(p_te, x_te, q_te)[1], both.scores(p_te, x_te, q_te)[1])
    with pytest.raises(InputError, match="--fuse-with"):
        again.scores(p_te, x_te)


def test_the_second_classifier_is_found_beside_the_run_and_checked(tmp_path):
    runs = tmp_path / "runs"
    (runs / "lesion").mkdir(parents=True)
    (runs / "whole").mkdir()
    (runs / "whole" / "model.keras").write_bytes(b"weights one")
    record = fusion.partner_record(runs / "lesion", runs / "whole")
    assert record["path"] == "../whole"  # relative: the two runs move together
    y_tr, _, x_tr = _cases(100, 4)
    y_val, p_val, x_val = _cases(60, 5)
    fused = fusion.fit(y_tr, x_tr, y_val, p_val, x_val, None, "masks", _second_view(y_val, 6),
                       record)
    moved = tmp_path / "moved"
    runs.rename(moved)
    assert fusion.partner_dir(moved / "lesion", fused) == moved / "whole"
    (moved / "whole" / "model.keras").write_bytes(b"weights two")  # retrained since
    with pytest.raises(InputError, match="has changed since"):
        fusion.partner_dir(moved / "lesion", fused)
    (moved / "whole" / "model.keras").unlink()
    with pytest.raises(InputError, match="which is missing"):
        fusion.partner_dir(moved / "lesion", fused)
    with pytest.raises(InputError, match="not a finished classification run"):
        fusion.partner_record(moved / "lesion", moved / "whole")


def test_a_second_classifier_that_trained_on_the_scored_cases_is_refused(learn_data, tmp_path):
    """--fuse-with a model of another split (here fold 0's, whose training folds hold cases of
    the run's test split): its scores there would be memories, so the fusion is refused; a
    model of the same split, or of another dataset, passes."""
    from breastus_cli.engine.evaluation.eval_cases import check_partner_unseen
    from breastus_cli.engine.runs.rundir import data_record, run_cases

    def config(fold):
        return {"data": {**data_record(learn_data, fold), "path": str(learn_data)},
                "settings": {"fold": fold, "seed": 42, "val_fraction": 0.1}}

    run = config(None)
    scored = [run_cases(run, "val", learn_data), run_cases(run, "test", learn_data)]
    check_partner_unseen(tmp_path / "same-split", config(None), learn_data, scored, run)
    with pytest.raises(InputError, match=r"trained on \d+ case\(s\) that the fused classifier"):
        check_partner_unseen(tmp_path / "fold-0", config(0), learn_data, scored, run)
    # the run's own training cases (evaluate --split train): the partner knows no more of them
    check_partner_unseen(tmp_path / "fold-0", config(0), learn_data,
                         [run_cases(run, "train", learn_data)], run)
    other = {"data": {"path": str(tmp_path / "elsewhere"), "manifest_sha256": "0" * 64},
             "settings": {"fold": 0}}
    check_partner_unseen(tmp_path / "other-data", other, learn_data, scored)


def test_fuse_with_needs_the_fused_classifier_and_another_single_run(tmp_path):
    from breastus_cli.engine.evaluation.eval_settings import EvalSettings
    from breastus_cli.errors import UsageError

    run, other, seg = tmp_path / "run", tmp_path / "other", tmp_path / "seg"
    with pytest.raises(UsageError, match="give it with --fusion descriptors"):
        EvalSettings(run_dir=run, fuse_with=other).validate()
    with pytest.raises(UsageError, match="another classifier than the run itself"):
        EvalSettings(run_dir=run, seg_run=seg, fusion="descriptors", fuse_with=run).validate()
    (other / "cv.json").parent.mkdir()
    (other / "cv.json").write_text("{}")  # a cross-validation folder: fold by fold is cv's job
    with pytest.raises(UsageError, match="--fuse-with-cv"):
        EvalSettings(run_dir=run, seg_run=seg, fusion="descriptors", fuse_with=other).validate()


def test_one_class_cannot_be_fitted():
    _, _, x = _cases(30, 6)
    with pytest.raises(InputError, match="benign and malignant"):
        fusion.fit_logistic(x, np.zeros(30, int), fusion.features(), 1.0)


# ---- end to end: evaluate fits it, predict applies it ---------------------------------------
@pytest.fixture(scope="module")
def fused_run(cls_run, seg_run, tmp_path_factory):
    """A copy of the shared classifier with its fused model fitted by evaluate."""
    from conftest import copy_run, run_cli

    run = copy_run(cls_run, tmp_path_factory.mktemp("fused") / "smallcnn")
    proc = run_cli("evaluate", str(run), "--seg-run", str(seg_run), "--fusion", "descriptors",
                   "--target-sensitivity", "0.9", "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    return run


def test_evaluate_reports_cnn_descriptors_and_fused_side_by_side(fused_run, seg_run):
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    metrics = json.loads((fused_run / "eval-test/metrics.json").read_text())
    block = metrics["fusion"]
    frame = pd.read_csv(fused_run / "eval-test/predictions.csv")
    for name, column in (("cnn", "p_malignant"), ("descriptors", "p_descriptors"),
                         ("fused", "p_fused")):
        assert block[name]["auc"] == pytest.approx(roc_auc_score(frame["y_true"], frame[column]))
    oracle = block["ground_truth_masks"]
    assert oracle["source"] == fusion.ORACLE
    assert oracle["fused"]["auc"] == pytest.approx(
        roc_auc_score(frame["y_true"], frame["p_fused_gt_mask"]))
    assert block["masks_from"] == f"segmentation run {seg_run}"
    # the fused threshold was chosen on validation, and labels follow it
    stored = fusion.read(fused_run)
    assert (frame["y_pred_fused"] == (frame["p_fused"] >= stored.threshold)).all()
    report = (fused_run / "eval-test/report.md").read_text()
    assert "Fused classifier" in report and "oracle: upper bound" in report
    assert "| solidity |" in report
    assert frame["fused_why"].str.contains("[+-][0-9]", regex=True).all()
    # per lesion in the report: the lesions called most malignant, with their reasons
    top = frame.sort_values("p_fused", ascending=False, kind="stable").iloc[0]
    assert "## Why, per lesion" in report
    assert f"| {top['case_id']} | {top['label']} | {top['p_fused']:.3f} |" in report
    assert top["fused_why"] in report


def test_predict_with_a_fused_run_scores_from_the_segmenters_descriptors(fused_run, seg_run,
                                                                         learn_data, tmp_path):
    import pandas as pd

    from conftest import run_cli

    scans = tmp_path / "scans"
    scans.mkdir()
    manifest = pd.read_csv(learn_data / "manifest.csv")
    for rel in manifest["image"][:6]:
        (scans / Path(rel).name).write_bytes((learn_data / rel).read_bytes())
    out = tmp_path / "out"
    proc = run_cli("predict", str(scans), "--cls-run", str(fused_run), "--seg-run",
                   str(seg_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(out / "predictions.csv")
    assert rows["p_fused"].notna().all() and rows["p_descriptors"].notna().all()
    stored = fusion.read(fused_run)
    # the fused score is the stored model applied to the row's own CNN score and descriptors
    for _, row in rows.iterrows():
        values = {k: float(row[k]) if pd.notna(row[k]) else float("nan")
                  for k in (*fusion.features()[:-1], "area_mm2") if k in row}
        _, p_fused = stored.scores(np.array([row["p_malignant"]]), fusion.feature_row(values))
        assert p_fused[0] == pytest.approx(row["p_fused"], abs=1e-4)
        assert row["label_fused"] == ("malignant" if row["p_fused"] >= stored.threshold
                                      else "benign")
        # why: the three largest contributions, which sum (with the others and the intercept)
        # to the descriptor score's log-odds
        parts = stored.descriptors.contributions(fusion.feature_row(values))[0]
        shown = [item.rsplit(" ", 1) for item in row["fused_why"].split("; ")]
        top = np.argsort(-np.abs(parts))[:3]
        assert [name for name, _ in shown] == [stored.descriptors.names[j] for j in top]
        assert [float(v) for _, v in shown] == pytest.approx(parts[top], abs=0.006)
    record = json.loads((out / "predict.json").read_text())
    assert record["fusion"]["threshold"] == stored.threshold
    # a changed fusion.json is not resumed into the same folder
    data = json.loads((fused_run / fusion.FUSION).read_text())
    data["threshold"] = 0.123
    changed = copy_of(fused_run, tmp_path / "changed")
    (changed / fusion.FUSION).write_text(json.dumps(data))
    again = run_cli("predict", str(scans), "--cls-run", str(changed), "--seg-run",
                    str(seg_run), "--out", str(out), "--resume")
    assert again.returncode == 2 and "fusion.json" in again.stderr


def test_predict_and_evaluate_score_the_same_cases_fused_alike(fused_run, seg_run, learn_data,
                                                              tmp_path):
    """One fused scoring (fusion.score_cases) serves both: predict on the test cases' own
    image files (pixel sizes from the manifest) gives evaluate's CNN, descriptor and fused
    scores and labels, case by case."""
    import pandas as pd

    from conftest import run_cli

    scored = pd.read_csv(fused_run / "eval-test/predictions.csv")
    scans = tmp_path / "scans"
    scans.mkdir()
    for rel in scored["image"]:
        (scans / Path(rel).name).write_bytes((learn_data / rel).read_bytes())
    out = tmp_path / "out"
    proc = run_cli("predict", str(scans), "--cls-run", str(fused_run), "--seg-run",
                   str(seg_run), "--out", str(out), "--manifest",
                   str(learn_data / "manifest.csv"))
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(out / "predictions.csv")
    rows.index = [Path(p).name for p in rows["path"]]
    mine = rows.loc[[Path(rel).name for rel in scored["image"]]]
    assert len(mine) == len(scored) > 0
    for column in ("p_malignant", "p_descriptors", "p_fused"):
        assert mine[column].to_numpy() == pytest.approx(scored[column].to_numpy(), abs=1e-6)
    assert ((mine["label_fused"] == "malignant").to_numpy().astype(int)
            == scored["y_pred_fused"].to_numpy()).all()
    assert list(mine["fused_why"]) == list(scored["fused_why"])


def copy_of(run: Path, dest: Path) -> Path:
    from conftest import copy_run

    return copy_run(run, dest)


def test_resume_refuses_a_predictions_file_with_other_columns(cls_run, learn_data, tmp_path):
    """An output folder written by an older version (other columns) is not appended to."""
    import pandas as pd

    from conftest import run_cli

    scans = tmp_path / "scans"
    scans.mkdir()
    rel = pd.read_csv(learn_data / "manifest.csv")["image"][0]
    (scans / Path(rel).name).write_bytes((learn_data / rel).read_bytes())
    out = tmp_path / "out"
    assert run_cli("predict", str(scans), "--cls-run", str(cls_run), "--out",
                   str(out)).returncode == 0
    text = (out / "predictions.csv").read_text().splitlines()
    old = ",".join(text[0].split(",")[:14])  # the columns before descriptors existed
    (out / "predictions.csv").write_text(old + "\n")
    proc = run_cli("predict", str(scans), "--cls-run", str(cls_run), "--out", str(out),
                   "--resume")
    assert proc.returncode == 2 and "other columns" in proc.stderr
    assert (out / "predictions.csv").read_text() == old + "\n"


def test_an_evaluation_runs_its_segmenter_once_per_image_list(seg_run, learn_data,
                                                              monkeypatch):
    """Crops, descriptors and a lesion-centred partner need the same masks of the same cases:
    inside one evaluation (``mask_cache``) the segmenter is opened once and each image list
    segmented once; outside it every call segments again (a retrained segmenter is never
    served stale masks)."""
    from breastus_cli.engine.apply import masks as ev
    from breastus_cli.engine.apply import inference

    paths = sorted(str(p) for p in (learn_data / "seg/images").glob("*.png"))
    first, second = paths[:5], paths[5:9]
    opened, segmented = [], []
    real_open = inference.open_run

    def counting_open(run, *args, **kwargs):
        loaded = real_open(run, *args, **kwargs)
        opened.append(run)
        real_files = loaded.run_files
        loaded.run_files = lambda files, *a, **k: (segmented.append(len(files)),
                                                   real_files(files, *a, **k))[1]
        return loaded

    monkeypatch.setattr(inference, "open_run", counting_open)
    plain = ev.predicted_masks(seg_run, first, 8)
    with ev.mask_cache():
        cached = ev.predicted_masks(seg_run, first, 8)
        again = ev.predicted_masks(seg_run, first, 8)
        with ev.mask_cache():  # nested: the same cache
            other = ev.predicted_masks(seg_run, second, 8)
        strict = ev.predicted_masks(seg_run, first, 8, threshold=0.9)
    assert again is cached
    assert all((a == b).all() for a, b in zip(plain, cached))
    assert [m.shape for m in cached] == [m.shape for m in plain]
    assert len(other) == 4 and sum(m.sum() for m in strict) <= sum(m.sum() for m in cached)
    # one open outside, one inside; three segmentations inside (first, second, first at 0.9)
    assert len(opened) == 2 and segmented == [5, 5, 4, 5]
    ev.predicted_masks(seg_run, first, 8)  # the cache ended with the block
    assert len(opened) == 3


def test_the_fused_threshold_is_chosen_on_scores_of_cases_the_combiner_did_not_fit():
    """The combiner is fitted on the validation cases; choosing the threshold on its own fitted
    scores of those cases (in-sample, optimistic) put it too high, and the test sensitivity
    fell short of the target (BrEaST's fused folds: 0.69-0.81 against 0.9). The threshold is
    now chosen on cross-fitted scores: each validation case scored by a combiner fitted
    without it (10-fold), as a new case would be. Small validation sets of BrEaST's
    size (~40 cases, ~15 malignant), a second view whose weight the combiner must learn
    (measured over 30 such sets: lower in all 30, mean test sensitivity 0.905 against 0.866)."""
    from breastus_cli.engine.stats.metrics import threshold_for_sensitivity

    y_tr, _, x_tr = _cases(300, 1)
    y_te, p_te, x_te = _cases(4000, 3)
    q_te = _second_view(y_te, 13)
    partner = {"path": "../whole-image", "sha256": "ab" * 32}
    new, old, lower = [], [], 0
    for seed in range(10):
        y_val, p_val, x_val = _cases(40, 100 + seed)
        q_val = _second_view(y_val, 200 + seed)
        if y_val.sum() < 5:
            continue
        fused = fusion.fit(y_tr, x_tr, y_val, p_val, x_val, 0.9, "masks", q_val, partner)
        inputs = np.column_stack([fusion.logit(p_val), fusion.logit(
            fused.descriptors.predict(x_val)), fusion.logit(q_val)])
        in_sample = threshold_for_sensitivity(y_val, fused.combiner.predict(inputs), 0.9)
        p_fused = fused.scores(p_te, x_te, q_te)[1]
        new.append(float((p_fused[y_te == 1] >= fused.threshold).mean()))
        old.append(float((p_fused[y_te == 1] >= in_sample).mean()))
        lower += fused.threshold <= in_sample + 1e-12
    assert len(new) >= 8
    # the cross-fitted threshold is lower or equal most of the time, and the test sensitivity
    # it gives is on average closer to the target than the in-sample one's
    assert lower >= 0.7 * len(new)
    assert abs(np.mean(new) - 0.9) < abs(np.mean(old) - 0.9)
    assert np.mean(new) > np.mean(old)
    assert "cross-fitted" in fused.threshold_source and "(10-fold)" in fused.fitted_on[
        "threshold"]
