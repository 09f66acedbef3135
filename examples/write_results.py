"""Write RESULTS.md from cross-validation folders (used by examples/results_breast.sh).

Usage: python examples/write_results.py OUT.md --seconds S --commands FILE
           [--data-dir BREAST_DIR] [--work-dir WORK_DIR] [--tta LABEL=CV_DIR]
           [--descriptors SEG_CV_DIR] [--times WORK/times.tsv [--recipe COMMANDS ...]]
           LABEL=CV_DIR ...

Each CV_DIR holds summary.json from `breastus cv`; a classifier CV fused with lesion
descriptors (`--fusion descriptors`) adds the fused rows; ``--tta`` names a CV whose folds were
also evaluated with ``--tta flip`` (eval-test-tta-flip/); ``--descriptors`` a segmentation CV
whose folds' eval-test/descriptors.csv give the descriptor table. The table puts the reference study's numbers
(one 27-image test split) beside breastus's 5-fold pooled out-of-fold numbers with 95%
bootstrap CIs, and the majority-class baseline that the reference test set could not rule out.
Paths are written relative to the folders given (``$BREAST``, ``$WORK``), never as this
machine's absolute paths.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

REFERENCE = [  # name, accuracy, AUC, malignant sensitivity, specificity, segmentation
    ("MobileNetV2 (reference study, ImageNet)", "0.630 (27 test images)", "n/r",
     "0.45 (both models)", "n/r", ""),
    ("ResNet50 (reference study, ImageNet)", "0.667 (27 test images)", "n/r",
     "0.45 (both models)", "n/r", ""),
    ("U-Net EfficientNetB2 (reference study)", "", "", "", "", "IoU 0.629 (test split)"),
]


def _fmt(row: dict | None, digits: int = 3) -> str:
    if not row or row.get("pooled") is None:
        return "n/a"
    text = f"{row['pooled']:.{digits}f}"
    if row.get("ci"):
        text += f" ({row['ci'][0]:.{digits}f}–{row['ci'][1]:.{digits}f})"
    return text


def _settings(folder: Path) -> dict:
    plan_file = Path(folder) / "cv.json"
    return json.loads(plan_file.read_text()) if plan_file.is_file() else {}


def _spread(row: dict | None) -> str:
    if not row or row.get("mean") is None:
        return "n/a"
    return f"{row['mean']:.3f} ± {row['sd']:.3f}"


def _goal(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} ({'met' if value >= target else 'not met'}: goal {target:g})"


def _pooled_fold_csv(folder: Path, name: str):
    import pandas as pd

    plan = _settings(folder)
    return pd.concat([pd.read_csv(folder / f"fold-{k}" / name).assign(fold=k)
                      for k in range(plan["folds"])], ignore_index=True)


def tta_section(label: str, folder: Path, n_bootstrap: int = 2000) -> list[str]:
    """AUC with and without flip TTA on the same out-of-fold cases, the paired bootstrap CI of
    the difference, and sensitivity/specificity at each fold's validation threshold (chosen
    without TTA)."""
    from breastus_cli.engine.stats.paired import paired_auc

    plain = _pooled_fold_csv(folder, "eval-test/predictions.csv")
    flip = _pooled_fold_csv(folder, "eval-test-tta-flip/predictions.csv")
    both = plain.merge(flip, on=["case_id", "fold"], suffixes=("", "_tta"))
    y = both["y_true"].to_numpy()
    p0, p1 = both["p_malignant"].to_numpy(), both["p_malignant_tta"].to_numpy()
    tta = paired_auc(y, p0, p1, n_bootstrap)  # B (with TTA) - A (without), paired
    lo, hi = tta.ci_difference

    def rates(pred):
        return (f"{(pred[y == 1] == 1).mean():.3f} / {(pred[y == 0] == 0).mean():.3f}")

    return [f"## Test-time augmentation (horizontal flip): {label}", "",
            "The same fold models on the same out-of-fold cases, with and without averaging "
            "each image's score with its mirror image's (`evaluate --tta flip`). Thresholds are "
            "each fold's, chosen on its validation cases without TTA.", "",
            "| | AUC | sensitivity / specificity |", "|---|---:|---:|",
            f"| without TTA | {tta.auc_a:.3f} | "
            f"{rates(both['y_pred'].to_numpy())} |",
            f"| with flip TTA | {tta.auc_b:.3f} | "
            f"{rates(both['y_pred_tta'].to_numpy())} |", "",
            f"AUC gain {tta.difference:+.3f} (95% CI "
            f"{lo:+.3f} to {hi:+.3f}, paired class-stratified bootstrap over the "
            f"{len(y)} cases)."]


def descriptor_section(folder: Path) -> list[str]:
    """Each descriptor of each fold's test cases from the ground-truth mask and from the fold's
    segmenter's mask: AUC of each alone and how well the segmenter's masks carry them."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from breastus_cli.engine.stats.descriptors import DESCRIPTORS, agreement

    table = _pooled_fold_csv(folder, "eval-test/descriptors.csv")
    y = (table["label"] == "malignant").to_numpy().astype(int)
    agree = agreement(table)
    lines = ["## Lesion descriptors, one at a time", "",
             f"Each of the {len(table)} out-of-fold test lesions described from its "
             "ground-truth mask (oracle: upper bound) and from the mask of the fold's "
             "segmenter (no ground truth). AUC of the descriptor alone, with the direction in "
             "which it points to malignancy (higher or lower; read off these same cases: "
             "descriptive, not a model); agreement between the two masks' values.", "",
             "| descriptor | AUC, ground-truth masks (upper bound) | AUC, segmenter's masks | "
             "Spearman (gt vs predicted) | mean abs. difference |",
             "|---|---:|---:|---:|---:|"]
    for name in (*DESCRIPTORS, "log_area"):
        cells = []
        for source in ("gt", "pred"):
            values = table[f"{source}_{name}"].to_numpy(dtype=float)
            ok = np.isfinite(values)
            if ok.sum() < 10 or len(set(y[ok])) < 2:
                cells.append("n/a")
                continue
            auc = roc_auc_score(y[ok], values[ok])
            cells.append(f"{max(auc, 1 - auc):.3f} ({'higher' if auc >= 0.5 else 'lower'})")
        a = agree[name]
        rho = "n/a" if a["spearman"] is None or a["spearman"] != a["spearman"] \
            else f"{a['spearman']:.2f}"
        mae = "n/a" if a["mae"] is None or a["mae"] != a["mae"] else f"{a['mae']:.3g}"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {rho} | {mae} |")
    return lines


def fusion_rows(label: str, fusion: dict) -> list[str]:
    """Main-table rows of a fused CV: descriptors alone and fused, then the oracle rows."""
    names = (("descriptors", "lesion descriptors alone (logistic regression; segmenter's "
                             "masks)"),
             ("fused", f"{label} + lesion descriptors, fused (segmenter's masks)"),
             ("descriptors_gt_mask", "lesion descriptors alone (ground-truth masks: upper "
                                     "bound, needs the mask)"),
             ("fused_gt_mask", f"{label} + descriptors, fused (ground-truth masks: upper "
                               "bound, needs the mask)"))
    return _score_rows(fusion, names)


def _score_rows(scores: dict, names: tuple[tuple[str, str], ...]) -> list[str]:
    """A main-table row (accuracy, AUC, sensitivity, specificity) for each ``(key, name)`` of
    ``names`` present in ``scores`` (a fusion block of summary.json)."""
    rows = []
    for key, name in names:
        if key in scores:
            m = scores[key]
            rows.append(f"| {name} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('auc'))} | "
                        f"{_fmt(m.get('sensitivity'))} | {_fmt(m.get('specificity'))} | |")
    return rows


def _fused_goal(label: str, fused: dict) -> str:
    """The goal line of a fused classifier's pooled AUC, sensitivity and specificity."""
    pooled = {k: (fused.get(k) or {}).get("pooled") for k in ("auc", "sensitivity",
                                                              "specificity")}
    return (f"- {label}, fused: AUC {_goal(pooled['auc'], 0.85)}; sensitivity "
            f"{_goal(pooled['sensitivity'], 0.85)}; specificity "
            f"{_goal(pooled['specificity'], 0.60)}.")


def two_view_rows(label: str, folder: str) -> tuple[list[str], list[str]]:
    """(main-table rows, goal lines) of a lesion-centred CV fused with the descriptors and a
    whole-image classifier's score (cv --fuse-with-cv); nothing before that fusion ran."""
    file = Path(folder) / "summary.json"
    fusion = (json.loads(file.read_text()).get("fusion") or {}) if file.is_file() else {}
    if "partner" not in fusion or "fused" not in fusion:
        return [], []
    rows = _score_rows(fusion, (("fused", f"{label}, fused (segmenter's masks)"),
                                ("fused_gt_mask", f"{label}, fused (ground-truth masks: upper "
                                                  "bound, needs the mask)")))
    return rows, [_fused_goal(label, fusion["fused"])]


def threshold_note(summaries: list[dict], two_view: str | None = None) -> str:
    """RESULTS.md's bullet on the validation threshold, with the pooled test sensitivities it
    gave (the CNNs alone, and fused: the cross-validations' and the two-view fusion's)."""
    def pooled(block: dict | None) -> float | None:
        return ((block or {}).get("sensitivity") or {}).get("pooled")

    alone = [pooled(s["metrics"]) for s in summaries if s.get("task") == "cls"]
    fused = [pooled((s.get("fusion") or {}).get("fused")) for s in summaries]
    file = Path(two_view.split("=", 1)[1]) / "summary.json" if two_view else None
    if file is not None and file.is_file():
        fused.append(pooled((json.loads(file.read_text()).get("fusion") or {}).get("fused")))
    alone, fused = [v for v in alone if v is not None], [v for v in fused if v is not None]

    def span(values: list[float]) -> str:
        return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    parts = ([f"{span(alone)} for the CNNs alone"] if alone else []) + (
        [f"{span(fused)} fused"] if fused else [])
    return ("- Each threshold is chosen per fold on about 15 validation malignancies (carved from "
            "the training folds), a noisy choice. The CNN's validation cases also chose its "
            "best epoch, so its scores there are flattered and its threshold sits high; the "
            "fused classifier's threshold is chosen on cross-fitted scores, so its own fit "
            "does not flatter them. Aiming at sensitivity 0.9 on "
            "validation gave pooled test sensitivities of " + " and ".join(parts) + ".") \
        if parts else ""


def _relative_to(names: dict[str, str | None]):
    """A function writing each given folder (as given and as its absolute path) as its name."""
    pairs = []
    for name, folder in names.items():
        if folder:
            forms = {folder.rstrip("/"), str(Path(folder).resolve())}
            pairs += [(form, name) for form in forms if form not in ("", ".")]
    pairs.sort(key=lambda pair: -len(pair[0]))  # the longest first: a work folder inside data

    def relative(text: str) -> str:
        for form, name in pairs:
            text = text.replace(form, name)
        return text

    return relative


def _cpu() -> str:
    """The processor's model name where Linux says it (times differ 2x between 2-core
    machines), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def recipe_seconds(times: Path, recipes: list[Path]) -> tuple[float, int, list[str]]:
    """The wall clock the recipe's breastus commands ran for, from a times.tsv (UTC end time,
    seconds, exit status, command; examples/results_lib.sh): the union of their running
    intervals, so runs that overlapped count once and an interrupted attempt counts with its
    re-run. Returns the seconds, how many recipe commands were timed, and those never timed
    (skipped by every invocation: their work came from elsewhere)."""
    import datetime as dt

    wanted = dict.fromkeys(line.strip() for path in recipes if path.is_file()  # in order
                           for line in path.read_text().splitlines()
                           if line.startswith("breastus "))
    intervals, seen = [], set()
    for row in times.read_text().splitlines():
        parts = row.split("\t", 3)
        if len(parts) != 4 or parts[3] not in wanted:
            continue
        end = dt.datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%SZ").timestamp()
        intervals.append((end - float(parts[1]), end))
        seen.add(parts[3])
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is not None and start < reach:
            start = reach
        if end > start:
            total += end - start
        reach = end if reach is None else max(reach, end)
    return total, len(seen), [c for c in wanted if c not in seen]


def time_line(times: Path | None, recipes: list[Path]) -> str:
    """RESULTS.md's time, measured across resumed invocations ('' without a times.tsv)."""
    if times is None or not times.is_file():
        return ""
    seconds, timed, missing = recipe_seconds(times, recipes)
    line = (f"Time: {seconds / 60:.1f} minutes of wall clock for the {timed} timed recipe "
            f"commands ({seconds / 3600:.2f} h; {times.name}, across invocations: the union of "
            "their running intervals, so commands that ran side by side count once and an "
            "interrupted attempt counts with its re-run; other commands timed there, such as "
            "experiments, are left out)")
    if missing:
        line += (f"; {len(missing)} recipe command{'s' if len(missing) > 1 else ''} "
                 f"{'have' if len(missing) > 1 else 'has'} no timing (done before "
                 f"{times.name} existed, or skipped by every invocation)")
    return line + "."


def _before_rerun(work: Path | None) -> str:
    """The two MobileNetV2 CVs at fold 0's 128 px, when their folders are still in WORK
    (cv/mobilenetv2, cv/mobilenetv2-roi): their pooled AUCs, for the reader to compare."""
    said = []
    for name, folder in (("whole image", "mobilenetv2"), ("lesion-centred", "mobilenetv2-roi")):
        path = Path(work) / "cv" / folder / "summary.json" if work else None
        if path is None or not path.is_file():
            continue
        summary = json.loads(path.read_text())
        fused = (summary.get("fusion") or {}).get("fused", {}).get("auc", {}).get("pooled")
        auc = summary["metrics"]["auc"]["pooled"]
        said.append(f"{name} AUC {auc:.3f}" + (f", fused {fused:.3f}" if fused is not None
                                               else ""))
    return (": " + "; ".join(said) + ", with fold 0 among the folds reported") if said else ""


@functools.lru_cache(maxsize=None)
def _sibling(name: str):
    """examples/NAME.py, beside this script, imported once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cross():
    """examples/write_cross.py: the choices made on BUS-BRA."""
    return _sibling("write_cross")


def _pretrained():
    """examples/write_pretrained.py: RESULTS.md's ImageNet-pretrained section."""
    return _sibling("write_pretrained")


def _where_chosen(work: Path | None, choices: Path | None = None) -> str:
    """RESULTS.md's bullet on where each setting was chosen: on BUS-BRA, or on BrEaST's fold 0
    (also reported); from the candidates in WORK, else as ``choices`` recorded them (default
    examples/choices.json)."""
    cross = _cross()
    busbra, still = cross.later_choices(work, cross.CHOICES if choices is None else choices)
    text = ("- Where each setting was chosen. On BUS-BRA's validation cases (BrEaST took no "
            "part; see the BUS-BRA section): ResNet50's learning rate and schedule (constant "
            "1e-3), augmentation strength (1) and input size (96 px), which confirmed what the "
            "ResNet50 rows here already used; the whole-image MobileNetV2's input size (160 px) "
            "and the lesion-centred MobileNetV2's crop size and margin (160 px, 0.2), with which "
            "their rows here were re-run (they had used 128 px, chosen on fold 0"
            f"{_before_rerun(work)})")
    text += ("; " + "; ".join(busbra) + "." if busbra else ".")
    if still:
        text += (" Still chosen on BrEaST's fold 0, which is also reported (test fold 0 took "
                 "part in choosing them; the other four did not): " + " and ".join(still)
                 + ".")
    return text + (" The U-Net's 30 epochs on BrEaST are a cap: each fold keeps the epoch of "
                   "its best validation IoU" + _kept_epochs(work) + ".")


def _kept_epochs(work: Path | None) -> str:
    """ (epochs 20-28 of 30)': the epochs BrEaST's U-Net folds kept, when their runs are there."""
    if work is None:
        return ""
    epochs = [json.loads(f.read_text()).get("epoch") for f in
              sorted(_cross().breast_seg_cv(Path(work)).glob("fold-*/best.json"))]
    epochs = [e for e in epochs if e is not None]
    return f" (epochs {min(epochs)}-{max(epochs)} of 30)" if epochs else ""


def _pretrained_block(results: Path) -> str:
    """RESULTS.md's ImageNet-pretrained section (between its markers), or ''."""
    module = _pretrained()
    text = results.read_text() if results.is_file() else ""
    if module.START not in text or module.END not in text:
        return ""
    return module.START + text.split(module.START, 1)[1].split(module.END, 1)[0] + module.END


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", help="LABEL=CV_DIR")
    parser.add_argument("--seconds", type=float, default=None, help="wall time of the script")
    parser.add_argument("--wall-note", default="", help="said after the wall time (e.g. what "
                        "else shared the machine), or alone without --seconds")
    parser.add_argument("--commands", type=Path, default=None, help="file with the commands run")
    parser.add_argument("--data-dir", default=None, help="the dataset folder given ($BREAST)")
    parser.add_argument("--work-dir", default=None, help="the work folder given ($WORK)")
    parser.add_argument("--tta", action="append", default=[],
                        help="LABEL=CV_DIR whose folds were also evaluated with --tta flip")
    parser.add_argument("--descriptors", type=Path, default=None,
                        help="a segmentation CV folder whose folds wrote descriptors.csv")
    parser.add_argument("--two-view", default=None,
                        help="LABEL=CV_DIR: a lesion-centred CV fused with the descriptors and "
                             "a whole-image classifier (cv --fuse-with-cv): its fused rows and "
                             "goal")
    parser.add_argument("--times", type=Path, default=None,
                        help="WORK/times.tsv: the recipe's time measured across invocations")
    parser.add_argument("--recipe", type=Path, nargs="*", default=None,
                        help="the commands files whose commands are the recipe timed with "
                             "--times (default: --commands)")
    parser.add_argument("--choices", type=Path, default=None,
                        help="the record of the choices made on BUS-BRA, used when WORK lacks "
                             "their candidates (default: examples/choices.json)")
    parser.add_argument("--append", type=Path, default=None,
                        help="a markdown section to include (examples/write_cross.py's)")
    args = parser.parse_args()
    relative = _relative_to({"$BREAST": args.data_dir, "$WORK": args.work_dir})

    runs = []
    for item in args.runs:
        label, folder = item.split("=", 1)
        summary_file = Path(folder) / "summary.json"
        if not summary_file.is_file():
            raise SystemExit(f"{folder}: no summary.json (run 'breastus cv' there first)")
        runs.append((label, Path(folder), json.loads(summary_file.read_text()),
                     _settings(Path(folder))))

    lines = ["# Results on BrEaST-Lesions_USG", "",
             "Data: BrEaST-Lesions_USG (Pawłowska et al., Scientific Data 2024; TCIA, "
             "DOI 10.7937/9WKK-Q141; CC BY 4.0): the 252 cases with a tumor mask (154 benign, "
             "98 malignant). breastus numbers are pooled over the out-of-fold predictions of a "
             "case-level stratified 5-fold cross-validation (every case scored once, by a model "
             "that never saw it), with 95% percentile-bootstrap CIs over cases; the reference "
             "numbers come from one 27-image test split. Every breastus model of this table and "
             "the BUS-BRA section is trained from scratch (`--weights none`); the "
             "ImageNet-pretrained EfficientNet-Lite0 rows have their own section below.", "",
             "Sensitivity and specificity are those of the malignant class at a threshold chosen "
             "per fold on that fold's validation cases (carved from its training folds), to "
             "reach the sensitivity given by `--target-sensitivity`; the test fold never "
             "chooses anything. AUC needs no threshold.", "",
             "| model | accuracy | AUC | sensitivity | specificity | Dice / IoU |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {acc} | {auc} | {sens} | {spec} | {seg} |"
              for name, acc, auc, sens, spec, seg in REFERENCE]
    baseline = None
    goals: list[str] = []
    for label, folder, summary, _plan in runs:
        m = summary["metrics"]
        if summary["task"] == "cls":
            baseline = summary.get("majority_baseline_accuracy", baseline)
            crops = " (crops from the fold's segmenter)" if "ground_truth_roi" in summary else ""
            lines.append(f"| {label}{crops} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('auc'))} "
                         f"| {_fmt(m.get('sensitivity'))} | {_fmt(m.get('specificity'))} | |")
            if "ground_truth_roi" in summary:
                g = summary["ground_truth_roi"]
                lines.append(f"| {label} (ground-truth crops: upper bound, needs the mask) | "
                             f"{_fmt(g.get('accuracy'))} | {_fmt(g.get('auc'))} | "
                             f"{_fmt(g.get('sensitivity'))} | {_fmt(g.get('specificity'))} | |")
            auc, sens = m.get("auc", {}).get("pooled"), m.get("sensitivity", {}).get("pooled")
            goals.append(f"- {label}: AUC {_goal(auc, 0.85)}; sensitivity at the validation "
                         f"threshold {_goal(sens, 0.85)}.")
            if "fusion" in summary:
                # two fused CVs on the same segmentation folds share the descriptor model:
                # its rows are written once
                lines += [row for row in fusion_rows(label, summary["fusion"]) if row not in lines]
                goals.append(_fused_goal(f"{label} + lesion descriptors",
                                         summary["fusion"].get("fused", {})))
        else:
            kept = _cross().postprocess_chosen(folder)  # the mask post-processing, per fold
            lines.append(f"| {label} (post-processing: {kept}) | | | | | Dice "
                         f"{_fmt(m.get('dice'))}, IoU {_fmt(m.get('iou'))} |")
            goals.append(f"- {label}: mean Dice {_goal(m.get('dice', {}).get('pooled'), 0.75)}.")
    if args.two_view:
        two_rows, two_goal = two_view_rows(*args.two_view.split("=", 1))
        lines += two_rows
        goals += two_goal
    if baseline is not None:
        lines.append(f"| always 'benign' (majority class) | {baseline:.3f} | 0.500 | 0.000 | "
                     "1.000 | |")

    lines += ["", "## Goals (from scratch, 5-fold)", "", *goals, "",
              "## Spread over folds and settings", "",
              "Mean ± sd over the folds (each fold scored on its own held-out cases), and what each "
              "cross-validation trained with.", "",
              "| model | AUC / Dice, mean ± sd | input px | epochs | lr | batch | threshold target "
              "| training time (5 folds) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, _, summary, plan in runs:
        train = plan.get("train", {})
        key = "auc" if summary["task"] == "cls" else "dice"
        roi = " (lesion crops)" if train.get("roi", "none") != "none" else ""
        target = plan.get("target_sensitivity")
        lines.append(f"| {label} | {_spread(summary['metrics'].get(key))} | "
                     f"{train.get('img_size')}{roi} | {train.get('epochs')} | {train.get('lr')} | "
                     f"{train.get('batch_size')} | {'' if target is None else target} | "
                     f"{summary.get('seconds_training', 0) / 60:.1f} min |")
    for label, _, summary, _plan in runs:
        if "lesion_found" in summary:
            lines += ["", f"{label}: the fold's segmenter found a lesion in "
                          f"{summary['lesion_found']} of {summary['n']} test images (the others "
                          "were classified whole)."]
    from breastus_cli.reports.fusion import fusion_markdown

    for label, _, summary, _plan in runs:
        if "fusion" in summary:
            lines += ["", *fusion_markdown(summary["fusion"], f"## {label} fused with lesion "
                                                              "descriptors"),
                      "", "No score of a test case depends on its own label: the descriptor "
                          "model saw only the fold's training cases (their ground-truth "
                          "masks), the combination and the threshold only its validation "
                          "cases; the test cases' descriptors come from the fold's segmenter."]
    if args.descriptors is not None:
        lines += ["", *descriptor_section(args.descriptors)]
    for item in args.tta:
        label, folder = item.split("=", 1)
        lines += ["", *tta_section(label, Path(folder))]
    lines += ["", "Fold ensembles (`predict --cls-run CV_DIR`, `evaluate CV_DIR --ensemble`) are "
                  "not scored here: each fold model saw the other folds' cases, so an ensemble "
                  "of them has seen every BrEaST case. Their gain is measured on another "
                  "dataset."]
    for label, _, summary, _plan in runs:
        auc = summary["metrics"].get("auc") or {}
        if auc.get("pooled") is not None and auc.get("mean") is not None \
                and auc["pooled"] < auc["mean"] - 0.03:
            lines += ["", f"{label}: the pooled AUC ({auc['pooled']:.3f}) is below the mean of "
                          f"the folds' AUCs ({auc['mean']:.3f}): pooling ranks five models' "
                          "scores together, and from-scratch models differ in scale from fold "
                          "to fold. The fused model, refitted per fold on the log-odds scale, "
                          "pools better."]
    if args.append is not None and args.append.is_file():
        lines += ["", args.append.read_text().strip()]
    lines += ["", "## How the settings were chosen, and what they do not show", "",
              _where_chosen(args.work_dir, args.choices),
              "- Not tried for lack of time on 2 CPU cores: larger inputs (224 px), longer "
              "schedules, ImageNet weights for MobileNetV2 and ResNet50 (the reference study's "
              "setting; not downloadable here: EfficientNet-Lite0's, from a pinned package, are "
              "in the pretrained section). A cosine learning-rate decay, a lower learning "
              "rate, stronger augmentation, 128 px for ResNet50, a wider crop margin and "
              "domain pretraining on BUS-BRA were tried later: see the BUS-BRA section.",
              "- The fused classifier's settings were fixed before its cross-validation and "
              "not tuned on these folds: two L2-regularised logistic regressions (C 0.5 for "
              "the descriptors, 1.0 for the combination), twelve descriptors. One descriptor "
              "constant was chosen on BrEaST itself: lobulation counts convexity defects "
              "deeper than 5% of the equivalent diameter, picked among a few depths by their "
              "AUC on all 252 ground-truth masks (3%: 0.79, 5%: 0.78) — a small optimistic "
              "bias in the descriptor and fused rows.",
              threshold_note([summary for _, _, summary, _ in runs], args.two_view),
              "- The reference study's accuracies (0.63/0.67 on 27 images) are within one or two "
              "images of the majority-class baseline on its split; its CIs would span "
              "roughly ±0.18."]
    lines += ["", f"Hardware: {_cpu()}, {os.cpu_count()} CPU "
              f"cores, no GPU; Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}."]
    recipe = args.recipe if args.recipe is not None else [args.commands] if args.commands else []
    measured = time_line(args.times, [r for r in recipe if r is not None])
    if measured:  # resumable: the last invocation's wall time alone would say too little
        lines.append(measured)
    if args.seconds is not None:
        lines.append(f"Wall time of {'the last invocation of ' if measured else ''}the whole "
                     f"script: {args.seconds / 60:.1f} minutes"
                     + (f" ({args.wall_note})" if args.wall_note else "") + ".")
    elif args.wall_note:  # no single timed run: what the time is made of, said as such
        lines.append(f"Time: {args.wall_note}.")
    lines += ["", "Per-fold folders (run directories, `eval-test/` reports, out-of-fold "
                  "predictions) stay in the work folder: "
              + ", ".join(f"`{relative(str(folder))}`" for _, folder, _, _ in runs) + "."]
    if args.commands and args.commands.is_file():
        lines += ["", "## Commands", ""]
        if args.data_dir or args.work_dir:
            lines += ["`$BREAST` is the BrEaST-Lesions_USG folder and `$WORK` the work folder "
                      "given to `examples/results_breast.sh BREAST [WORK]`.", ""]
        lines += ["```bash", relative(args.commands.read_text().strip()), "```"]
    # every path named anywhere (commands, fitted-on notes) relative to the folders given
    kept = _pretrained_block(args.out)  # examples/write_pretrained.py's section stays
    args.out.write_text(relative("\n".join(lines)) + "\n")
    if kept:
        _pretrained().insert(args.out, kept)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
