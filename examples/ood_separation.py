"""How well a run's ``ood_score`` tells its own hospital's scans from another hospital's.

Usage: python examples/ood_separation.py RUN OTHER_DATA OUT.json [--other-fold K]

Scores the run's own test cases and OTHER_DATA's cases (all of them, or the test cases of its
fold K) with the run's feature statistics, computed as ``predict`` would and stored in RUN when
missing; the AUC of ``ood_score`` (the other hospital the positive class) with a stratified
bootstrap CI, and the share of each group flagged out of domain (``ood_score > 1``), go to OUT.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from breastus_cli.data.manifest import read_manifest
from breastus_cli.engine.apply import ood
from breastus_cli.engine.apply.loaded_run import load_model
from breastus_cli.engine.runs.rundir import run_cases
from breastus_cli.engine.runs.runconfig import RunConfig
from breastus_cli.engine.stats.metrics import classification_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("other", type=Path, help="the other hospital's prepared dataset")
    parser.add_argument("out", type=Path)
    parser.add_argument("--other-fold", type=int, default=None,
                        help="score only the test cases of this fold of OTHER (default: all)")
    args = parser.parse_args()
    t0 = time.time()
    model = load_model(args.run)
    stats, record = ood.ensure(args.run, model)
    config = RunConfig.read(args.run)
    own = list(run_cases(config, "test")["image_path"])
    if args.other_fold is None:
        other = [str(args.other / p) for p in read_manifest(args.other)["image"]]
    else:
        fold = {"settings": {"fold": args.other_fold}}
        other = list(run_cases(fold, "test", args.other)["image_path"])
    s_own = stats.score(ood.features_of_files(model, config.img_size, own, stats.layers))
    s_other = stats.score(ood.features_of_files(model, config.img_size, other, stats.layers))
    y = np.r_[np.zeros(len(s_own), int), np.ones(len(s_other), int)]
    s = np.r_[s_own, s_other]
    m = classification_metrics(y, s / (1.0 + s), n_bootstrap=2000, seed=0)  # monotone: same AUC
    out = {"run": args.run.name, "other": args.other.name, "other_fold": args.other_fold,
           "n_own_test": len(s_own), "n_other": len(s_other), "auc": m["auc"],
           "auc_ci": m["ci"]["auc"], "out_of_domain_own_test": float(np.mean(s_own > 1)),
           "out_of_domain_other": float(np.mean(s_other > 1)),
           "out_of_domain_validation": float(np.mean(stats.val_scores > 1)),
           "levels": record.get("levels"), "seconds": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
