"""Evaluate time of a lesion-centred fused classifier: the segmenter's masks computed once per
image list (``evaluate.mask_cache``, what ``breastus evaluate`` does) against once per use (the
cache switched off: the crops, the fused classifier's descriptors and a lesion-centred
partner's crops each run the segmenter again, as before 2026-11-30).

    with cache    breastus_cli.engine.evaluation.evaluate.evaluate(EvalSettings(RUN, seg_run=SEG,
                  fusion="descriptors", fuse_with=PARTNER, target_sensitivity=0.9))
    without       the same, with ``mask_cache`` replaced by a block that caches nothing

RUN is copied into a temporary folder first (its fusion.json, threshold.json and eval-test/
are rewritten by every evaluation, never the original's). The two are run in alternation,
``--rounds`` times each (order swapped each round, so load from other work hits them alike);
the median of each is reported, with the segmenter passes counted; one untimed evaluation
comes first (TensorFlow's start-up and first traces would otherwise weigh on whichever ran
first). The numbers written
(AUCs) must agree between the two: the cache changes only how often the masks are computed.

Run: .venv/bin/python benchmarks/eval_masks.py RUN --seg-run SEG [--fuse-with PARTNER]
     [--rounds 2] [--bootstrap 200]
(RUN: a lesion-centred classifier run, e.g. examples/results_busbra.sh's
busbra/runs/mobilenetv2-roi160-f0; SEG its U-Net; PARTNER a second classifier.)
Writes the result between the EVAL_MASKS markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, shown  # noqa: E402
from _record import record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--seg-run", type=Path, required=True)
    parser.add_argument("--fuse-with", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    from breastus_cli.engine.evaluation import evaluate as ev
    from breastus_cli.engine.apply import inference

    passes = {"n": 0}
    real_open = inference.open_run

    def counting_open(run, task, *a, **k):
        loaded = real_open(run, task, *a, **k)
        if task == "seg":
            real_files = loaded.run_files

            def run_files(files, *fa, **fk):
                passes["n"] += 1
                return real_files(files, *fa, **fk)

            loaded.run_files = run_files
        return loaded

    inference.open_run = counting_open
    cached = ev.mask_cache
    uncached = contextlib.nullcontext
    results: dict[str, list[tuple[float, int, float]]] = {"with cache": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / args.run.name
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("eval-*"))
        settings = dict(run_dir=run, seg_run=args.seg_run, fusion="descriptors",
                        fuse_with=args.fuse_with, target_sensitivity=0.9,
                        n_bootstrap=args.bootstrap)
        start = time.perf_counter()  # warm-up, untimed: TensorFlow's start and first traces
        ev.evaluate(ev.EvalSettings(**settings))
        print(f"warm-up: {time.perf_counter() - start:.1f} s", flush=True)
        for round_ in range(args.rounds):
            order = ["without", "with cache"] if round_ % 2 == 0 else ["with cache", "without"]
            for name in order:
                ev.mask_cache = cached if name == "with cache" else uncached
                passes["n"] = 0
                start = time.perf_counter()
                result = ev.evaluate(ev.EvalSettings(**settings))
                seconds = time.perf_counter() - start
                auc = result.metrics["fusion"]["fused"]["auc"]
                results[name].append((seconds, passes["n"], auc))
                print(f"round {round_ + 1}, {name}: {seconds:.1f} s, {passes['n']} segmenter "
                      f"passes, fused AUC {auc:.4f}", flush=True)
    ev.mask_cache = cached
    aucs = {round(r[2], 6) for rows in results.values() for r in rows}
    if len(aucs) != 1:
        sys.exit(f"the fused AUC differs between the runs: {sorted(aucs)}")
    median = {name: statistics.median(r[0] for r in rows) for name, rows in results.items()}
    lines = [f"Command: `{command_line('eval_masks.py')}`", "",
             f"Run {shown(args.run)}, segmenter {shown(args.seg_run)}"
             + (f", second classifier {shown(args.fuse_with)}" if args.fuse_with else "")
             + f"; one untimed warm-up, then {args.rounds} rounds, alternating; fused AUC {aucs.pop():.4f} in every one.",
             "", "| masks | evaluate, median s | segmenter passes | vs without |",
             "|---|---:|---:|---:|"]
    for name in ("without", "with cache"):
        lines.append(f"| {name} | {median[name]:.1f} | {results[name][0][1]} | "
                     f"{median['without'] / median[name]:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record("EVAL_MASKS", text)


if __name__ == "__main__":
    main()
