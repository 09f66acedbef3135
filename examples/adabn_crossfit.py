"""AdaBN measured cross-fitted: adapt on one half of the other hospital, score the other half, swap.

Usage: python examples/adabn_crossfit.py RUN TARGET_DATA OUT [--cases N] [--seed S]
           [--bootstrap B]

TARGET_DATA is a prepared dataset of the other hospital (labels are used for scoring only).
Its cases (or a stratified N of them, ``--cases``) are cut into two halves, stratified by class
and grouped by patient (a patient's scans stay on one side), seeded. For each half h:

    breastus adapt OUT/base --data OUT/<name>-h<h> --out OUT/adapted-h<h>
    breastus evaluate OUT/adapted-h<h> --data OUT/<name>-h<1-h> --split all
    breastus evaluate OUT/base --data OUT/<name>-h<1-h> --split all
    breastus compare OUT/base/eval-<name>_h<1-h>-all OUT/adapted-h<h>/eval-<name>_h<1-h>-all

so no scored case was ever in its model's adaptation set. The pooled AUC (every case scored once
with and once without adaptation) gets a paired bootstrap CI
(:func:`breastus_cli.engine.stats.paired.paired_auc`). A segmenter RUN is measured the same way
on the same halves, by Dice instead of AUC (no ``compare`` step): the pooled mean Dice of each
and the paired bootstrap CI of the mean Dice difference over images
(:func:`breastus_cli.engine.stats.paired.paired_mean`), per-image Dice from each evaluation's
per_case.csv. OUT/base is a copy of RUN (RUN itself is only read); the half datasets are a
filtered manifest.csv beside links to TARGET_DATA's image folders (nothing copied). Writes
OUT/crossfit.json and OUT/crossfit.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from breastus_cli.data.combine import dataset_names
from breastus_cli.data.manifest import read_manifest
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.paired import paired_auc, paired_mean


def halves(manifest: pd.DataFrame, cases: int | None, seed: int) -> list[pd.DataFrame]:
    """Two class-stratified, patient-grouped halves of ``manifest`` (of ``cases`` rows about)."""
    y = (manifest["label"] == "malignant").to_numpy().astype(int)
    groups = manifest["patient_id"].astype(str).to_numpy()
    if cases is not None and cases < len(manifest):
        k = max(2, round(len(manifest) / cases))
        folds = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        _, keep = next(folds.split(manifest, y, groups))
        manifest, y, groups = manifest.iloc[keep], y[keep], groups[keep]
    folds = StratifiedGroupKFold(2, shuffle=True, random_state=seed)
    return [manifest.iloc[idx].reset_index(drop=True)
            for _, idx in folds.split(manifest, y, groups)]


def write_subset(source: Path, rows: pd.DataFrame, out: Path) -> None:
    """A prepared dataset of ``rows``: the filtered manifest, links to the image folders."""
    out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "manifest.csv", index=False)
    shutil.copy2(source / "prepare.json", out / "prepare.json")
    for sub in ("cls", "seg"):
        if (source / sub).exists() and not (out / sub).exists():
            (out / sub).symlink_to((source / sub).resolve())


def breastus(*args: str) -> None:
    print("+ breastus", " ".join(args), flush=True)
    subprocess.run(["breastus", *args], check=True)


def predictions(eval_dir: Path) -> pd.DataFrame:
    return pd.read_csv(eval_dir / "predictions.csv")[["case_id", "y_true", "p_malignant"]]


def dice(eval_dir: Path) -> pd.DataFrame:
    """A segmentation evaluation's per-image Dice (evaluate_seg's per_case.csv)."""
    return pd.read_csv(eval_dir / "per_case.csv")[["case_id", "dice"]]


def ci(values: list[float] | None) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]" if values else "n/a"


def evaluated(run: Path, scored: Path, output: str) -> Path:
    """``run``'s evaluation on every case of the half dataset ``scored`` (run once)."""
    eval_dir = run / f"eval-{dataset_names([scored])[0]}-all"  # the name evaluate gives it
    if not (eval_dir / output).is_file():
        breastus("evaluate", str(run), "--data", str(scored), "--split", "all",
                 "--bootstrap", "200")
    return eval_dir


def adapted_run(base: Path, data: Path, out: Path) -> Path:
    if not (out / "model.keras").is_file():
        breastus("adapt", str(base), "--data", str(data), "--out", str(out))
    return out


def seg_crossfit(args: argparse.Namespace, out: Path, base: Path, parts: list[pd.DataFrame],
                 data: list[Path]) -> int:
    """The segmenter's cross-fitted Dice with and without adaptation (OUT/crossfit.*)."""
    pooled, per_half = [], []
    for h in (0, 1):
        scored = data[1 - h]
        adapted = adapted_run(base, data[h], out / f"adapted-h{h}")
        both = dice(evaluated(base, scored, "per_case.csv")).merge(
            dice(evaluated(adapted, scored, "per_case.csv")), on="case_id",
            suffixes=("_a", "_b"))
        half = paired_mean(both["dice_a"], both["dice_b"], n_bootstrap=args.bootstrap,
                           seed=args.seed)
        per_half.append({"adapted_on": str(data[h]), "scored": str(scored), **half.to_dict()})
        pooled.append(both)
    table = pd.concat(pooled, ignore_index=True)
    r = paired_mean(table["dice_a"], table["dice_b"], n_bootstrap=args.bootstrap,
                    seed=args.seed)
    summary = {"run": str(args.run), "target": str(args.target), "task": "seg",
               "metric": "mean per-image Dice at the original image size (evaluate_seg), "
                         "the run's postprocess.json applied to both",
               "cases": len(table), "halves": [len(p) for p in parts], "seed": args.seed,
               "pooled": {"n": r.n, "dice_a": r.mean_a, "ci_a": r.ci_a, "dice_b": r.mean_b,
                          "ci_b": r.ci_b, "difference": r.difference,
                          "ci_difference": r.ci_difference, "n_bootstrap": r.n_bootstrap,
                          "confidence": r.confidence},
               "per_half": per_half}
    (out / "crossfit.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# AdaBN cross-fitted (segmenter): {args.run} on {args.target}", "",
             f"{r.n} images, halves {summary['halves']}, seed {args.seed}; each image "
             "segmented by the model adapted on the other half. Mean per-image Dice at the "
             "original size; paired bootstrap over images "
             f"({r.n_bootstrap} resamples, 95%).", "",
             "| | mean Dice | 95% CI |", "|---|---|---|",
             f"| without adaptation | {r.mean_a:.3f} | {ci(r.ci_a)} |",
             f"| AdaBN (cross-fitted) | {r.mean_b:.3f} | {ci(r.ci_b)} |",
             f"| difference (AdaBN - none) | {r.difference:+.3f} | {ci(r.ci_difference)} |", "",
             "| half (adapted on -> scored) | n | Dice none | Dice AdaBN | difference |",
             "|---|---|---|---|---|"]
    lines += [f"| h{h} -> h{1 - h} | {p['n']} | {p['mean_a']:.3f} | {p['mean_b']:.3f} | "
              f"{p['difference']:+.3f} {ci(p['ci_difference'])} |"
              for h, p in enumerate(per_half)]
    (out / "crossfit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base"
    if not base.exists():
        shutil.copytree(args.run, base, symlinks=True)
    name = args.target.resolve().name
    parts = halves(read_manifest(args.target), args.cases, args.seed)
    data = [out / f"{name}-h{h}" for h in (0, 1)]
    for rows, folder in zip(parts, data):
        write_subset(args.target, rows, folder)
    if RunConfig.read(base).task == "seg":
        return seg_crossfit(args, out, base, parts, data)
    pooled_a, per_half = [], []
    for h in (0, 1):
        scored = data[1 - h]
        adapted = adapted_run(base, data[h], out / f"adapted-h{h}")
        eval_a = evaluated(base, scored, "predictions.csv")
        eval_b = evaluated(adapted, scored, "predictions.csv")
        breastus("compare", str(eval_a), str(eval_b),
                 "--out", str(out / f"compare-h{h}"), "--bootstrap", str(args.bootstrap))
        a, b = predictions(eval_a), predictions(eval_b)
        both = a.merge(b, on=["case_id", "y_true"], suffixes=("_a", "_b"))
        pooled_a.append(both)
        per_half.append(json.loads((out / f"compare-h{h}" / "compare.json").read_text()))
    table = pd.concat(pooled_a, ignore_index=True)
    result = paired_auc(table["y_true"].to_numpy(), table["p_malignant_a"].to_numpy(),
                        table["p_malignant_b"].to_numpy(), n_bootstrap=args.bootstrap,
                        seed=args.seed)
    summary = {"run": str(args.run), "target": str(args.target), "cases": len(table),
               "halves": [len(p) for p in parts], "seed": args.seed,
               "pooled": result.to_dict(), "per_half": per_half}
    (out / "crossfit.json").write_text(json.dumps(summary, indent=2) + "\n")

    r = result
    lines = [f"# AdaBN cross-fitted: {args.run} on {args.target}", "",
             f"{len(table)} cases ({r.n_malignant} malignant), halves {summary['halves']}, "
             f"seed {args.seed}; each case scored by the model adapted on the other half.", "",
             "| | AUC | 95% CI |", "|---|---|---|",
             f"| without adaptation | {r.auc_a:.3f} | {ci(r.ci_a)} |",
             f"| AdaBN (cross-fitted) | {r.auc_b:.3f} | {ci(r.ci_b)} |",
             f"| difference (AdaBN - none) | {r.difference:+.3f} | {ci(r.ci_difference)} |", ""]
    (out / "crossfit.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
