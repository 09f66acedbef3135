"""How many labeled local cases a re-chosen threshold needs at a new hospital.

Usage: python examples/local_threshold.py PREDICTIONS_CSV OUT.md [--target 0.9]
           [--tolerance 0.05] [--sizes 10 20 40 80 120] [--repeats 200] [--seed 0]

PREDICTIONS_CSV is an evaluation's predictions.csv (columns y_true, p_malignant) of a model on the
other hospital's cases, e.g. RUN/eval-breast-all/predictions.csv. For each n, n local cases are
drawn (stratified, 200 times), the threshold re-chosen for the target sensitivity on them and
the sensitivity measured on the remaining cases
(:func:`breastus_cli.engine.stats.local_threshold.local_threshold_study`). Writes the table to
OUT.md and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from breastus_cli.engine.stats.local_threshold import local_threshold_study, markdown_table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40, 80, 120])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = pd.read_csv(args.predictions)
    y, p = table["y_true"].to_numpy(), table["p_malignant"].to_numpy()
    rows = local_threshold_study(y, p, args.sizes, target=args.target,
                                 tolerance=args.tolerance, repeats=args.repeats, seed=args.seed)
    text = "\n".join([
        f"# Threshold re-chosen on n local cases: {args.predictions}", "",
        f"{len(y)} cases ({int(y.sum())} malignant). For each n: {args.repeats} stratified draws "
        f"of n labeled local cases (seed {args.seed}), the threshold chosen on them for "
        f"sensitivity {args.target:g}, the sensitivity measured on the remaining cases.", "",
        markdown_table(rows, args.target, args.tolerance), ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
