"""Write the BUS-BRA and cross-dataset section of RESULTS.md (used by examples/results_busbra.sh).

Usage: python examples/write_cross.py OUT.md --work-dir WORK --breast-cv CV_DIR
           [--breast-roi-cv CV_DIR] [--busbra-dir BUSBRA_DIR] [--commands FILE]

Reads, under WORK (the folders results_busbra.sh writes; any that is missing is reported as
not run):

    busbra/runs/resnet50-f0/eval-test/              BUS-BRA, published fold 1 as test
    busbra/runs/resnet50-f0/eval-*-all/             the same model on every BrEaST case
    CV_DIR/eval-ensemble-*-all/                     BrEaST's 5 fold models on every BUS-BRA case
    busbra/runs/both-f0/eval-test/                  trained on both (per dataset)
    busbra/cv/resnet50-ft/summary.json              BrEaST 5-fold, BUS-BRA-pretrained
    busbra/runs/unet-128-f0/eval-test/              U-Net on BUS-BRA fold 1
    busbra/runs/mobilenetv2{,-160}-f0/              whole-image MobileNetV2 sizes (step 6d)
    busbra/runs/mobilenetv2-roi*-f0/                lesion-centred candidates (step 10); the
                                                    chosen one's eval-*/ on both datasets
    busbra/cv/mobilenetv2-roi*-ft/summary.json      BrEaST 5-fold, fine-tuned from the chosen one
    ROI_CV_DIR/summary.json                         BrEaST 5-fold, lesion-centred, from scratch
                                                    (--breast-roi-cv; default WORK/cv/mobilenetv2-roi160)

Every number is on cases the model never trained on; thresholds come from each model's own
validation cases (for a cross-dataset row: the other dataset's), never from the cases reported.
Paths are written relative to the folders given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _json(file: Path) -> dict | None:
    """A JSON file's content, None when the step that writes it has not run."""
    return json.loads(file.read_text()) if file.is_file() else None


def postprocess_chosen(folder: Path) -> str:
    """The mask post-processing a segmentation run (or each fold of a cross-validation) chose
    on its validation cases (RUN/postprocess.json, written by its first evaluation), with the
    mean validation Dice gain of the largest component; 'not chosen' for runs before it."""
    runs = sorted(folder.glob("fold-*")) if (folder / "cv.json").is_file() else [folder]
    chosen = [c for c in (_json(run / "postprocess.json") for run in runs) if c]
    if not chosen or len(chosen) < len(runs):
        return "not chosen (run before post-processing existed)"
    gain = round(sum(c["validation_dice"]["largest"] - c["validation_dice"]["none"]
                     for c in chosen) / len(chosen), 3) + 0.0  # never "-0.000"
    kept = sum(c["method"] == "largest" for c in chosen)
    if len(runs) == 1:
        return (("largest component" if kept else "none")
                + f" (validation Dice {gain:+.3f})")
    return (f"largest component in {kept} of {len(runs)} folds (validation Dice {gain:+.3f} "
            "on average)")


def _eval(path: Path) -> dict | None:
    return _json(path / "metrics.json")


def _fused(m: dict | None) -> dict:
    """The fused classifier's numbers of an evaluation or CV summary ({} without fusion)."""
    return (m or {}).get("fusion", {}).get("fused") or {}


def _has_partner(m: dict | None) -> bool:
    return "partner" in ((m or {}).get("fusion") or {})


def _with_partner(m: dict | None, label: str,
                  partner: str = "the whole-image ResNet50's score (`--fuse-with`)") -> str:
    """A fused row's label, naming the second classifier when the fusion took one
    (``evaluate --fuse-with`` / ``cv --fuse-with-cv``)."""
    if not _has_partner(m):
        return label
    return (label.replace("fused with the lesion descriptors", "fused")
            + f" with the lesion descriptors and {partner}; combination fitted on validation")


def _other(folder: Path, pattern: str) -> dict | None:
    """The one evaluation on another dataset in ``folder`` (``evaluate --data OTHER``)."""
    found = sorted(p for p in folder.glob(pattern) if (p / "metrics.json").is_file())
    return _eval(found[-1]) if found else None


def _row(label: str, tested: str, m: dict | None) -> str:
    if m is None:
        return f"| {label} | {tested} | not run | | | |"
    ci = m.get("ci", {})
    majority = max(m.get("n_malignant", 0), m["n"] - m.get("n_malignant", 0)) / m["n"]
    return (f"| {label} | {tested} | {m['n']} ({m.get('n_malignant', '?')} malignant) | "
            f"{_ci(m.get('auc'), ci.get('auc'))} | "
            f"{_ci(m.get('sensitivity'), ci.get('sensitivity'))} / "
            f"{_ci(m.get('specificity'), ci.get('specificity'))} | {majority:.3f} |")


def _fused_row(label: str, tested: str, m: dict | None) -> str | None:
    """The fused classifier's numbers of an evaluation with ``--seg-run`` (none without)."""
    f = _fused(m)
    if not f:
        return None
    return _row(label, tested, {**f, "n": m["n"], "n_malignant": m.get("n_malignant")})


def _oracle_row(label: str, tested: str, m: dict | None) -> str | None:
    """A lesion-centred classifier's numbers on ground-truth crops (an upper bound: it needs
    the mask at test time), beside its numbers on the segmenter's crops."""
    gt = (m or {}).get("ground_truth_roi")
    if not gt:
        return None
    return _row(label, tested, {**gt, "n": m["n"], "n_malignant": m.get("n_malignant")})


def _pooled(summary: dict, key: str) -> tuple[float | None, list[float] | None]:
    row = summary.get("metrics", {}).get(key) or {}
    return row.get("pooled"), row.get("ci")


def _cv_row(label: str, summary: dict | None, fused: bool = False) -> str:
    if summary is None:
        return f"| {label} | BrEaST, 5 folds pooled out of fold | not run | | | |"
    if fused:
        f = _fused(summary)
        if not f:
            return f"| {label} | BrEaST, 5 folds pooled | not run | | | |"
        cell = {k: (f[k]["pooled"], f[k]["ci"]) for k in ("auc", "sensitivity", "specificity")}
    else:
        cell = {k: _pooled(summary, k) for k in ("auc", "sensitivity", "specificity")}
    n, n_mal = summary.get("n", 0), summary.get("n_malignant", 0)
    majority = max(n_mal, n - n_mal) / n if n else float("nan")
    return (f"| {label} | BrEaST, 5 folds pooled out of fold | {n} ({n_mal} malignant) | "
            f"{_ci(*cell['auc'])} | {_ci(*cell['sensitivity'])} / {_ci(*cell['specificity'])} "
            f"| {majority:.3f} |")


#: the recipe candidates compared on BUS-BRA's validation cases: (name, run folder, what it is)
CANDIDATES = (
    ("constant 1e-3", "resnet50-f0", "the recipe above"),
    ("cosine", "resnet50-cos-f0", "2 epochs of warm-up then a cosine decay from 1e-3, "
                                  "`--lr-schedule cosine --warmup-epochs 2`"),
    ("constant 3e-4", "resnet50-lr3e-4-f0", "`--lr 3e-4`"),
    ("augmentation x2", "resnet50-aug2-f0", "constant 1e-3, `--augment-strength 2`; added "
                                           "later, under the same rule, before it trained"),
    ("128 px", "resnet50-128-f0", "constant 1e-3, `--img-size 128`; added later, under the "
                                  "same rule, before it trained"),
    ("batch-norm momentum 0.99", "resnet50-bn99-f0",
     "constant 1e-3, `--bn-momentum 0.99` (Keras's own) against the from-scratch default 0.9 "
     "chosen on BrEaST's fold 0; added later, under the same rule, before it trained"),
)


def _last_mean(run: Path, n: int = 10, column: str = "val_auc") -> float | None:
    """Mean of a validation ``column`` (AUC; IoU for a U-Net) over the last ``n`` epochs
    (history.csv): how steady a recipe is."""
    import csv

    file = run / "history.csv"
    if not file.is_file():
        return None
    rows = list(csv.DictReader(file.read_text().splitlines()))[-n:]
    return sum(float(r[column]) for r in rows) / len(rows) if rows else None


def _steadiness(run: Path, column: str = "val_auc") -> str:
    """A candidate's table cells: the best epoch's validation AUC (IoU: ``column``; the epoch
    the run keeps) and the mean over its last 10 epochs."""
    best = _json(run / "best.json") or {}
    last = _last_mean(run, column=column)
    return (f"{best.get('value', float('nan')):.3f} ({best.get('epoch')}) | "
            f"{'n/a' if last is None else f'{last:.3f}'}")


def _test_auc(run: Path) -> str:
    """A candidate's test AUC with its CI (BUS-BRA fold 1, read after choosing), or n/a."""
    test = _eval(run / "eval-test")
    return _ci(test.get("auc"), test.get("ci", {}).get("auc")) if test else "n/a"


def recipe_section(runs: Path, breast_rerun: str | None) -> list[str]:
    """How the from-scratch recipe was chosen: on BUS-BRA's validation cases (fold 0's
    training folds), never on a case any table reports. ``breast_rerun``: the candidate BrEaST
    was cross-validated again with, if one beat the recipe above."""
    best = {}
    for name, folder, _ in CANDIDATES:
        file = runs / folder / "best.json"
        # a finished candidate: trained, then evaluated (a run still training has a best.json)
        if file.is_file() and (runs / folder / "eval-test" / "metrics.json").is_file():
            best[name] = json.loads(file.read_text())
    if len(best) < 2:  # not trained in this work folder: the record, or RECIPE_ABSENT
        return []
    chosen = max(best, key=lambda k: best[k]["value"])
    tried = [(name, folder, what) for name, folder, what in CANDIDATES if name in best]
    lines = ["### The recipe, chosen on BUS-BRA", "",
             "Choices made on BUS-BRA's validation cases only (15% of the patients of folds "
             "2-5; no test case of any table took part), one ResNet50 from scratch per "
             "candidate, everything else equal, the rule fixed before: the highest validation "
             "AUC of any epoch (the epoch the run keeps). The mean over the last 10 epochs says "
             "how steady each one trained.", "",
             "| candidate | best validation AUC (epoch) | mean of the last 10 epochs | "
             "test AUC, BUS-BRA fold 1 (read after choosing) |",
             "|---|---:|---:|---:|"]
    for name, folder, what in tried:
        lines.append(f"| {name} ({what}) | {_steadiness(runs / folder)} | "
                     f"{_test_auc(runs / folder)} |")
    lines += ["", f"**{chosen}** chosen. One run each on 229 validation cases: a noisy choice."]
    if breast_rerun:
        lines.append(f"BrEaST was then cross-validated again with it ({breast_rerun}; row "
                     "'recipe chosen on BUS-BRA' above): BrEaST's folds took no part in the "
                     "choice.")
    return lines


#: the lesion-centred candidates of step 10: (crop margin, input px, run folder)
ROI_CANDIDATES = (("0.2", 128, "mobilenetv2-roi-f0"), ("0.5", 128, "mobilenetv2-roi0.5-f0"),
                  ("0.2", 160, "mobilenetv2-roi160-f0"))


def _masks_px(cv_dir: Path) -> int | None:
    """The input size of the segmentation CV a classifier CV took its masks from (--seg-cv)."""
    seg_cv = (_json(cv_dir / "cv.json") or {}).get("seg_cv")
    return _img_size(Path(seg_cv)) if seg_cv else None


def _img_size(folder: Path) -> int | None:
    """The input size a run (config.json) or a cross-validation (cv.json) trained at, None
    when neither is there."""
    run, cv = _json(folder / "config.json") or {}, _json(folder / "cv.json") or {}
    return (run.get("settings") or cv.get("train") or {}).get("img_size")


def breast_seg_cv(work: Path) -> Path:
    """results_breast.sh's U-Net cross-validation in WORK: cv/unet-effb2-128 (step 8c's
    choice), else the 96 px cv/unet-effb2 of a work folder from before it."""
    return next((work / "cv" / f for f in ("unet-effb2-128", "unet-effb2")
                 if (work / "cv" / f / "fold-0" / "config.json").is_file()),
                work / "cv" / "unet-effb2-128")


def _dice_before(old: Path, new: Path) -> tuple[float, float] | None:
    """(pooled Dice of the segmentation CV ``old``, of ``new``) when they differ and both
    finished."""
    a, b = _json(old / "summary.json"), _json(new / "summary.json")
    if old == new or not a or not b:
        return None
    return a["metrics"]["dice"]["pooled"], b["metrics"]["dice"]["pooled"]


def step8_unet(runs: Path) -> Path:
    """Step 8's U-Net: the 128 px one (step 8c's choice) once it finished, else the 96 px one
    of a work folder from before the choice."""
    return runs / ("unet-128-f0" if _finished(runs / "unet-128-f0") else "unet-f0")


def _finished(run: Path) -> bool:
    config = _json(run / "config.json")
    return bool(config) and config.get("status") == "finished" and (run / "model.keras").is_file()


def choose_roi(runs: Path) -> Path | None:
    """Step 10's lesion-centred run: among the finished candidates, the highest mean validation
    AUC over the last 10 epochs (the rule fixed before they ran); None when none finished."""
    done = [runs / folder for _, _, folder in ROI_CANDIDATES if _finished(runs / folder)]
    return max(done, key=lambda run: _last_mean(run) or 0.0) if done else None


def fine_tuned_dir(work: Path, run: Path) -> Path:
    """Where step 10 fine-tunes BrEaST from the chosen lesion-centred run."""
    return work / "busbra" / "cv" / (run.name.removesuffix("-f0") + "-ft")


def roi_choice_section(work: Path) -> list[str]:
    """The crop margin and input size chosen in step 10, on BUS-BRA's validation cases."""
    runs = work / "busbra" / "runs"
    tried = [(margin, size, runs / folder) for margin, size, folder in ROI_CANDIDATES
             if _finished(runs / folder)]
    if len(tried) < 2:  # not trained in this work folder: the record, or roi_absent()
        return []
    chosen = choose_roi(runs)
    lines = ["", "Lesion-centred MobileNetV2, the crop margin (a fraction of the lesion's size "
             "added around it) and the input size, chosen on BUS-BRA's validation cases "
             "(ground-truth crops, as in training); the rule, fixed while the first candidate (0.2, "
             "128 px) was training and before any test case was scored: the highest mean "
             "validation AUC over the last 10 epochs. The 160 px candidate was added later, "
             "after the margin choice had been scored on the test fold, under the same rule.",
             "",
             "| crop margin | input px | best validation AUC (epoch) | mean of the last 10 "
             "epochs | chosen |",
             "|---:|---:|---:|---:|---|"]
    for margin, size, run in tried:
        lines.append(f"| {margin} | {size} | {_steadiness(run)} | "
                     f"{'yes' if run == chosen else ''} |")
    kept = _json(fine_tuned_dir(work, chosen) / "summary.json")
    kept_auc = _pooled(kept, "auc")[0] if kept else None
    for margin, size, run in tried:  # a candidate fine-tuned on BrEaST before the choice
        summary = _json(fine_tuned_dir(work, run) / "summary.json")
        if run == chosen or summary is None or not _fused(summary):
            continue
        cnn = _pooled(summary, "auc")[0]
        fused = {k: (_fused(summary).get(k) or {}).get("pooled")
                 for k in ("auc", "sensitivity", "specificity")}
        than = ("" if kept_auc is None or cnn is None else
                f"; the chosen one's CNN alone gives {kept_auc:.3f}: "
                + ("higher than" if kept_auc > cnn else "lower than" if kept_auc < cnn
                   else "the same as") + f" this candidate's {cnn:.3f}")
        masks = _masks_px(fine_tuned_dir(work, run))
        other = (f", its crops and descriptors from the {masks} px fine-tuned U-Net"
                 if masks and masks != _masks_px(fine_tuned_dir(work, chosen)) else "")
        lines += ["", f"Read after choosing: the {size} px, margin {margin} candidate, "
                  f"fine-tuned on BrEaST the same way before the choice was made{other}, gave a "
                  f"fused (CNN + descriptors) AUC of {fused['auc']:.3f} (sensitivity "
                  f"{fused['sensitivity']:.3f}, specificity {fused['specificity']:.3f}){than}."]
    return lines


#: step 6d: the whole-image MobileNetV2's input size (input px, run folder); 128 is BrEaST's
MOBILENET_SIZES = ((128, "mobilenetv2-f0"), (160, "mobilenetv2-160-f0"))
UNET_SIZES = ((96, "unet-f0"), (128, "unet-128-f0"))


def _test_seg(run: Path) -> str:
    """A U-Net candidate's test Dice / IoU with CIs (BUS-BRA fold 1, read after choosing)."""
    test = _eval(run / "eval-test")
    if not test:
        return "n/a"
    ci = test.get("ci", {})
    return f"{_ci(test.get('dice'), ci.get('dice'))} / {_ci(test.get('iou'), ci.get('iou'))}"


def chosen_size(runs: Path, sizes: tuple[tuple[int, str], ...]) -> tuple[int, list] | None:
    """(the chosen input size, [(size, run) tried]) among ``sizes`` once every candidate
    finished and was scored on the test fold: the highest best validation value (best.json,
    the epoch each run keeps); None before."""
    tried = [(size, runs / folder) for size, folder in sizes
             if _finished(runs / folder)
             and (runs / folder / "eval-test" / "metrics.json").is_file()]
    if len(tried) < len(sizes):
        return None
    best = {size: (_json(run / "best.json") or {}).get("value", float("-inf"))
            for size, run in tried}
    return max(best, key=lambda size: best[size]), tried


def _size_table(tried: list, chosen: int, metric: str, column: str, test_header: str,
                test_cell) -> list[str]:
    lines = [f"| input px | best validation {metric} (epoch) | mean of the last 10 epochs | "
             f"{test_header}, BUS-BRA fold 1 (read after choosing) | chosen |",
             "|---:|---:|---:|---:|---|"]
    return lines + [f"| {size} | {_steadiness(run, column)} | {test_cell(run)} | "
                    f"{'yes' if size == chosen else ''} |" for size, run in tried]


def mobilenet_size_section(runs: Path) -> list[str]:
    """Step 6d: the whole-image MobileNetV2's input size, chosen on BUS-BRA's validation cases
    by step 6's rule (the highest best validation AUC); nothing when not both ran."""
    choice = chosen_size(runs, MOBILENET_SIZES)
    if choice is None:
        return []
    chosen, tried = choice
    return ["", "Whole-image MobileNetV2 (the reference study's model; results_breast.sh step 2), "
            "its input size chosen on BUS-BRA's validation cases by the ResNet50 rule above "
            "(the highest best validation AUC), fixed and committed before either candidate "
            "trained; 128 px had been chosen on BrEaST's fold 0.", "",
            *_size_table(tried, chosen, "AUC", "val_auc", "test AUC", _test_auc), "",
            (f"**{chosen} px** chosen: BrEaST's whole-image MobileNetV2 rows keep 128 px, now "
             "chosen on BUS-BRA." if chosen == 128 else
             f"**{chosen} px** chosen: results_breast.sh step 2 runs BrEaST's whole-image "
             f"MobileNetV2 at {chosen} px.")]


def unet_size_section(runs: Path, breast_unet_px: int | None,
                      before: tuple[float, float] | None = None) -> list[str]:
    """Step 8c: the U-Net's input size, chosen on BUS-BRA's validation cases (the higher best
    validation IoU, train-seg's monitor); ``breast_unet_px``: the size BrEaST's U-Net
    cross-validation ran at; ``before``: (its pooled Dice at 96 px, at the size it runs now)
    when both are there. Nothing when not both candidates ran."""
    choice = chosen_size(runs, UNET_SIZES)
    if choice is None:
        return []
    chosen, tried = choice
    if chosen == breast_unet_px:
        outcome = (f"**{chosen} px** chosen: the U-Net rows (BrEaST's and BUS-BRA's) run at "
                   f"{chosen} px, now chosen on BUS-BRA.")
        if before is not None and chosen != 96:
            outcome += (f" BrEaST's 5-fold U-Net, from scratch: Dice {before[1]:.3f} at "
                        f"{chosen} px against {before[0]:.3f} at 96 px, and every lesion crop "
                        "and descriptor of both sections now comes from the 128 px masks.")
    else:
        outcome = (f"**{chosen} px** chosen, but BrEaST's U-Net cross-validation above still ran "
                   f"at {breast_unet_px} px (chosen on its fold 0): not re-run yet.")
    return ["", "U-Net EfficientNetB2 (every segmentation row, and the masks behind every lesion "
            "crop and descriptor), its input size chosen on BUS-BRA's validation cases: 12 "
            "epochs each as step 8, the rule fixed and committed before the 128 px candidate "
            "trained: the higher best validation IoU (the epoch each run keeps). 96 px had been "
            "chosen on BrEaST's fold 0.", "",
            *_size_table(tried, chosen, "IoU", "val_iou", "test Dice / IoU", _test_seg), "",
            outcome]


#: step 8d's candidates (at lr 1e-4): the fine-tuned U-Net's epoch cap and its cross-validation
#: folder; the first is the cap step 8b runs (30 since step 8d chose it)
FT_CAPS = ((30, "unet-128-ft30"), (12, "unet-128-ft"))


def _fold_bests(cv: Path) -> list[tuple[float, int, int]] | None:
    """(best validation IoU, its epoch, epochs run) of each fold of a finished segmentation
    cross-validation (summary.json written), None before."""
    if not (cv / "summary.json").is_file():
        return None
    folds = []
    for fold in sorted(cv.glob("fold-*")):
        best = _json(fold / "best.json") or {}
        history = fold / "history.csv"
        ran = len(history.read_text().strip().splitlines()) - 1 if history.is_file() else 0
        folds.append((float(best.get("value", float("nan"))), int(best.get("epoch") or 0), ran))
    return folds or None


#: step 8e's candidates (30 epochs): the fine-tuned U-Net's learning rate and its
#: cross-validation folder; the first is step 8b's (3e-4 since step 8e chose it: the fine-tuned
#: rows and crops come from it; a work folder from before has only the 1e-4 one)
FT_LRS = (("3e-4", "unet-128-ft30-lr3e-4"), ("1e-4", "unet-128-ft30"))


def chosen_ft(cv_root: Path, candidates: tuple) -> tuple[object, list] | None:
    """Steps 8d and 8e: (the chosen candidate, [(candidate, folder, fold bests)]) among
    ``candidates`` ((value, cross-validation folder) pairs) once every one finished: the higher
    mean over the folds of the best validation IoU."""
    tried = [(key, cv_root / name, _fold_bests(cv_root / name)) for key, name in candidates]
    if any(bests is None for _, _, bests in tried):
        return None
    mean = {key: sum(b[0] for b in bests) / len(bests) for key, _, bests in tried}
    return max(mean, key=lambda key: mean[key]), tried


def _ft_table(tried: list, chosen: object, first: str) -> list[str]:
    """The table of steps 8d and 8e: each candidate's mean best validation IoU over BrEaST's
    folds (the rule), how many folds kept one of their last two epochs, and the pooled test
    Dice / IoU read after choosing."""
    lines = [f"| {first} | mean best validation IoU (folds' best epochs) | folds that kept one of "
             "their last two epochs | pooled test Dice / IoU, BrEaST 5 folds (read after "
             "choosing) | chosen |", "|---:|---:|---:|---:|---|"]
    for key, folder, bests in tried:
        mean = sum(b[0] for b in bests) / len(bests)
        epochs = ", ".join(str(b[1]) for b in bests)
        late = sum(b[1] >= b[2] - 1 for b in bests)
        metrics = (_json(folder / "summary.json") or {}).get("metrics", {})
        test = (f"{_ci(metrics['dice']['pooled'], metrics['dice'].get('ci'))} / "
                f"{_ci(metrics['iou']['pooled'], metrics['iou'].get('ci'))}"
                if "dice" in metrics and "iou" in metrics else "n/a")
        lines.append(f"| {key} | {mean:.3f} ({epochs}) | {late} of {len(bests)} | {test} | "
                     f"{'yes' if key == chosen else ''} |")
    return lines


def _ft_section(cv_root: Path, candidates: tuple, intro: str, first: str, named,
                folders=None) -> list[str]:
    """Step 8d's or 8e's section: ``intro``, the table (:func:`_ft_table`, its first column
    ``first``) and the choice, a candidate written by ``named`` (its folders by ``folders``,
    default ``named``); nothing before all ran."""
    choice = chosen_ft(cv_root, candidates)
    if choice is None:
        return []
    chosen, tried = choice
    default = candidates[0][0]
    return ["", intro, "", *_ft_table(tried, chosen, first), "",
            f"**{named(chosen)}** chosen" + (
                ": the fine-tuned U-Net rows and the crops and descriptors of the fine-tuned "
                "classifiers come from it." if chosen == default else
                ", but the fine-tuned rows above still come from the "
                f"{(folders or named)(default)} folders: not re-run yet.")]


def ft_cap_section(cv_root: Path) -> list[str]:
    """Step 8d: the fine-tuned U-Net's epoch cap (:func:`_ft_section`)."""
    return _ft_section(
        cv_root, FT_CAPS,
        "The fine-tuned U-Net's epoch cap (step 8d), chosen on BrEaST's validation cases (each "
        "fold's, carved from its training folds; the test folds take no part): 12 epochs had "
        "been set by the time budget; 30 (the from-scratch U-Net's cap) was tried because the "
        "12-epoch folds kept their last epochs, validation IoU still rising. The rule, "
        "committed before the 30-epoch candidate trained: the higher mean over the folds of the "
        "best validation IoU (the epoch each fold keeps). With the same seed the longer run "
        "repeats the shorter one's epochs exactly (seen in the histories), so its best "
        "validation IoU cannot be lower: the rule asks whether validation IoU still rose after "
        "epoch 12, and the test Dice says whether that carried over.",
        "epoch cap", lambda cap: f"{cap} epochs", lambda cap: f"{cap}-epoch")


def ft_lr_section(cv_root: Path) -> list[str]:
    """Step 8e: the fine-tuned U-Net's learning rate (:func:`_ft_section`)."""
    return _ft_section(
        cv_root, FT_LRS,
        "The fine-tuned U-Net's learning rate (step 8e, 30 epochs), chosen the same way on "
        "BrEaST's validation cases: 1e-4 had been set with the from-scratch 1e-3 in mind, never "
        "compared; 3e-4 was tried because at 1e-4 most folds still kept a late epoch. The rule, "
        "committed before the 3e-4 candidate trained: step 8d's.",
        "learning rate", str)


#: the tables of the choices made on BUS-BRA's validation cases, as this script wrote them when
#: their candidates last trained; RESULTS.md shows them from here when a work folder lacks the
#: candidates (``CHOOSE=1 examples/results_busbra.sh`` trains them again and rewrites it)
CHOICES = Path(__file__).with_name("choices.json")
#: the choice sections, in RESULTS.md's order
CHOICE_SECTIONS = ("recipe", "mobilenet_size", "unet_size", "ft_cap", "ft_lr", "roi")

RECIPE_ABSENT = ["The recipe candidates of step 6 (a cosine schedule, a constant lr of 3e-4) were "
                 "not trained here: `CHOOSE=1 examples/results_busbra.sh` trains them (about 75 "
                 "minutes). Every row uses the BrEaST recipe above, which they left in place when "
                 "they last ran."]


def roi_absent(work: Path) -> list[str]:
    """Step 10's sentence when only the chosen lesion-centred candidate is in WORK."""
    runs = work / "busbra" / "runs"
    tried = [(m, px) for m, px, folder in ROI_CANDIDATES if _finished(runs / folder)]
    return ["", f"Lesion-centred MobileNetV2: the crop margin {tried[0][0]} and input size "
            f"{tried[0][1]} px were chosen on BUS-BRA's validation cases among "
            f"{len(ROI_CANDIDATES)} candidates; the others were not trained here (`CHOOSE=1` "
            "trains them, about 35 minutes)."] if tried else []


def with_record(live: dict[str, list[str]], absent: dict[str, list[str]],
                choices: Path | None) -> list[str]:
    """The choice sections in order: each from this work folder's candidates when they ran
    (``live`` non-empty), else from the record (``choices``), said once as recorded, else the
    ``absent`` sentence."""
    saved = (_json(choices) or {}) if choices else {}
    record = saved.get("sections") or {}
    said = ("The choices below are recorded from when their candidates last trained "
            f"({saved.get('recorded', 'date not recorded')}; `examples/choices.json`): this "
            "work folder does not hold those candidates. `CHOOSE=1 examples/results_busbra.sh` "
            "trains them again (several hours on 2 cores) and rewrites the record. A chosen "
            "candidate's test numbers there can differ a little from its rows above, which come "
            "from the runs of this work folder (the U-Net's does not repeat exactly from one machine to "
            "another).")
    lines: list[str] = []
    for name in CHOICE_SECTIONS:
        if live.get(name):
            lines += live[name]
        elif record.get(name):
            if said:  # once, before the first recorded table, set apart by blank lines
                lines += ([""] if lines else []) + [said] + (
                    [] if record[name][0] == "" else [""])
                said = ""
            lines += record[name]
        else:
            lines += absent.get(name, [])
    return lines


def save_choices(path: Path, live: dict[str, list[str]], later: dict[str, list[str]]) -> list[str]:
    """Write the record from this work folder's candidates; returns the sections that could not
    be recorded (their candidates did not all run), and writes nothing then."""
    import datetime as dt

    missing = [name for name in CHOICE_SECTIONS if not live.get(name)]
    if missing:
        return missing
    path.write_text(json.dumps({
        "recorded": dt.date.today().isoformat(),
        "about": "The tables of the choices examples/results_busbra.sh made on BUS-BRA's "
                 "validation cases (and steps 8d and 8e's on BrEaST's), as "
                 "examples/write_cross.py "
                 "wrote them when the candidates last trained. RESULTS.md shows them from here "
                 "when a work folder lacks the candidates; CHOOSE=1 examples/results_busbra.sh "
                 "trains them again and rewrites this file.",
        "sections": {name: live[name] for name in CHOICE_SECTIONS},
        "later_choices": later}, indent=1, ensure_ascii=False) + "\n")
    return []


def later_choices(work: Path | None, choices: Path | None = CHOICES
                  ) -> tuple[list[str], list[str]]:
    """(settings chosen on BUS-BRA by results_busbra.sh steps 6e and 8c, settings still chosen
    on BrEaST's fold 0), from the runs in WORK/busbra/runs: a setting moves to the first list
    once its candidates finished and were scored; without them, as recorded in ``choices``."""
    fold0 = ["batch-norm momentum 0.9 (the from-scratch default)", "the U-Net's input size "
             "(96 px; fold-0 Dice 0.77, the other folds lower: fold 0's numbers were "
             "optimistic)"]
    recorded = ((_json(choices) or {}).get("later_choices") or {}) if choices else {}

    def as_recorded(setting: str) -> list[str]:  # what the record says of a setting
        return [c for c in recorded.get("busbra", []) if c.startswith(setting)]

    if work is None:
        return [], fold0
    runs = Path(work) / "busbra" / "runs"
    busbra, still = [], []
    recipe = {name: _json(runs / folder / "best.json") for name, folder, _ in
              CANDIDATES if (runs / folder / "eval-test" / "metrics.json").is_file()}
    recipe = {name: best["value"] for name, best in recipe.items() if best}
    if "batch-norm momentum 0.99" in recipe and len(recipe) > 1:
        won = max(recipe, key=lambda name: recipe[name]) == "batch-norm momentum 0.99"
        busbra.append("batch-norm momentum (0.99 won there; see the rows re-run with it)" if won
                      else "batch-norm momentum (0.9 kept: 0.99 lost)")
    elif as_recorded("batch-norm momentum"):
        busbra += as_recorded("batch-norm momentum")
    else:
        still.append(fold0[0])
    unet = chosen_size(runs, UNET_SIZES)
    ran = _img_size(breast_seg_cv(Path(work)) / "fold-0")
    if unet is None:
        if as_recorded("the U-Net's input size"):
            busbra += as_recorded("the U-Net's input size")
        else:
            still.append(fold0[1])
    elif unet[0] == ran == 96:
        busbra.append("the U-Net's input size (96 px kept: "
                      + ", ".join(f"{size} px lost" for size, _ in unet[1] if size != ran) + ")")
    elif unet[0] == ran:
        before = _dice_before(Path(work) / "cv" / "unet-effb2", breast_seg_cv(Path(work)))
        dice = before[0] if before else None
        busbra.append(f"the U-Net's input size ({ran} px, with which BrEaST's U-Net "
                      "cross-validation was re-run, and every lesion crop and descriptor taken "
                      "from its masks; 96 px had been chosen on fold 0"
                      + (f", Dice {dice:.3f}" if dice is not None else "") + ")")
    else:
        busbra.append(f"the U-Net's input size ({unet[0]} px won there, but the U-Net rows here "
                      f"still ran at {ran} px: not re-run yet)")
    return busbra, still


def _predictions(path: Path) -> "object | None":
    """An evaluation's predictions.csv or a cross-validation's oof_predictions.csv."""
    import pandas as pd

    for name in ("predictions.csv", "oof_predictions.csv"):
        if (path / name).is_file():
            return pd.read_csv(path / name)
    return None


def average_row(label: str, tested: str, a: Path, b: Path, column: str,
                n_bootstrap: int = 2000) -> str | None:
    """The mean of two models' probabilities ``column`` case by case (equal weights, fixed
    before looking; nothing fitted): AUC with its bootstrap CI and the paired bootstrap CI of its
    gain over the better model alone. None when either model's predictions are missing."""
    import numpy as np

    from breastus_cli.engine.stats.paired import paired_auc

    first, second = _predictions(a), _predictions(b)
    if first is None or second is None or column not in first or column not in second:
        return None
    if column == "p_fused" and ("p_partner" in first or "p_partner" in second):
        return None  # a fusion that already takes the other model's score: nothing to average
    both = first.merge(second, on="case_id", suffixes=("", "_b"))
    if len(both) != len(first) or len(both) != len(second):
        return None  # not the same cases: no case-by-case average
    y = both["y_true"].to_numpy()
    singles = [both[column].to_numpy(), both[f"{column}_b"].to_numpy()]
    first_alone = paired_auc(y, singles[0], singles[1], n_bootstrap=0)
    single_aucs = [first_alone.auc_a, first_alone.auc_b]
    mean = (singles[0] + singles[1]) / 2
    better = singles[int(np.argmax(single_aucs))]
    # B = the average, A = the better model alone: the gain is B - A, paired over the same cases
    gain = paired_auc(y, better, mean, n_bootstrap)
    (lo, hi), (glo, ghi) = gain.ci_b, gain.ci_difference
    return (f"| {label} | {tested} | {len(y)} | {gain.auc_b:.3f} ({lo:.3f}–{hi:.3f}) | "
            f"{single_aucs[0]:.3f} / {single_aucs[1]:.3f} | "
            f"{gain.difference:+.3f} ({glo:+.3f} to {ghi:+.3f}) |")


def average_section(work: Path, breast_cv: Path, roi_run: Path,
                    breast_roi_cv: Path) -> list[str]:
    """Whole-image ResNet50 and lesion-centred MobileNetV2 averaged, wherever both scored the
    same cases: an analysis of what the two views add to each other."""
    bb = work / "busbra"
    whole = bb / "runs" / "resnet50-f0"
    pairs = [
        ("CNN scores", "BUS-BRA fold 1", whole / "eval-test", roi_run / "eval-test",
         "p_malignant"),
        ("fused scores (each with the descriptors)", "BUS-BRA fold 1", whole / "eval-test",
         roi_run / "eval-test", "p_fused"),
        ("CNN scores", "BrEaST, all 252 (another hospital)", whole / "eval-data-all",
         roi_run / "eval-data-all", "p_malignant"),
        ("fused scores", "BrEaST, all 252 (another hospital)", whole / "eval-data-all",
         roi_run / "eval-data-all", "p_fused"),
        ("BrEaST from scratch, CNN scores", "BrEaST, 5 folds pooled out of fold", breast_cv,
         breast_roi_cv, "p_malignant"),
        ("BrEaST from scratch, fused scores", "BrEaST, 5 folds pooled out of fold", breast_cv,
         breast_roi_cv, "p_fused"),
        ("BUS-BRA-pretrained and fine-tuned, CNN scores", "BrEaST, 5 folds pooled out of fold",
         bb / "cv" / "resnet50-ft", fine_tuned_dir(work, roi_run), "p_malignant"),
        ("BUS-BRA-pretrained and fine-tuned, fused scores",
         "BrEaST, 5 folds pooled out of fold", bb / "cv" / "resnet50-ft",
         fine_tuned_dir(work, roi_run), "p_fused"),
    ]
    rows = [average_row(*pair) for pair in pairs]
    rows = [row for row in rows if row is not None]
    if not rows:
        return []
    return ["", "### Whole image and lesion crop, averaged", "",
            "The whole-image ResNet50 and the lesion-centred MobileNetV2 of the rows above, "
            "each case's two probabilities averaged with equal weights (fixed before looking; "
            "nothing fitted, no threshold chosen: AUC only), computed by "
            "`examples/write_cross.py` from the two evaluations' predictions. It is what led to "
            "`evaluate --fuse-with` (the fused rows above), which fits the combination on "
            "validation instead and chooses a threshold. The choice to combine these two models "
            "was so made after seeing their average on BUS-BRA fold 1, the fold the fused rows "
            "report: their weights and threshold never saw a test case, but the idea did. Gain: the average's AUC minus the "
            "better model's alone, with its paired class-stratified bootstrap CI over the same "
            "cases.", "",
            "| scores averaged | tested on | cases | AUC (95% CI) | ResNet50 / MobileNetV2 alone "
            "| gain (95% CI) |", "|---|---|---:|---:|---:|---:|", *rows]


def _goal(value: float | None, target: float) -> str:
    if value is None:
        return "not run"
    return f"{value:.3f} ({'met' if value >= target else 'not met'}: goal {target:g})"


def _roi_goal(m: dict | None, target: float) -> str:
    """The lesion-centred classifier's AUC (segmenter's crops) and fused AUC, when run."""
    if m is None:
        return ""
    return (f"; lesion-centred MobileNetV2 AUC {_goal(m.get('auc'), target)}, fused"
            f"{' with descriptors and the ResNet50' if _has_partner(m) else ''} "
            f"{_goal(_fused(m).get('auc'), target)}")


def _cv_goals(summary: dict | None) -> str:
    """A cross-validation's fused AUC, sensitivity and specificity against their goals."""
    f = _fused(summary)
    pooled = {k: (f.get(k) or {}).get("pooled") for k in ("auc", "sensitivity", "specificity")}
    return (f"AUC {_goal(pooled['auc'], 0.85)}, sensitivity {_goal(pooled['sensitivity'], 0.85)}"
            f", specificity {_goal(pooled['specificity'], 0.60)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--breast-cv", type=Path,
                        help="BrEaST's from-scratch ResNet50 cross-validation (results_breast.sh)")
    parser.add_argument("--breast-roi-cv", type=Path, default=None,
                        help="BrEaST's from-scratch lesion-centred cross-validation "
                             "(results_breast.sh; default WORK/cv/mobilenetv2-roi160)")
    parser.add_argument("--breast-two-view-cv", type=Path, default=None,
                        help="that cross-validation fused with the descriptors and the same "
                             "fold's whole-image ResNet50 (--fuse-with-cv; default "
                             "WORK/cv/mobilenetv2-roi160-2v): a row when it ran")
    parser.add_argument("--breast-seg-cv", type=Path, default=None,
                        help="BrEaST's from-scratch U-Net cross-validation (results_breast.sh; "
                             "default WORK/cv/unet-effb2-128, else WORK/cv/unet-effb2)")
    parser.add_argument("--busbra-dir", default=None, help="the BUS-BRA folder given")
    parser.add_argument("--commands", type=Path, default=None)
    parser.add_argument("--choices", type=Path, default=CHOICES,
                        help="the record of the choices' tables, shown when this work folder "
                             "lacks their candidates (default: examples/choices.json)")
    parser.add_argument("--save-choices", type=Path, default=None, metavar="FILE",
                        help="write the record from this work folder's candidates (CHOOSE=1); "
                             "refused, exit 2, when some did not run")
    parser.add_argument("--choose-roi", type=Path, metavar="RUNS",
                        help="print step 10's chosen lesion-centred run under RUNS and exit")
    args = parser.parse_args()
    if args.choose_roi:
        chosen = choose_roi(args.choose_roi)
        if chosen is None:
            parser.exit(2, f"no finished lesion-centred run under {args.choose_roi}\n")
        print(chosen)
        return
    if args.out is None or args.work_dir is None or args.breast_cv is None:
        parser.error("OUT, --work-dir and --breast-cv are needed to write the section")
    work = args.work_dir
    bb = work / "busbra"
    run = bb / "runs" / "resnet50-f0"
    own = _eval(run / "eval-test")
    to_breast = _other(run, "eval-*-all")
    to_busbra = _other(args.breast_cv, "eval-ensemble-*-all")
    both = _eval(bb / "runs" / "both-f0" / "eval-test")
    unet_run = step8_unet(bb / "runs")
    unet = _eval(unet_run / "eval-test")
    ft = _json(bb / "cv" / "resnet50-ft" / "summary.json")
    roi_run = choose_roi(bb / "runs") or bb / "runs" / "mobilenetv2-roi-f0"
    roi_own = _eval(roi_run / "eval-test")
    roi_config = _json(roi_run / "config.json") or {}
    roi_margin = (roi_config.get("roi") or {}).get("margin", 0.2)
    roi_size = (roi_config.get("settings") or {}).get("img_size", 128)
    roi_breast = _other(roi_run, "eval-*-all")
    roi_ft = _json(fine_tuned_dir(work, roi_run) / "summary.json")
    breast_roi_cv = args.breast_roi_cv or work / "cv" / "mobilenetv2-roi160"
    roi_scratch = _json(breast_roi_cv / "summary.json")
    scratch_plan = _json(breast_roi_cv / "cv.json") or {}
    scratch_crops = (f"{(scratch_plan.get('train') or {}).get('img_size', '?')} px crops, margin "
                     f"{(scratch_plan.get('train') or {}).get('roi_margin', '?')}")
    scratch = _json(args.breast_cv / "summary.json")
    breast_seg = args.breast_seg_cv or breast_seg_cv(work)
    two_view = _json((args.breast_two_view_cv or work / "cv" / "mobilenetv2-roi160-2v")
                     / "summary.json")

    lines = [
        "## BUS-BRA, and across hospitals", "",
        "Data: BUS-BRA (Gómez-Flores et al., Medical Physics 2024; 1,875 images of 1,064 "
        "patients, benign or malignant by biopsy, with lesion masks), prepared with "
        "`breastus prepare` and split with its published patient-level 5 folds; published fold "
        "1 (fold 0 here) is the test set, 15% of the other folds' patients validation. "
        "BrEaST as above. Every model is ResNet50 at 96 px from scratch "
        "(`--weights none`, lr 1e-3, 40 epochs, batch 16) unless the row says otherwise; "
        "the decision threshold is chosen on the model's own validation cases for "
        "sensitivity 0.9 (a cross-dataset row keeps the threshold of the dataset it "
        "trained on: nothing is chosen on the hospital it is tested on).", "",
        "| model | tested on | cases | AUC (95% CI) | sensitivity / specificity | majority "
        "class |",
        "|---|---|---:|---:|---:|---:|",
        _row("trained on BUS-BRA folds 2-5", "BUS-BRA fold 1", own),
        _fused_row("  the same, fused with the lesion descriptors of BUS-BRA's U-Net (below)",
                   "BUS-BRA fold 1", own),
        _row("the same model", "BrEaST, all 252 cases (another hospital)", to_breast),
        _fused_row("  the same, fused, descriptors from BUS-BRA's U-Net on BrEaST",
                   "BrEaST, all 252 cases (another hospital)", to_breast),
        _row(f"lesion-centred MobileNetV2 ({roi_size} px crops from BUS-BRA's U-Net, margin "
             f"{roi_margin}), trained on BUS-BRA folds 2-5", "BUS-BRA fold 1", roi_own),
        _fused_row(_with_partner(roi_own, "  the same, fused with the lesion descriptors"),
                   "BUS-BRA fold 1", roi_own),
        _oracle_row("  the same, ground-truth crops (upper bound: needs the mask)",
                    "BUS-BRA fold 1", roi_own),
        _row("  the same model", "BrEaST, all 252 cases (another hospital)", roi_breast),
        _fused_row(_with_partner(roi_breast, "  the same, fused with the lesion descriptors"),
                   "BrEaST, all 252 cases (another hospital)", roi_breast),
        _row("BrEaST's 5 fold models, averaged (from scratch on BrEaST)",
             "BUS-BRA, all 1,875 images (another hospital)", to_busbra),
    ]
    singles = [m for m in (_other(args.breast_cv / f"fold-{k}", "eval-*-all") for k in range(5))
               if m is not None and m.get("auc") is not None]
    if singles and to_busbra is not None:
        import statistics

        aucs = [m["auc"] for m in singles]
        lines.append(f"| each of those fold models alone (mean ± sd of {len(aucs)}) | BUS-BRA, all "
                     f"1,875 images | {singles[0]['n']} | {statistics.mean(aucs):.3f} ± "
                     f"{statistics.pstdev(aucs):.3f} (range {min(aucs):.3f}–{max(aucs):.3f}) | | |")
    per = (both or {}).get("by_dataset") or {}
    def named(name: str) -> str:  # dataset names come from the prepared folders' names
        return f"BUS-BRA fold 1 ({name})" if "busbra" in name.lower() else f"BrEaST fold 0 ({name})"

    if both is None:
        lines.append("| trained on BrEaST + BUS-BRA together (step 9: `CHOOSE=1`) | | not run | "
                     "| | |")
    else:
        lines.append(_row("trained on BrEaST folds 1-4 + BUS-BRA folds 2-5 together",
                          "both test folds, pooled", both))
        for name, m in per.items():
            lines.append(_row("  the same model", named(name), m))
    rerun = None  # BrEaST again with the recipe chosen on BUS-BRA, when it was not the default
    for label, folder in (("cosine schedule", "resnet50-cosine"), ("lr 3e-4", "resnet50-lr3e-4"),
                          ("augmentation x2", "resnet50-aug2"), ("128 px", "resnet50-128"),
                          ("batch-norm momentum 0.99", "resnet50-bn99")):
        summary = _json(work / "cv" / folder / "summary.json")
        if summary is not None:
            rerun = (label, summary)
    lines.append(_cv_row("BrEaST only, from scratch (table above)", scratch))
    if rerun is not None:  # only when another candidate won the choice on BUS-BRA (step 7)
        lines += [_cv_row(f"BrEaST only, from scratch, {rerun[0]} (recipe chosen on BUS-BRA)",
                          rerun[1]),
                  _cv_row("  the same, fused with lesion descriptors", rerun[1], fused=True)]
    lines += [
        _cv_row("BUS-BRA-pretrained, fine-tuned on BrEaST (lr 1e-4, 20 epochs)", ft),
        _cv_row("BUS-BRA-pretrained and fine-tuned, fused with lesion descriptors", ft,
                fused=True),
        _cv_row("lesion-centred MobileNetV2, BrEaST only, from scratch "
                f"({scratch_crops}; crops from BrEaST's U-Net folds)", roi_scratch),
        _cv_row("  the same, fused with lesion descriptors", roi_scratch, fused=True),
        (_cv_row("  the same, fused with the lesion descriptors and the score of the same "
                 "fold's whole-image ResNet50 (table above; `--fuse-with-cv`, as step 10 does "
                 "on BUS-BRA); combination fitted on validation", two_view, fused=True)
         if _has_partner(two_view) else None),
        _cv_row("lesion-centred MobileNetV2 (the BUS-BRA one above), fine-tuned on BrEaST "
                "(crops from the fine-tuned U-Net folds below)", roi_ft),
        _cv_row(_with_partner(roi_ft, "  the same, fused with the lesion descriptors",
                              "the score of the same fold's fine-tuned ResNet50 above "
                              "(`--fuse-with-cv`)"), roi_ft, fused=True),
    ]
    unet_breast = _other(unet_run, "eval-*-all")
    if unet_run.name == "unet-128-f0":  # step 8b's folders: step 8e's choice, else the 1e-4 one
        ft_epochs = FT_CAPS[0][0]
        ft_lr, ft_name = next(((lr, name) for lr, name in FT_LRS
                               if (bb / "cv" / name / "summary.json").is_file()), FT_LRS[0])
    else:  # the 96 px, 12-epoch folder of older work folders
        ft_epochs, ft_lr, ft_name = 12, "1e-4", "unet-ft"
    ft_dir = bb / "cv" / ft_name
    unet_ft = _json(ft_dir / "summary.json")
    seg_scratch = _json(breast_seg / "summary.json")

    def px(folder: Path) -> str:
        """'128 px, ' for a run or a cross-validation; '' when unknown."""
        size = _img_size(folder)
        return f"{size} px, " if size else ""

    def seg_row(label: str, tested: str, m: dict | None, folder: Path,
                pooled: bool = False) -> str:
        if m is None:
            return f"| {label} | {tested} | not run | | | |"
        kept = postprocess_chosen(folder)
        if pooled:
            dice, iou = m["metrics"]["dice"], m["metrics"]["iou"]
            return (f"| {label} | {tested} | {m['n']} | {_ci(dice['pooled'], dice['ci'])} | "
                    f"{_ci(iou['pooled'], iou['ci'])} | {kept} |")
        ci = m.get("ci", {})
        return (f"| {label} | {tested} | {m['n']} | {_ci(m.get('dice'), ci.get('dice'))} | "
                f"{_ci(m.get('iou'), ci.get('iou'))} | {kept} |")

    lines += ["", "Segmentation, U-Net EfficientNetB2, batch 8 (Dice and IoU per image, "
                  "averaged; 95% bootstrap CIs over images). Post-processing: keeping only the "
                  "largest connected component of each mask (holes filled), applied when it "
                  "raised the mean Dice of the run's own validation cases (nnU-Net's rule; "
                  "RUN/postprocess.json); the last column gives that validation Dice gain:", "",
              "| model | tested on | images | Dice | IoU | post-processing (chosen on "
              "validation) |", "|---|---|---:|---:|---:|---|",
              seg_row(f"from scratch on BUS-BRA folds 2-5 ({px(unet_run)}"
                      "12 epochs, lr 1e-3)", "BUS-BRA fold 1", unet, unet_run),
              seg_row("the same model", "BrEaST, all 252 (another hospital)", unet_breast,
                      unet_run),
              seg_row(f"BrEaST only, from scratch ({px(breast_seg)}30 epochs, "
                      "lr 1e-3; table above)", "BrEaST, 5 folds pooled out of fold",
                      seg_scratch, breast_seg, pooled=True),
              seg_row(f"BUS-BRA-pretrained, fine-tuned on BrEaST ({px(ft_dir)}"
                      f"{ft_epochs} epochs, lr {ft_lr})", "BrEaST, 5 folds pooled out of fold",
                      unet_ft, ft_dir, pooled=True)]
    recipe = recipe_section(bb / "runs", rerun[0] if rerun else None)
    ft_auc = _pooled(ft, "auc")[0] if ft else None
    lines += [
        *average_section(work, args.breast_cv, roi_run, breast_roi_cv),
        "", "### Goals of this part", "",
        f"- BUS-BRA, published fold 1 as test: AUC {_goal((own or {}).get('auc'), 0.90)}, "
        f"fused with descriptors "
        f"{_goal(_fused(own).get('auc'), 0.90)}; "
        f"Dice {_goal((unet or {}).get('dice'), 0.80) if unet else 'not run yet (step 8)'}"
        f"{_roi_goal(roi_own, 0.90)}.",
        f"- BUS-BRA -> BrEaST, no BrEaST case in training: AUC "
        f"{_goal((to_breast or {}).get('auc'), 0.85)}, fused "
        f"{_goal(_fused(to_breast).get('auc'), 0.85)}{_roi_goal(roi_breast, 0.85)}.",
        f"- BrEaST 5-fold, BUS-BRA-pretrained and fine-tuned: AUC {_goal(ft_auc, 0.85)}; fused "
        f"with descriptors {_cv_goals(ft)}; U-Net Dice "
        f"{_goal(unet_ft['metrics']['dice']['pooled'] if unet_ft else None, 0.80)}"
        + (f"; lesion-centred MobileNetV2 AUC {_goal(_pooled(roi_ft, 'auc')[0], 0.85)}, fused"
           f"{' with descriptors and the ResNet50' if _has_partner(roi_ft) else ''} "
           f"{_cv_goals(roi_ft)}" if roi_ft else "") + ".",
        "",
    ]
    live = {"recipe": recipe, "mobilenet_size": mobilenet_size_section(bb / "runs"),
            "unet_size": unet_size_section(bb / "runs", _img_size(breast_seg / "fold-0"),
                                           _dice_before(work / "cv" / "unet-effb2", breast_seg)),
            "ft_cap": ft_cap_section(bb / "cv"), "ft_lr": ft_lr_section(bb / "cv"),
            "roi": roi_choice_section(work)}
    lines += with_record(live, {"recipe": RECIPE_ABSENT, "roi": roi_absent(work)},
                         args.choices)
    if args.commands and args.commands.is_file():
        lines += ["", "Commands of this part (`$BUSBRA` is the BUS-BRA folder, `$WORK` the work "
                      "folder given to `examples/results_busbra.sh`):", "", "```bash",
                  args.commands.read_text().strip(), "```"]
    text = "\n".join(line for line in lines if line is not None) + "\n"
    for folder, name in ((args.busbra_dir, "$BUSBRA"), (str(work), "$WORK")):
        if folder:
            text = text.replace(str(Path(folder).resolve()), name).replace(str(folder), name)
    args.out.write_text(text)
    print(text)
    if args.save_choices:  # after the section, which stands either way
        busbra_said, still = later_choices(work, None)
        missing = save_choices(args.save_choices, live, {"busbra": busbra_said, "still": still})
        if missing:
            parser.exit(2, f"not recorded: the candidates of {', '.join(missing)} did not all "
                           f"run in {work}\n")


if __name__ == "__main__":
    main()
