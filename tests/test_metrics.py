"""Classification metrics: agreement with scikit-learn, conventions, bootstrap CIs, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from breastus_cli.engine.stats.metrics import (
    LABELS,
    weighted_auc,
    aggregate,
    classification_metrics,
    threshold_for_sensitivity,
)


def random_scores(n: int, seed: int, separation: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    p = np.clip(rng.normal(0.4 + separation * y, 0.2), 0.0, 1.0)
    return y, np.round(p, 2)  # rounding creates ties, which the AUC must handle


@pytest.mark.parametrize("seed,threshold", [(0, 0.5), (1, 0.3), (2, 0.62), (3, 0.9)])
def test_agrees_with_sklearn(seed: int, threshold: float) -> None:
    y, p = random_scores(150, seed)
    r = classification_metrics(y, p, threshold, n_bootstrap=200)
    pred = (p >= threshold).astype(int)
    assert r["n"] == 150 and r["n_malignant"] == int(y.sum())
    assert r["n_benign"] == int((1 - y).sum())
    assert r["threshold"] == threshold
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert r["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert r["npv"] == pytest.approx(skm.precision_score(y, pred, pos_label=0, zero_division=0))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert r["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert r["confusion_labels"] == ["benign", "malignant"]
    report = skm.classification_report(y, pred, labels=[0, 1], target_names=list(LABELS),
                                       output_dict=True, zero_division=0)
    for label in LABELS:
        assert r["per_class"][label] == pytest.approx(report[label])
    assert r["macro_avg"] == pytest.approx(report["macro avg"])
    assert r["weighted_avg"] == pytest.approx(report["weighted avg"])


def test_hand_made_example() -> None:
    y = [0, 0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.6, 0.3, 0.8, 0.4, 0.9]
    r = classification_metrics(y, p, 0.5, n_bootstrap=0)
    # predicted malignant: 0.6 (FP), 0.8, 0.9 (TP); 0.4 is a missed malignant (FN)
    assert r["confusion_matrix"] == [[3, 1], [1, 2]]
    assert r["accuracy"] == pytest.approx(5 / 7)
    assert r["sensitivity"] == pytest.approx(2 / 3)
    assert r["specificity"] == pytest.approx(3 / 4)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["npv"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(2 / 3)
    # pairs (malignant, benign) ranked correctly: 0.8 and 0.9 beat all 4; 0.4 beats 0.1, 0.2, 0.3
    assert r["auc"] == pytest.approx(11 / 12)
    assert r["ci"] == {k: None for k in r["ci"]}
    assert r["ci_method"].startswith("none")


def test_score_equal_to_threshold_is_malignant() -> None:
    r = classification_metrics([0, 1, 1], [0.5, 0.5, 0.7], 0.5, n_bootstrap=0)
    assert r["confusion_matrix"] == [[0, 1], [0, 2]]
    r = classification_metrics([0, 1, 1], [0.5, 0.5, 0.7], 0.5000001, n_bootstrap=0)
    assert r["confusion_matrix"] == [[1, 0], [1, 1]]


def test_ci_contains_estimate_and_shrinks_with_more_data() -> None:
    small = classification_metrics(*random_scores(60, 5), n_bootstrap=1000, seed=1)
    large = classification_metrics(*random_scores(1200, 5), n_bootstrap=1000, seed=1)
    for r in (small, large):
        assert r["ci_resamples"]["accuracy"] == 1000
        for key, (lo, hi) in r["ci"].items():
            assert lo <= r[key] <= hi, key
    for key in small["ci"]:
        width_small = small["ci"][key][1] - small["ci"][key][0]
        width_large = large["ci"][key][1] - large["ci"][key][0]
        assert width_large < 0.6 * width_small, key
    assert small["ci_method"] == "percentile bootstrap, 1000 case resamples stratified by class, 95%"


def test_bootstrap_is_seeded_and_confidence_matters() -> None:
    y, p = random_scores(80, 9)
    a = classification_metrics(y, p, n_bootstrap=300, seed=4)
    b = classification_metrics(y, p, n_bootstrap=300, seed=4)
    c = classification_metrics(y, p, n_bootstrap=300, seed=5)
    assert a["ci"] == b["ci"] and a["ci"] != c["ci"]
    narrow = classification_metrics(y, p, n_bootstrap=300, seed=4, confidence=0.5)
    assert narrow["ci"]["auc"][1] - narrow["ci"]["auc"][0] < a["ci"]["auc"][1] - a["ci"]["auc"][0]


def test_fast_auc_matches_sklearn_on_resamples() -> None:
    y, p = random_scores(90, 11)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, y.size, size=(6, y.size))
    weights = np.stack([np.bincount(row, minlength=y.size) for row in idx])
    fast = weighted_auc(y, p, weights)
    for row, value in zip(idx, fast):
        assert value == pytest.approx(skm.roc_auc_score(y[row], p[row]), abs=1e-12)
    assert weighted_auc(y, p, np.ones(y.size))[0] == pytest.approx(skm.roc_auc_score(y, p))
    # a resample without malignant cases has no AUC
    only_benign = (y == 0).astype(int)[None, :]
    assert np.isnan(weighted_auc(y, p, only_benign)[0])


def test_resamples_are_stratified_by_class() -> None:
    # one malignant case in 12: a plain bootstrap would lose it in about (11/12)^12 = 35% of
    # resamples; resampling within each class keeps 11 benign + 1 malignant in every resample
    y = np.array([0] * 11 + [1])
    p = np.linspace(0.05, 0.95, 12)
    r = classification_metrics(y, p, n_bootstrap=1000, seed=0)
    assert set(r["ci_resamples"].values()) == {1000}
    assert "stratified by class" in r["ci_method"]
    from breastus_cli.engine.stats.bootstrap import resample_counts
    for w in resample_counts(12, 500, np.random.default_rng(1), strata=y):
        assert (w[:, 11] == 1).all() and (w[:, :11].sum(axis=1) == 11).all()
    json.dumps(r, allow_nan=False)


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    # (its cost is measured in benchmarks/, not asserted here)
    y, p = random_scores(500, 2)
    a = classification_metrics(y, p, n_bootstrap=300, seed=3)
    b = classification_metrics(y, p, n_bootstrap=300, seed=3)
    c = classification_metrics(y, p, n_bootstrap=300, seed=4)
    assert a["ci"] == b["ci"]
    assert a["ci"] != c["ci"]


def test_one_class_gives_none_not_nan() -> None:
    r = classification_metrics([0, 0, 0, 0], [0.1, 0.7, 0.2, 0.3], 0.5, n_bootstrap=100)
    assert r["auc"] is None and r["sensitivity"] is None and r["balanced_accuracy"] is None
    assert r["specificity"] == pytest.approx(0.75)
    assert r["f1"] == 0.0  # one false positive: 2TP / (2TP + FP + FN) = 0 / 1
    assert r["ci"]["auc"] is None and r["ci"]["sensitivity"] is None
    assert r["ci"]["specificity"] is not None
    assert r["ci_resamples"]["auc"] == 0
    text = json.dumps(r, allow_nan=False)
    assert "NaN" not in text

    r = classification_metrics([1, 1], [0.2, 0.3], 0.5, n_bootstrap=50)
    assert r["precision"] is None  # nothing predicted malignant: PPV undefined
    assert r["per_class"]["malignant"]["precision"] == 0.0  # sklearn's zero_division=0
    assert r["specificity"] is None and r["auc"] is None
    json.dumps(r, allow_nan=False)


def test_result_is_plain_json() -> None:
    r = classification_metrics(*random_scores(40, 3), n_bootstrap=100)
    again = json.loads(json.dumps(r, allow_nan=False))
    assert again == r
    assert type(r["n"]) is int and type(r["accuracy"]) is float
    assert all(type(v) is int for row in r["confusion_matrix"] for v in row)
    assert type(r["per_class"]["benign"]["support"]) is int


@pytest.mark.parametrize(
    "y,p,message",
    [
        ([0, 1], [0.5], "length"),
        ([0, 2], [0.1, 0.2], "only 0"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, float("nan")], "non-finite"),
        ([], [], "no cases"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], "1-D"),
        (["benign", "malignant"], [0.1, 0.2], "numeric"),
    ],
)
def test_rejects_bad_input(y, p, message) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y, p)


def test_threshold_for_sensitivity_known_answer() -> None:
    y = [1, 1, 1, 1, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1]
    assert threshold_for_sensitivity(y, p, 0.5) == 0.8  # 2 of 4 at p >= 0.8
    assert threshold_for_sensitivity(y, p, 0.75) == 0.6
    assert threshold_for_sensitivity(y, p, 0.51) == 0.6  # needs 3 of 4
    assert threshold_for_sensitivity(y, p, 1.0) == 0.3
    assert threshold_for_sensitivity(y, p, 0.01) == 0.9


@pytest.mark.parametrize("target", [0.3, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_is_highest_reaching_target(target: float) -> None:
    y, p = random_scores(200, 8)
    t = threshold_for_sensitivity(y, p, target)
    r = classification_metrics(y, p, t, n_bootstrap=0)
    assert r["sensitivity"] >= target
    higher = np.nextafter(t, 2.0)  # the next float above t
    assert classification_metrics(y, p, higher, n_bootstrap=0)["sensitivity"] < target


def test_threshold_for_sensitivity_float_noise() -> None:
    # 0.9 * 10 = 9.000000000000002 must still mean 9 of 10, not 10 of 10
    y = [1] * 10
    p = [i / 10 for i in range(1, 11)]
    assert threshold_for_sensitivity(y, p, 0.9) == pytest.approx(0.2)


def test_threshold_for_sensitivity_errors() -> None:
    with pytest.raises(ValueError, match="no malignant"):
        threshold_for_sensitivity([0, 0], [0.2, 0.4], 0.9)
    for target in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="target"):
            threshold_for_sensitivity([0, 1], [0.2, 0.4], target)


def test_aggregate() -> None:
    runs = [{"auc": 0.8, "accuracy": 0.7}, {"auc": 0.9, "accuracy": None}, {"auc": 0.7}]
    agg = aggregate(runs)
    assert agg["auc"]["mean"] == pytest.approx(0.8)
    assert agg["auc"]["sd"] == pytest.approx(0.1)  # sample SD, ddof=1
    assert agg["auc"]["n"] == 3 and agg["auc"]["values"] == [0.8, 0.9, 0.7]
    assert agg["accuracy"] == {"mean": 0.7, "sd": 0.0, "n": 1, "values": [0.7]}
    assert agg["f1"] == {"mean": None, "sd": None, "n": 0, "values": []}
    assert set(aggregate(runs, keys=("auc",))) == {"auc"}
    json.dumps(agg, allow_nan=False)


def test_per_case_decisions_as_in_pooled_cross_validation() -> None:
    # pooled CV: each fold has its own threshold, so decisions come per case, not from one cut
    from breastus_cli.engine.orchestration.cv import _pooled_cls

    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.6, 0.3, 0.4, 0.9, 0.7, 0.2, 0.8])
    d = np.array([0, 1, 0, 1, 1, 0, 0, 1])  # not p >= any single threshold
    r = classification_metrics(y, p, y_pred=d, n_bootstrap=200, seed=0)
    assert r["threshold"] is None
    assert r["sensitivity"] == 3 / 4 and r["specificity"] == 3 / 4
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    pooled, ci = _pooled_cls(y, p, d, 200)
    assert pooled["sensitivity"] == 3 / 4 and ci["auc"] == r["ci"]["auc"]
    with pytest.raises(ValueError, match="one 0/1 decision per case"):
        classification_metrics(y, p, y_pred=d[:-1])


def test_fold_summary_means_folds_of_one_model_only() -> None:
    from breastus_cli.engine.stats.metrics import fold_summary

    folds = [{"task": "cls", "model": "resnet50", "fold": k, "auc": auc, "accuracy": 0.7}
             for k, auc in enumerate((0.70, 0.80, 0.90))]
    summary = fold_summary(folds)
    assert summary["folds"] == 3 and summary["model"] == "resnet50"
    assert summary["metrics"]["auc"]["mean"] == pytest.approx(0.8)
    assert summary["metrics"]["auc"]["sd"] == pytest.approx(0.1)
    assert fold_summary(folds[:1]) is None  # one run is no spread
    assert fold_summary([*folds[:2], {**folds[2], "model": "mobilenetv2"}]) is None
    assert fold_summary([*folds[:2], {**folds[2], "fold": None}]) is None


def test_scores_are_rounded_once_so_predictions_csv_reproduces_the_metrics(tmp_path):
    """Two saturated scores 3e-8 apart, the benign one higher: unrounded, the AUC counted that
    pair as lost while predictions.csv (6 decimals) showed a tie, so the file gave another AUC
    than metrics.json (seen as a flaky fused-classifier test)."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from breastus_cli.engine.evaluation.evaluate_cls import p_malignant
    from breastus_cli.engine.stats.metrics import classification_metrics

    class Saturated:  # a LoadedRun's run_files: (N, 2) softmax outputs
        def run_files(self, images, batch_size):
            return np.array([[0, 0.99999991], [0, 0.99999994], [0.7, 0.3], [0.8, 0.2]],
                            np.float32).astype(np.float64)

    y = np.array([1, 0, 0, 0])
    p = p_malignant(Saturated(), ["a", "b", "c", "d"], 2)
    assert p[0] == p[1] == 1.0
    pd.DataFrame({"y_true": y, "p_malignant": p}).to_csv(tmp_path / "p.csv", index=False)
    frame = pd.read_csv(tmp_path / "p.csv")
    auc = classification_metrics(y, p, 0.5, n_bootstrap=0)["auc"]
    assert auc == pytest.approx(roc_auc_score(frame["y_true"], frame["p_malignant"]))
    assert auc == pytest.approx(2.5 / 3)
