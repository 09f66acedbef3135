"""Two models on the same cases: the paired AUC difference (engine/stats/paired.py) and
``breastus compare RUN_A RUN_B``, on hand-made predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from breastus_cli.engine.stats.bootstrap import percentile_ci, resample_counts
from breastus_cli.engine.stats.paired import paired_auc
from breastus_cli.errors import InputError
from conftest import run_cli


def test_auc_by_hand_with_a_tie():
    # positives 0.5 and 0.9 against negatives 0.2 and 0.5: 1 + 1/2 + 1 + 1 of 4 pairs
    result = paired_auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], [0.9, 0.5, 0.5, 0.2], n_bootstrap=0)
    assert result.auc_a == pytest.approx(0.875)
    assert result.auc_b == pytest.approx(0.125)
    assert result.difference == pytest.approx(-0.75)
    assert result.ci_difference is None and result.n == 4 and result.n_malignant == 2


def test_a_perfect_and_a_reversed_model_differ_by_one_in_every_resample():
    y = [0, 0, 0, 1, 1, 1]
    perfect = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    result = paired_auc(y, perfect, perfect[::-1], n_bootstrap=300)
    assert (result.auc_a, result.auc_b, result.difference) == (1.0, 0.0, -1.0)
    assert result.ci_difference == [-1.0, -1.0]
    same = paired_auc(y, perfect, perfect, n_bootstrap=300)
    assert same.difference == 0.0 and same.ci_difference == [0.0, 0.0]


def _cases(n=120, seed=1):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(int)
    a = y * 0.8 + rng.normal(0, 1, n)
    b = a + y * 0.3 + rng.normal(0, 0.2, n)  # B is A plus a little signal: strongly paired
    return y, a, b


def test_matches_sklearn_and_a_paired_resampling_done_by_hand():
    y, a, b = _cases()
    result = paired_auc(y, a, b, n_bootstrap=400, seed=3)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a))
    assert result.auc_b == pytest.approx(roc_auc_score(y, b))
    diffs = [roc_auc_score(y, b, sample_weight=w) - roc_auc_score(y, a, sample_weight=w)
             for block in resample_counts(len(y), 400, np.random.default_rng(3), strata=y)
             for w in block]
    assert result.ci_difference == pytest.approx(percentile_ci(np.asarray(diffs), 0.95))
    assert result.ci_difference[0] <= result.difference <= result.ci_difference[1]


def test_pairing_narrows_the_interval_and_swapping_negates_it():
    y, a, b = _cases()
    ab = paired_auc(y, a, b, n_bootstrap=500)
    width = ab.ci_difference[1] - ab.ci_difference[0]
    # the two AUCs move together across resamples: their difference varies far less than each
    assert width < 0.5 * (ab.ci_a[1] - ab.ci_a[0]) and width < 0.5 * (ab.ci_b[1] - ab.ci_b[0])
    ba = paired_auc(y, b, a, n_bootstrap=500)
    assert ba.difference == pytest.approx(-ab.difference)
    assert ba.ci_difference == pytest.approx([-ab.ci_difference[1], -ab.ci_difference[0]])


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(InputError, match="one class only"):
        paired_auc([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(InputError, match="one label and two scores"):
        paired_auc([0, 1, 1], [0.1, 0.2], [0.3, 0.2, 0.1])
    with pytest.raises(InputError, match="finite score"):
        paired_auc([0, 1], [0.1, float("nan")], [0.3, 0.2])


# ---- breastus compare ---------------------------------------------------------------------------
def _evaluation(folder, case_ids, y, p):
    (folder / "eval-test").mkdir(parents=True)
    pd.DataFrame({"case_id": case_ids, "y_true": y, "p_malignant": p,
                  "y_pred": (np.asarray(p) >= 0.5).astype(int)}).to_csv(
        folder / "eval-test" / "predictions.csv", index=False)
    return folder


def test_compare_two_runs_writes_the_table_plot_and_record(tmp_path):
    y, a, b = _cases(40)
    ids = [f"case{i:03d}" for i in range(40)]
    run_a = _evaluation(tmp_path / "mobilenet", ids, y, a)
    # B lists the same cases in another order: compare pairs them by case id
    order = np.random.default_rng(0).permutation(40)
    run_b = _evaluation(tmp_path / "resnet", [ids[i] for i in order], y[order], b[order])
    out = tmp_path / "cmp"
    proc = run_cli("compare", str(run_a), str(run_b), "--out", str(out), "--bootstrap", "300")
    assert proc.returncode == 0, proc.stderr
    assert "Paired comparison on 40 cases" in proc.stdout
    for name in ("compare.json", "paired_predictions.csv", "roc_paired.png", "report.md"):
        assert (out / name).is_file(), name
    record = json.loads((out / "compare.json").read_text())
    expected = paired_auc(y, a, b, n_bootstrap=300).to_dict()
    assert record["auc"] == expected  # the same cases in the same order: the same numbers
    assert (record["a"]["name"], record["b"]["name"]) == ("mobilenet", "resnet")
    assert f"{expected['difference']:+.3f}" in (out / "report.md").read_text()
    # run again into its own folder: replaced, same numbers
    proc = run_cli("compare", str(run_a), str(run_b), "--out", str(out), "--bootstrap", "300")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "compare.json").read_text())["auc"] == record["auc"]


def test_compare_reads_a_cross_validations_out_of_fold_predictions(tmp_path):
    y, a, b = _cases(30)
    ids = [f"c{i}" for i in range(30)]
    cv = tmp_path / "cv-a"
    cv.mkdir()
    (cv / "cv.json").write_text(json.dumps({"task": "cls", "folds": 3, "train": {}}))
    pd.DataFrame({"case_id": ids, "y_true": y, "p_malignant": a, "fold": np.arange(30) % 3}
                 ).to_csv(cv / "oof_predictions.csv", index=False)
    run_b = _evaluation(tmp_path / "run-b", ids, y, b)
    proc = run_cli("compare", str(cv), str(run_b), "--out", str(tmp_path / "o"),
                   "--bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert record["auc"]["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert record["a"]["predictions"].endswith("oof_predictions.csv")


def test_compare_refuses_what_it_cannot_pair_with_one_line_and_writes_nothing(tmp_path):
    y, a, b = _cases(20)
    ids = [f"c{i}" for i in range(20)]
    run_a = _evaluation(tmp_path / "a", ids, y, a)
    other_cases = _evaluation(tmp_path / "b", ids[:-1] + ["elsewhere"], y, b)
    flipped = y.copy()
    flipped[3] = 1 - flipped[3]
    other_labels = _evaluation(tmp_path / "c", ids, flipped, b)
    (tmp_path / "never-evaluated").mkdir()
    cases = [((run_a, other_cases), "scored different cases"),
             ((run_a, other_labels), "has label"),
             ((run_a, tmp_path / "never-evaluated"), "breastus evaluate"),
             ((run_a, run_a), "same evaluation")]
    for (first, second), message in cases:
        out = tmp_path / "out"
        proc = run_cli("compare", str(first), str(second), "--out", str(out))
        assert proc.returncode == 2, (message, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists()
    # an output folder holding someone else's files is refused and left as it was
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    proc = run_cli("compare", str(run_a), str(_evaluation(tmp_path / "d", ids, y, b)),
                   "--out", str(theirs))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]
