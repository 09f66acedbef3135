"""examples/write_cross.py: the BUS-BRA and cross-dataset section of RESULTS.md, from the
folders examples/results_busbra.sh writes (here: small hand-made stand-ins)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "write_cross.py"


def _metrics(folder: Path, auc: float, fused: float | None = None) -> None:
    folder.mkdir(parents=True)
    m = {"n": 100, "n_malignant": 30, "auc": auc, "sensitivity": 0.9, "specificity": 0.5,
         "ci": {"auc": [auc - 0.05, auc + 0.05]}}
    if fused is not None:
        m["fusion"] = {"fused": {"auc": fused, "sensitivity": 0.88, "specificity": 0.6,
                                 "ci": {"auc": [fused - 0.04, fused + 0.04]}}}
    (folder / "metrics.json").write_text(json.dumps(m))


def _candidate(run: Path, best: float, epoch: int, history: list[float]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "best.json").write_text(json.dumps({"value": best, "epoch": epoch}))
    (run / "history.csv").write_text("epoch,val_auc\n" + "".join(
        f"{i + 1},{v}\n" for i, v in enumerate(history)))


def _module(name: str):
    """examples/NAME.py imported, to call its functions in process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPT.with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(tmp_path: Path, *extra: str) -> str:
    """The section for tmp_path/work; without a record of earlier choices unless --choices
    names one (the repository's examples/choices.json would fill the absent tables)."""
    out = tmp_path / "section.md"
    record = [] if "--choices" in extra else ["--choices", str(tmp_path / "no-record.json")]
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--work-dir",
                           str(tmp_path / "work"), "--breast-cv", str(tmp_path / "work" / "cv"),
                           *record, *extra], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return out.read_text()


def test_rows_goals_and_the_recipe_choice(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84, fused=0.86)
    _metrics(runs / "resnet50-f0" / "eval-data-all", 0.75)
    _candidate(runs / "resnet50-f0", 0.84, 22, [0.7] * 12)
    _candidate(runs / "resnet50-cos-f0", 0.83, 26, [0.8] * 12)
    _metrics(runs / "resnet50-cos-f0" / "eval-test", 0.85)
    _candidate(runs / "resnet50-lr3e-4-f0", 0.86, 30, [0.85] * 10)
    _metrics(runs / "resnet50-lr3e-4-f0" / "eval-test", 0.87)
    cv = tmp_path / "work" / "busbra" / "cv" / "unet-ft"
    cv.mkdir(parents=True)
    (cv / "summary.json").write_text(json.dumps({"n": 252, "metrics": {
        "dice": {"pooled": 0.81, "ci": [0.79, 0.83]}, "iou": {"pooled": 0.7, "ci": [0.68, 0.72]}}}))
    text = _write(tmp_path)
    assert "| trained on BUS-BRA folds 2-5 | BUS-BRA fold 1 | 100 (30 malignant) | 0.840" in text
    assert "fused with the lesion descriptors" in text and "0.860 (0.820–0.900)" in text
    assert "AUC 0.840 (not met: goal 0.9), fused with descriptors 0.860 (not met" in text
    assert "0.750 (not met: goal 0.85), fused not run" in text  # no fused cross evaluation
    assert "| constant 1e-3 (the recipe above) | 0.840 (22) | 0.700 |" in text
    assert "| constant 3e-4 (`--lr 3e-4`) | 0.860 (30) | 0.850 |" in text
    assert "**constant 3e-4** chosen" in text
    assert "(step 9: `CHOOSE=1`) | | not run" in text  # the combined training: not run here
    assert ("| BUS-BRA-pretrained, fine-tuned on BrEaST (12 epochs, lr 1e-4) | BrEaST, 5 folds "
            "pooled out of fold | 252 | 0.810 (0.790–0.830) | 0.700 (0.680–0.720) |") in text
    assert "U-Net Dice 0.810 (met: goal 0.8)" in text
    assert str(tmp_path) not in text  # paths relative, never this machine's


def test_without_candidates_the_recipe_is_said_not_rechosen(tmp_path):
    _metrics(tmp_path / "work" / "busbra" / "runs" / "resnet50-f0" / "eval-test", 0.8)
    text = _write(tmp_path)
    assert "were not trained here: `CHOOSE=1 examples/results_busbra.sh` trains them" in text


def test_a_candidate_still_training_is_not_compared(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    _candidate(runs / "resnet50-f0", 0.84, 22, [0.7] * 12)
    _candidate(runs / "resnet50-cos-f0", 0.83, 26, [0.8] * 12)
    _metrics(runs / "resnet50-cos-f0" / "eval-test", 0.85)
    _candidate(runs / "resnet50-lr3e-4-f0", 0.99, 3, [0.9] * 3)  # best.json, no evaluation yet
    text = _write(tmp_path)
    assert "constant 3e-4" not in text and "**constant 1e-3** chosen" in text


def test_lesion_centred_rows_keep_the_oracle_apart_and_meet_their_goals(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    roi = runs / "mobilenetv2-roi-f0"
    _metrics(roi / "eval-test", 0.88, fused=0.91)
    m = json.loads((roi / "eval-test" / "metrics.json").read_text())
    m["ground_truth_roi"] = {"auc": 0.93, "sensitivity": 0.9, "specificity": 0.7,
                             "ci": {"auc": [0.9, 0.95]}}
    (roi / "eval-test" / "metrics.json").write_text(json.dumps(m))
    _metrics(roi / "eval-data-all", 0.8, fused=0.82)
    ft = tmp_path / "work" / "busbra" / "cv" / "mobilenetv2-roi-ft"
    ft.mkdir(parents=True)
    pooled = {k: {"pooled": v, "ci": [v - 0.05, v + 0.05]}
              for k, v in (("auc", 0.83), ("sensitivity", 0.86), ("specificity", 0.61))}
    (ft / "summary.json").write_text(json.dumps({
        "n": 252, "n_malignant": 98, "metrics": pooled,
        "fusion": {"fused": {**pooled, "auc": {"pooled": 0.86, "ci": [0.81, 0.9]}}}}))
    # BrEaST's own lesion-centred CV, from scratch with the crops chosen on BUS-BRA
    scratch = tmp_path / "elsewhere" / "roi-cv"
    scratch.mkdir(parents=True)
    (scratch / "cv.json").write_text(json.dumps({"train": {"img_size": 160, "roi_margin": 0.2}}))
    (scratch / "summary.json").write_text(json.dumps({
        "n": 252, "n_malignant": 98, "metrics": {**pooled, "auc": {"pooled": 0.77,
                                                                    "ci": [0.71, 0.83]}}}))
    text = _write(tmp_path, "--breast-roi-cv", str(scratch))
    assert ("| lesion-centred MobileNetV2, BrEaST only, from scratch (160 px crops, margin 0.2; "
            "crops from BrEaST's U-Net folds) | BrEaST, 5 folds pooled out of fold | 252 (98 "
            "malignant) | 0.770 (0.710–0.830)") in text
    assert ("| lesion-centred MobileNetV2 (128 px crops from BUS-BRA's U-Net, margin 0.2), trained "
            "on BUS-BRA folds 2-5 | BUS-BRA fold 1 | 100 (30 malignant) | 0.880 (0.830–0.930)"
            ) in text
    assert ("|   the same, ground-truth crops (upper bound: needs the mask) | BUS-BRA fold 1 | "
            "100 (30 malignant) | 0.930 (0.900–0.950)") in text
    assert "lesion-centred MobileNetV2 AUC 0.880 (not met: goal 0.9), fused 0.910 (met" in text
    assert "lesion-centred MobileNetV2 AUC 0.800 (not met: goal 0.85), fused 0.820 (not" in text
    assert ("lesion-centred MobileNetV2 AUC 0.830 (not met: goal 0.85), fused AUC 0.860 (met: "
            "goal 0.85), sensitivity 0.860 (met: goal 0.85), specificity 0.610 (met") in text
    # the oracle never stands in a goal line
    assert "0.930" not in text.split("### Goals of this part")[1]


def _roi_candidate(run: Path, margin: float, size: int, best: float, history: list[float]) -> None:
    _candidate(run, best, 5, history)
    (run / "config.json").write_text(json.dumps({
        "status": "finished", "roi": {"source": "mask", "margin": margin},
        "settings": {"img_size": size}}))
    (run / "model.keras").write_bytes(b"stand-in")


def _choose(runs: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--choose-roi", str(runs)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_lesion_centred_candidate_is_chosen_by_the_steadier_rule_and_reported(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    # margin 0.2: the luckier best epoch; 160 px: the highest mean of the last 10 epochs
    _roi_candidate(runs / "mobilenetv2-roi-f0", 0.2, 128, 0.95, [0.8] * 12)
    _roi_candidate(runs / "mobilenetv2-roi0.5-f0", 0.5, 128, 0.90, [0.82] * 12)
    _roi_candidate(runs / "mobilenetv2-roi160-f0", 0.2, 160, 0.91, [0.85] * 12)
    _metrics(runs / "mobilenetv2-roi160-f0" / "eval-test", 0.87)
    ft = tmp_path / "work" / "busbra" / "cv" / "mobilenetv2-roi160-ft"
    ft.mkdir(parents=True)
    pooled = {k: {"pooled": 0.8, "ci": [0.75, 0.85]} for k in ("auc", "sensitivity", "specificity")}
    (ft / "summary.json").write_text(json.dumps({"n": 252, "n_malignant": 98, "metrics": pooled}))
    assert _choose(runs) == str(runs / "mobilenetv2-roi160-f0")
    text = _write(tmp_path)
    assert "| 0.2 | 128 | 0.950 (5) | 0.800 |  |" in text
    assert "| 0.5 | 128 | 0.900 (5) | 0.820 |  |" in text
    assert "| 0.2 | 160 | 0.910 (5) | 0.850 | yes |" in text
    assert ("160 px crops from BUS-BRA's U-Net, margin 0.2), trained on BUS-BRA folds 2-5 | "
            "BUS-BRA fold 1 | 100 (30 malignant) | 0.870") in text
    # the BrEaST fine-tuning of the chosen run, not of another candidate
    assert "fine-tuned on BrEaST (crops from the fine-tuned U-Net folds below) | BrEaST, 5 folds " \
        "pooled out of fold | 252 (98 malignant) | 0.800" in text
    # nor is another candidate's fine-tuning averaged with the ResNet50's
    import pandas as pd

    cv = tmp_path / "work" / "busbra" / "cv"
    for folder in ("resnet50-ft", "mobilenetv2-roi-ft"):
        (cv / folder).mkdir(exist_ok=True)
        pd.DataFrame({"case_id": ["a", "b", "c", "d"], "y_true": [0, 0, 1, 1],
                      "p_malignant": [0.1, 0.6, 0.4, 0.9]}).to_csv(
            cv / folder / "oof_predictions.csv", index=False)
    assert "BUS-BRA-pretrained and fine-tuned, CNN scores" not in _write(tmp_path)
    (cv / "mobilenetv2-roi-ft").rename(cv / "moved")
    (cv / "moved" / "oof_predictions.csv").rename(
        cv / "mobilenetv2-roi160-ft" / "oof_predictions.csv")
    assert "BUS-BRA-pretrained and fine-tuned, CNN scores" in _write(tmp_path)
    # a candidate fine-tuned before the choice is read after it, beside the chosen one
    fused = {k: {"pooled": v, "ci": [v - 0.05, v + 0.05]}
             for k, v in (("auc", 0.83), ("sensitivity", 0.81), ("specificity", 0.71))}
    (cv / "mobilenetv2-roi-ft").mkdir()
    (cv / "mobilenetv2-roi-ft" / "summary.json").write_text(json.dumps(
        {"n": 252, "n_malignant": 98, "metrics": pooled, "fusion": {"fused": fused}}))
    assert ("Read after choosing: the 128 px, margin 0.2 candidate, fine-tuned on BrEaST the "
            "same way before the choice was made, gave a fused (CNN + descriptors) AUC of 0.830 "
            "(sensitivity 0.810, specificity 0.710); the chosen one's CNN alone gives 0.800: the "
            "same as this candidate's 0.800.") in _write(tmp_path)
    # a candidate still training takes no part
    (runs / "mobilenetv2-roi160-f0" / "config.json").write_text(json.dumps({"status": "running"}))
    assert _choose(runs) == str(runs / "mobilenetv2-roi0.5-f0")
    (runs / "mobilenetv2-roi0.5-f0" / "config.json").write_text(json.dumps({"status": "running"}))
    assert _choose(runs) == str(runs / "mobilenetv2-roi-f0")
    text = _write(tmp_path)  # one candidate: no choice to report, and said so
    assert "| crop margin |" not in text
    assert ("the crop margin 0.2 and input size 128 px were chosen on BUS-BRA's validation cases "
            "among 3 candidates; the others were not trained here (`CHOOSE=1`") in text


def test_two_views_are_averaged_case_by_case_with_the_gain_over_the_better(tmp_path):
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    work = tmp_path / "work"
    runs = work / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.8)
    _metrics(runs / "mobilenetv2-roi-f0" / "eval-test", 0.8)
    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 40)
    # two models with independent errors: their mean ranks better than either
    p_a = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, 100), 0, 1)
    p_b = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, 100), 0, 1)
    ids = [f"case{i:03d}" for i in range(100)]
    pd.DataFrame({"case_id": ids, "y_true": y, "p_malignant": p_a}).to_csv(
        runs / "resnet50-f0" / "eval-test" / "predictions.csv", index=False)
    # another order of the same cases: merged by case, not by row
    pd.DataFrame({"case_id": ids[::-1], "y_true": y[::-1], "p_malignant": p_b[::-1]}).to_csv(
        runs / "mobilenetv2-roi-f0" / "eval-test" / "predictions.csv", index=False)
    text = _write(tmp_path)
    mean_auc = roc_auc_score(y, (p_a + p_b) / 2)
    a, b = roc_auc_score(y, p_a), roc_auc_score(y, p_b)
    row = next(line for line in text.splitlines() if line.startswith("| CNN scores | BUS-BRA"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "100" and cells[3].startswith(f"{mean_auc:.3f} (")
    assert cells[4] == f"{a:.3f} / {b:.3f}"
    assert cells[5].startswith(f"{mean_auc - max(a, b):+.3f} (")
    assert mean_auc > max(a, b)
    # no fused column in these predictions, no second evaluation elsewhere: no other row
    assert "fused scores" not in text.split("### Whole image and lesion crop")[1].split("###")[0]
    # fused with descriptors each: averaged too; once the lesion-centred fusion takes the
    # ResNet50's score itself (evaluate --fuse-with), its row says so and is not averaged again
    fused_a, fused_b = (runs / f / "eval-test" / "predictions.csv"
                        for f in ("resnet50-f0", "mobilenetv2-roi-f0"))
    pd.read_csv(fused_a).assign(p_fused=p_a).to_csv(fused_a, index=False)
    pd.read_csv(fused_b).assign(p_fused=p_b[::-1]).to_csv(fused_b, index=False)
    assert "| fused scores (each with the descriptors) | BUS-BRA" in _write(tmp_path)
    pd.read_csv(fused_b).assign(p_partner=p_a[::-1]).to_csv(fused_b, index=False)
    _metrics(runs / "mobilenetv2-roi-f0" / "eval-fused", 0.8, fused=0.9)
    m = json.loads((runs / "mobilenetv2-roi-f0" / "eval-fused" / "metrics.json").read_text())
    m["fusion"]["partner"] = {"auc": 0.8, "run": "../resnet50-f0"}
    (runs / "mobilenetv2-roi-f0" / "eval-test" / "metrics.json").write_text(json.dumps(m))
    text = _write(tmp_path)
    assert "fused scores (each" not in text
    assert ("|   the same, fused with the lesion descriptors and the whole-image ResNet50's score "
            "(`--fuse-with`); combination fitted on validation | BUS-BRA fold 1 | 100 (30 "
            "malignant) | 0.900") in text
    assert "fused with descriptors and the ResNet50 0.900 (met: goal 0.9)" in text


def test_results_name_the_lesion_centred_numbers_the_rerun_replaced(tmp_path):
    """write_results.py: BrEaST's lesion-centred CV re-run with the crops chosen on BUS-BRA;
    the fold-0-chosen one's numbers are quoted when its folder is still in the work folder."""
    module = _module("write_results")
    assert module._before_rerun(tmp_path) == "" and module._before_rerun(None) == ""
    old = tmp_path / "cv" / "mobilenetv2-roi"
    old.mkdir(parents=True)
    (old / "summary.json").write_text(json.dumps({
        "metrics": {"auc": {"pooled": 0.7421}},
        "fusion": {"fused": {"auc": {"pooled": 0.8209}}}}))
    assert module._before_rerun(tmp_path) == (": lesion-centred AUC 0.742, fused 0.821, with "
                                              "fold 0 among the folds reported")
    whole = tmp_path / "cv" / "mobilenetv2"
    whole.mkdir()
    (whole / "summary.json").write_text(json.dumps({"metrics": {"auc": {"pooled": 0.648}}}))
    assert module._before_rerun(tmp_path) == (": whole image AUC 0.648; lesion-centred AUC "
                                              "0.742, fused 0.821, with fold 0 among the "
                                              "folds reported")


def test_the_whole_image_mobilenet_size_is_chosen_on_validation_and_reported(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    _roi_candidate(runs / "mobilenetv2-f0", 0.2, 128, 0.80, [0.75] * 12)
    assert "Whole-image MobileNetV2" not in _write(tmp_path)  # one candidate: no choice yet
    _roi_candidate(runs / "mobilenetv2-160-f0", 0.2, 160, 0.83, [0.7] * 12)
    assert "Whole-image MobileNetV2" not in _write(tmp_path)  # not evaluated yet
    _metrics(runs / "mobilenetv2-f0" / "eval-test", 0.81)
    _metrics(runs / "mobilenetv2-160-f0" / "eval-test", 0.79)
    text = _write(tmp_path)
    # the best validation AUC chooses (160), whatever the test fold says (128 there)
    assert "| 160 | 0.830 (5) | 0.700 | 0.790 (0.740–0.840) | yes |" in text
    assert "| 128 | 0.800 (5) | 0.750 | 0.810 (0.760–0.860) |  |" in text
    assert "**160 px** chosen: results_breast.sh step 2 runs BrEaST's whole-image" in text


def _unet_candidate(run: Path, size: int, best: float, history: list[float],
                    dice: float | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "best.json").write_text(json.dumps({"value": best, "epoch": len(history),
                                               "monitor": "val_iou"}))
    (run / "history.csv").write_text("epoch,val_iou\n" + "".join(
        f"{i + 1},{v}\n" for i, v in enumerate(history)))
    (run / "config.json").write_text(json.dumps({"status": "finished",
                                                 "settings": {"img_size": size}}))
    (run / "model.keras").write_bytes(b"stand-in")
    if dice is not None:
        (run / "eval-test").mkdir()
        (run / "eval-test" / "metrics.json").write_text(json.dumps({
            "n": 376, "dice": dice, "iou": dice - 0.1,
            "ci": {"dice": [dice - 0.02, dice + 0.02], "iou": [dice - 0.12, dice - 0.08]}}))


def test_the_unet_size_is_chosen_on_validation_iou_and_says_whether_breast_ran_it(tmp_path):
    cross = _module("write_cross")
    runs = tmp_path / "work" / "busbra" / "runs"
    _unet_candidate(runs / "unet-f0", 96, 0.77, [0.7] * 12, dice=0.85)
    assert cross.unet_size_section(runs, 96) == []  # one candidate: no choice
    _unet_candidate(runs / "unet-128-f0", 128, 0.76, [0.6] * 12)
    assert cross.unet_size_section(runs, 96) == []  # not evaluated yet
    _unet_candidate(runs / "unet-128-f0", 128, 0.76, [0.6] * 12, dice=0.87)
    text = "\n".join(cross.unet_size_section(runs, 96))
    # the best validation IoU chooses (96), whatever the test fold says (128 there)
    assert ("| 96 | 0.770 (12) | 0.700 | 0.850 (0.830–0.870) / 0.750 (0.730–0.770) | yes |"
            in text)
    assert "| 128 | 0.760 (12) | 0.600 | 0.870 (0.850–0.890) / 0.770 (0.750–0.790) |  |" in text
    assert "**96 px** chosen: the U-Net rows (BrEaST's and BUS-BRA's) run at 96 px" in text
    # a winner BrEaST's cross-validation has not run at is said to be not re-run
    (runs / "unet-128-f0" / "best.json").write_text(json.dumps({"value": 0.8, "epoch": 12}))
    text = "\n".join(cross.unet_size_section(runs, 96))
    assert "**128 px** chosen, but BrEaST's U-Net cross-validation above still ran at 96 px" \
        in text
    # and the section is in what the script writes, BrEaST's size read from its fold 0
    breast = tmp_path / "work" / "cv" / "unet-effb2-128"
    (breast / "fold-0").mkdir(parents=True)
    (breast / "fold-0" / "config.json").write_text(json.dumps({"settings": {"img_size": 128}}))
    (breast / "summary.json").write_text(json.dumps({"n": 252, "metrics": {
        "dice": {"pooled": 0.75, "ci": [0.72, 0.78]}, "iou": {"pooled": 0.65, "ci": [0.62, 0.68]}}}))
    (breast / "cv.json").write_text(json.dumps({"train": {"img_size": 128}}))
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    old = tmp_path / "work" / "cv" / "unet-effb2"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({"metrics": {"dice": {"pooled": 0.711}}}))
    text = _write(tmp_path)
    assert "**128 px** chosen: the U-Net rows (BrEaST's and BUS-BRA's) run at 128 px" in text
    assert "BrEaST's 5-fold U-Net, from scratch: Dice 0.750 at 128 px against 0.711 at 96 px" \
        in text
    # the segmentation rows: step 8's U-Net is the 128 px one, each row says its input size
    assert ("| from scratch on BUS-BRA folds 2-5 (128 px, 12 epochs, lr 1e-3) | BUS-BRA fold 1 | "
            "376 | 0.870 (0.850–0.890) |") in text
    assert ("| BrEaST only, from scratch (128 px, 30 epochs, lr 1e-3; table above) | BrEaST, 5 "
            "folds pooled out of fold | 252 | 0.750 (0.720–0.780) |") in text
    assert "| not chosen (run before post-processing existed) |" in text
    # each row says the mask post-processing its run(s) chose on validation, and the gain
    def chose(run: Path, method: str, none: float, largest: float) -> None:
        (run / "postprocess.json").write_text(json.dumps(
            {"method": method, "validation_dice": {"none": none, "largest": largest}}))

    chose(runs / "unet-128-f0", "largest", 0.80, 0.81)
    chose(breast / "fold-0", "none", 0.70, 0.70)
    (breast / "fold-1").mkdir()
    chose(breast / "fold-1", "largest", 0.70, 0.73)
    text = _write(tmp_path)
    assert "| 0.870 (0.850–0.890) | 0.770 (0.750–0.790) | largest component (validation Dice " \
           "+0.010) |" in text
    assert ("| 0.750 (0.720–0.780) | 0.650 (0.620–0.680) | largest component in 1 of 2 folds "
            "(validation Dice +0.015 on average) |") in text


def test_the_batch_norm_candidate_joins_the_recipe_table_and_can_win(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    _candidate(runs / "resnet50-f0", 0.84, 22, [0.7] * 12)
    _candidate(runs / "resnet50-bn99-f0", 0.85, 30, [0.8] * 12)
    _metrics(runs / "resnet50-bn99-f0" / "eval-test", 0.83)
    text = _write(tmp_path)
    assert "| batch-norm momentum 0.99 (constant 1e-3, `--bn-momentum 0.99`" in text
    assert "| 0.850 (30) | 0.800 | 0.830 (0.780–0.880) |" in text
    assert "**batch-norm momentum 0.99** chosen." in text


def test_results_say_where_each_setting_was_chosen_as_the_runs_decide(tmp_path):
    module = _module("write_results")
    work = tmp_path / "work"
    breast = work / "cv" / "unet-effb2"
    for k, epoch in enumerate((24, 20, 28)):
        (breast / f"fold-{k}").mkdir(parents=True)
        (breast / f"fold-{k}" / "config.json").write_text(json.dumps(
            {"settings": {"img_size": 96}}))
        (breast / f"fold-{k}" / "best.json").write_text(json.dumps({"epoch": epoch}))
    none = tmp_path / "no-record.json"
    text = module._where_chosen(work, none)  # neither choice made yet: both still on fold 0
    assert ("Still chosen on BrEaST's fold 0, which is also reported (test fold 0 took part in "
            "choosing them; the other four did not): batch-norm momentum 0.9 (the from-scratch "
            "default) and the U-Net's input size (96 px;") in text
    assert "each fold keeps the epoch of its best validation IoU (epochs 20-28 of 30)." in text
    runs = work / "busbra" / "runs"
    _unet_candidate(runs / "unet-f0", 96, 0.77, [0.7] * 12, dice=0.85)
    _unet_candidate(runs / "unet-128-f0", 128, 0.76, [0.6] * 12, dice=0.87)
    _candidate(runs / "resnet50-f0", 0.84, 22, [0.7] * 12)
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    _candidate(runs / "resnet50-bn99-f0", 0.83, 30, [0.8] * 12)
    _metrics(runs / "resnet50-bn99-f0" / "eval-test", 0.86)
    text = module._where_chosen(work, none)
    assert ("; batch-norm momentum (0.9 kept: 0.99 lost); the U-Net's input size (96 px kept: "
            "128 px lost).") in text and "Still chosen" not in text
    (runs / "unet-128-f0" / "best.json").write_text(json.dumps({"value": 0.8, "epoch": 12}))
    (runs / "resnet50-bn99-f0" / "best.json").write_text(json.dumps({"value": 0.9, "epoch": 3}))
    text = module._where_chosen(work, none)
    assert "batch-norm momentum (0.99 won there; see the rows re-run with it)" in text
    assert ("the U-Net's input size (128 px won there, but the U-Net rows here still ran at 96 "
            "px: not re-run yet)") in text
    # BrEaST's U-Net re-run at the winner (results_breast.sh's cv/unet-effb2-128, beside the
    # 96 px folder): said, with the number it replaced
    (breast / "summary.json").write_text(json.dumps({"metrics": {"dice": {"pooled": 0.711}}}))
    rerun = work / "cv" / "unet-effb2-128"
    for k in range(3):
        (rerun / f"fold-{k}").mkdir(parents=True)
        (rerun / f"fold-{k}" / "config.json").write_text(json.dumps(
            {"settings": {"img_size": 128}}))
    (rerun / "summary.json").write_text(json.dumps({"metrics": {"dice": {"pooled": 0.705}}}))
    assert ("the U-Net's input size (128 px, with which BrEaST's U-Net cross-validation was "
            "re-run, and every lesion crop and descriptor taken from its masks; 96 px had been "
            "chosen on fold 0, Dice 0.711)") in module._where_chosen(work, none)


def test_breast_two_view_row_appears_once_its_fusion_took_the_resnet50(tmp_path):
    runs = tmp_path / "work" / "busbra" / "runs"
    _metrics(runs / "resnet50-f0" / "eval-test", 0.84)
    label = "the same, fused with the lesion descriptors and the score of the same fold's whole"
    assert label not in _write(tmp_path)  # not run
    cv = tmp_path / "work" / "cv" / "mobilenetv2-roi160-2v"
    cv.mkdir(parents=True)
    summary = {"n": 252, "n_malignant": 98, "metrics": {}, "fusion": {"fused": {
        "auc": {"pooled": 0.83, "ci": [0.78, 0.88]},
        "sensitivity": {"pooled": 0.86, "ci": [0.79, 0.92]},
        "specificity": {"pooled": 0.64, "ci": [0.56, 0.71]}}}}
    (cv / "summary.json").write_text(json.dumps(summary))
    assert label not in _write(tmp_path)  # fused without a second classifier: not this row
    summary["fusion"]["partner"] = {"run": "cv/resnet50"}
    (cv / "summary.json").write_text(json.dumps(summary))
    row = next(line for line in _write(tmp_path).splitlines() if label in line)
    assert ("| BrEaST, 5 folds pooled out of fold | 252 (98 malignant) | 0.830 (0.780–0.880) | "
            "0.860 (0.790–0.920) / 0.640 (0.560–0.710) | 0.611 |") in row


def test_results_main_table_takes_the_two_view_fusion_and_its_goal(tmp_path):
    module = _module("write_results")
    cv = tmp_path / "two"
    assert module.two_view_rows("two views", str(cv)) == ([], [])  # not run
    cv.mkdir()
    cell = lambda v: {"pooled": v, "ci": [v - 0.05, v + 0.05]}  # noqa: E731
    fusion = {"fused": {"auc": cell(0.821), "sensitivity": cell(0.857),
                        "specificity": cell(0.649), "accuracy": cell(0.73)},
              "fused_gt_mask": {"auc": cell(0.838), "sensitivity": cell(0.857),
                                "specificity": cell(0.597), "accuracy": cell(0.7)}}
    (cv / "summary.json").write_text(json.dumps({"fusion": fusion}))
    assert module.two_view_rows("two views", str(cv)) == ([], [])  # no second classifier
    fusion["partner"] = {"run": "cv/resnet50"}
    (cv / "summary.json").write_text(json.dumps({"fusion": fusion}))
    rows, goals = module.two_view_rows("two views", str(cv))
    assert rows[0].startswith("| two views, fused (segmenter's masks) | 0.730 (0.680–0.780) | "
                              "0.821 (0.771–0.871) | 0.857 (0.807–0.907) | 0.649")
    assert "two views, fused (ground-truth masks: upper bound, needs the mask)" in rows[1]
    assert goals == ["- two views, fused: AUC 0.821 (not met: goal 0.85); sensitivity 0.857 "
                     "(met: goal 0.85); specificity 0.649 (met: goal 0.6)."]


def test_a_classifier_cv_knows_the_input_size_of_the_u_net_its_masks_came_from(tmp_path):
    cross = _module("write_cross")
    seg, cls = tmp_path / "seg", tmp_path / "cls"
    seg.mkdir()
    cls.mkdir()
    assert cross._masks_px(cls) is None  # no cv.json
    (cls / "cv.json").write_text(json.dumps({"seg_cv": None}))
    assert cross._masks_px(cls) is None  # whole image, no masks
    (seg / "cv.json").write_text(json.dumps({"train": {"img_size": 96}}))
    (cls / "cv.json").write_text(json.dumps({"seg_cv": str(seg)}))
    assert cross._masks_px(cls) == 96


def _seg_cv(cv: Path, folds: list[tuple[float, int, int]], dice: float) -> None:
    """A stand-in finished segmentation cross-validation: each fold's (best validation IoU,
    its epoch, epochs run), and the pooled test Dice."""
    for k, (value, epoch, ran) in enumerate(folds):
        fold = cv / f"fold-{k}"
        fold.mkdir(parents=True)
        (fold / "best.json").write_text(json.dumps({"value": value, "epoch": epoch}))
        (fold / "history.csv").write_text("epoch,val_iou\n" + "".join(
            f"{i + 1},0.5\n" for i in range(ran)))
    (cv / "summary.json").write_text(json.dumps({"n": 252, "metrics": {
        "dice": {"pooled": dice, "ci": [dice - 0.03, dice + 0.03]},
        "iou": {"pooled": dice - 0.1, "ci": [dice - 0.13, dice - 0.07]}}}))


def test_the_fine_tuned_unet_epoch_cap_is_chosen_on_breast_validation_iou(tmp_path):
    cross = _module("write_cross")
    root = tmp_path / "work" / "busbra" / "cv"
    _seg_cv(root / "unet-128-ft30", [(0.71, 25, 30), (0.73, 18, 30), (0.66, 30, 30)], 0.79)
    assert cross.ft_cap_section(root) == []  # one candidate: no choice yet
    _seg_cv(root / "unet-128-ft", [(0.69, 12, 12), (0.72, 12, 12), (0.67, 11, 12)], 0.77)
    text = "\n".join(cross.ft_cap_section(root))
    assert "| 12 | 0.693 (12, 12, 11) | 3 of 3 | 0.770 (0.740–0.800) / 0.670 (0.640–0.700) |  |" \
        in text
    assert "| 30 | 0.700 (25, 18, 30) | 1 of 3 | 0.790 (0.760–0.820) / 0.690 (0.660–0.720) | yes |" \
        in text
    assert "**30 epochs** chosen: the fine-tuned U-Net rows and the crops" in text
    # the rule is validation IoU: the higher test Dice does not win; the default's rows then
    # say they are not the chosen setting's
    (root / "unet-128-ft30" / "fold-0" / "best.json").write_text(json.dumps(
        {"value": 0.5, "epoch": 25}))
    assert cross.chosen_ft(root, cross.FT_CAPS)[0] == 12
    assert "**12 epochs** chosen, but the fine-tuned rows above still come from the 30-epoch " \
           "folders: not re-run yet." in "\n".join(cross.ft_cap_section(root))
    # the fine-tuned rows come from the default's folders (step 8b: 30 epochs) beside the
    # 128 px U-Net
    _unet_candidate(tmp_path / "work" / "busbra" / "runs" / "unet-128-f0", 128, 0.76, [0.6] * 12,
                    dice=0.87)
    assert ("| BUS-BRA-pretrained, fine-tuned on BrEaST (30 epochs, lr 1e-4) | BrEaST, 5 folds "
            "pooled out of fold | 252 | 0.790 (0.760–0.820) |") in _write(tmp_path)


def test_results_time_is_the_recipe_commands_wall_clock_across_resumed_invocations(tmp_path):
    """RESULTS.md's time line, from WORK/times.tsv: only the recipe's commands (the commands
    files) count, overlapping runs count once, a command interrupted and re-run counts both
    attempts, and a recipe command with no timing is said (a resumed script that skipped it)."""
    module = _module("write_results")
    recipe = tmp_path / "commands.sh"
    recipe.write_text("breastus cv seg d --out a\nbreastus cv cls d --out b\n"
                      "breastus evaluate b --tta flip\nbreastus prepare x\n")
    times = tmp_path / "times.tsv"
    rows = [("2026-11-30T12:00:00Z", 600, 0, "breastus cv seg d --out a"),       # 11:50-12:00
            ("2026-11-30T12:05:00Z", 600, 0, "breastus evaluate other --tta flip"),  # not recipe
            ("2026-11-30T12:10:00Z", 300, 143, "breastus cv cls d --out b"),     # 12:05-12:10
            ("2026-11-30T12:20:00Z", 420, 0, "breastus cv cls d --out b"),       # 12:13-12:20
            ("2026-11-30T12:19:00Z", 60, 0, "breastus evaluate b --tta flip")]   # inside it
    times.write_text("".join(f"{t}\t{s}\t{rc}\t{c}\n" for t, s, rc, c in rows))
    seconds, timed, missing = module.recipe_seconds(times, [recipe])
    assert seconds == 600 + 300 + 420
    assert (timed, missing) == (3, ["breastus prepare x"])
    line = module.time_line(times, [recipe])
    assert line.startswith("Time: 22.0 minutes of wall clock for the 3 timed recipe commands")
    assert "1 recipe command has no timing" in line
    assert module.time_line(tmp_path / "absent.tsv", [recipe]) == ""


def test_choices_absent_from_the_work_folder_come_from_the_record_said_as_such(tmp_path):
    """A work folder without the candidates of the choices made on BUS-BRA (a fresh machine,
    CHOOSE=0) shows their tables as recorded when the candidates last trained, says so once,
    and RESULTS.md's 'where chosen' bullet follows the record instead of falling back on
    'still chosen on fold 0'; the repository's record holds every section."""
    cross = _module("write_cross")
    repo = json.loads(cross.CHOICES.read_text())
    assert set(repo["sections"]) <= set(cross.CHOICE_SECTIONS) and repo["recorded"]
    assert {"recipe", "mobilenet_size", "unet_size", "roi"} <= set(repo["sections"])
    _metrics(tmp_path / "work" / "busbra" / "runs" / "resnet50-f0" / "eval-test", 0.8)
    record = tmp_path / "choices.json"
    record.write_text(json.dumps({"recorded": "2026-01-02", "sections": {
        "recipe": ["### The recipe, chosen on BUS-BRA", "", "| constant 1e-3 | 0.840 (22) |"],
        "unet_size": ["", "| 128 | 0.794 (11) | yes |"]},
        "later_choices": {"busbra": ["batch-norm momentum (0.9 kept: 0.99 lost)",
                                     "the U-Net's input size (128 px, recorded)"], "still": []}}))
    text = _write(tmp_path, "--choices", str(record))
    assert text.count("recorded from when their candidates last trained (2026-01-02;") == 1
    assert "| constant 1e-3 | 0.840 (22) |" in text and "| 128 | 0.794 (11) | yes |" in text
    assert "were not trained here" not in text
    assert text.index("recorded from when") < text.index("### The recipe, chosen on BUS-BRA")
    bullet = _module("write_results")._where_chosen(tmp_path / "work", record)
    assert ("; batch-norm momentum (0.9 kept: 0.99 lost); the U-Net's input size (128 px, "
            "recorded).") in bullet and "Still chosen" not in bullet
    # no record: the sentences of old, and the fold-0 choices said as such
    text = _write(tmp_path)
    assert "recorded from when" not in text and "were not trained here" in text
    assert "Still chosen on BrEaST's fold 0" in _module("write_results")._where_chosen(
        tmp_path / "work", tmp_path / "no-record.json")


def test_the_record_is_written_only_from_a_work_folder_that_ran_every_candidate(tmp_path):
    cross = _module("write_cross")
    record = tmp_path / "choices.json"
    _metrics(tmp_path / "work" / "busbra" / "runs" / "resnet50-f0" / "eval-test", 0.8)
    out = tmp_path / "section.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--work-dir",
                           str(tmp_path / "work"), "--breast-cv", str(tmp_path / "work" / "cv"),
                           "--save-choices", str(record)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and not record.exists()
    assert proc.stderr.startswith("not recorded: the candidates of recipe, mobilenet_size, "
                                  "unet_size, ft_cap, ft_lr, roi did not all run in ")
    live = {name: ["", f"| {name} table |"] for name in cross.CHOICE_SECTIONS}
    later = {"busbra": ["batch-norm momentum (0.9 kept: 0.99 lost)"], "still": []}
    assert cross.save_choices(record, {**live, "roi": []}, later) == ["roi"]
    assert not record.exists()
    assert cross.save_choices(record, live, later) == []
    saved = json.loads(record.read_text())
    assert saved["sections"] == live and saved["later_choices"] == later
    # read back with nothing live: the same tables, after the one provenance sentence
    shown = cross.with_record({}, {}, record)
    assert [line for line in shown if "table |" in line] == [
        f"| {name} table |" for name in cross.CHOICE_SECTIONS]
    assert sum("recorded from when" in line for line in shown) == 1
    # what runs live wins over the record
    shown = cross.with_record({"recipe": ["| live recipe |"]}, {}, record)
    assert "| live recipe |" in shown and "| recipe table |" not in shown


def test_the_threshold_note_gives_the_test_sensitivities_the_validation_threshold_gave(tmp_path):
    module = _module("write_results")
    cell = lambda v: {"pooled": v}  # noqa: E731
    runs = [{"task": "cls", "metrics": {"sensitivity": cell(0.735)},
             "fusion": {"fused": {"sensitivity": cell(0.786)}}},
            {"task": "cls", "metrics": {"sensitivity": cell(0.867)}},
            {"task": "seg", "metrics": {"dice": cell(0.7)}}]
    two = tmp_path / "two"
    two.mkdir()
    (two / "summary.json").write_text(json.dumps({"fusion": {"fused": {
        "sensitivity": cell(0.881)}}}))
    note = module.threshold_note(runs, f"two views={two}")
    assert "pooled test sensitivities of 0.735-0.867 for the CNNs alone and 0.786-0.881 fused." \
        in note
    assert module.threshold_note(runs[1:2]).endswith("of 0.867 for the CNNs alone.")
    assert module.threshold_note([runs[2]]) == ""


def test_the_fine_tuned_unet_learning_rate_is_chosen_by_the_same_rule(tmp_path):
    cross = _module("write_cross")
    root = tmp_path / "work" / "busbra" / "cv"
    _seg_cv(root / "unet-128-ft30", [(0.71, 25, 30), (0.73, 18, 30), (0.66, 30, 30)], 0.79)
    assert cross.ft_lr_section(root) == []  # the candidate has not run
    _seg_cv(root / "unet-128-ft30-lr3e-4", [(0.74, 12, 30), (0.72, 9, 30), (0.69, 15, 30)], 0.78)
    text = "\n".join(cross.ft_lr_section(root))
    assert "| learning rate | mean best validation IoU" in text
    assert "| 3e-4 | 0.717 (12, 9, 15) | 0 of 3 | 0.780 (0.750–0.810) / 0.680 (0.650–0.710) | " \
           "yes |" in text
    assert "| 1e-4 | 0.700 (25, 18, 30) | 1 of 3 |" in text
    # the higher validation IoU wins although its test Dice is lower: step 8b's default
    assert "**3e-4** chosen: the fine-tuned U-Net rows" in text
    # had 1e-4 won, the rows above would say they still come from the default's folders
    (root / "unet-128-ft30-lr3e-4" / "fold-0" / "best.json").write_text(json.dumps(
        {"value": 0.6, "epoch": 12}))
    assert "**1e-4** chosen, but the fine-tuned rows above still come from the 3e-4 folders: " \
           "not re-run yet." in "\n".join(cross.ft_lr_section(root))
    # the fine-tuned U-Net row comes from step 8b's folders (3e-4), beside the 128 px U-Net
    _unet_candidate(tmp_path / "work" / "busbra" / "runs" / "unet-128-f0", 128, 0.76, [0.6] * 12,
                    dice=0.87)
    assert ("| BUS-BRA-pretrained, fine-tuned on BrEaST (30 epochs, lr 3e-4) | BrEaST, 5 folds "
            "pooled out of fold | 252 | 0.780 (0.750–0.810)") in _write(tmp_path)
